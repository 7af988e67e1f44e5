//! When a page is done: explicit rules instead of "no request in flight for 500 ms".
//!
//! A page is settled when nothing that can still complete is in flight, no short timer it
//! scheduled is still pending, and nothing *new* happened for the quiet window — or when the
//! window's cap is reached. The rules, each one learned from real clinic pages:
//!
//! - A request holds the page until it is done, but only while it can still complete:
//!   WebSockets and EventSource never hold it; a response still streaming [`STREAM_BOUND`] after
//!   its headers, or a request with no response after [`PENDING_BOUND`] (a long poll), stops
//!   holding it. Beacons, pings and CORS preflights are done at their response: keepalive pairs
//!   may never report `loadingFinished` to the page.
//! - Short timers hold the page: a main-world timer of at most [`super::stealth::TIMER_BOUND_MS`]
//!   scheduled during load or the first seconds after it (or after an interaction) is awaited
//!   until it ran (see `stealth.rs` for how timers are observed without the page seeing it).
//!   Repeating timers do not hold it.
//! - Only what is new restarts the quiet window: a request to a host and path already seen on
//!   this page (a heartbeat) does not.
//! - Bounded by the cap (`--settle-max`). Each page records how long it took and why it ended.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::model::SettleReason;

/// A response still streaming this long after its headers no longer holds the page.
pub const STREAM_BOUND: Duration = Duration::from_millis(1000);
/// A request with no response this long after it started (a long poll) no longer holds the page.
pub const PENDING_BOUND: Duration = Duration::from_millis(2000);
/// A timer this late past its due time was cleared or is stuck: it no longer holds the page.
const OVERDUE_GRACE: Duration = Duration::from_millis(750);

/// How a request may hold the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until it finishes (bounded by [`STREAM_BOUND`] and [`PENDING_BOUND`]).
    UntilDone,
    /// Until its response arrives (beacons, pings, preflights).
    UntilResponse,
    /// Never (WebSocket, EventSource).
    Never,
}

impl Hold {
    /// The hold of a request by its CDP resource type (and method for preflights).
    pub fn of(resource_type: &str, method: &str) -> Hold {
        match resource_type {
            "WebSocket" | "EventSource" => Hold::Never,
            "Ping" | "Preflight" | "CSPViolationReport" => Hold::UntilResponse,
            _ if method == "OPTIONS" => Hold::UntilResponse,
            _ => Hold::UntilDone,
        }
    }
}

#[derive(Debug)]
struct Tracked {
    hold: Hold,
    started: Instant,
    response: Option<Instant>,
    done: bool,
}

/// What the page's timer hook reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timers {
    /// When each pending short timer is due.
    pub due: Vec<Instant>,
    /// How many tracked timers have run so far.
    pub ran: u64,
}

/// Quiet window and cap of one settle.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub quiet: Duration,
    pub max: Duration,
}

/// Tracks what holds one page and decides when it is settled.
#[derive(Debug, Default)]
pub struct Settle {
    requests: HashMap<(String, String), Tracked>,
    /// (host, path) of every request seen on this page: repeats are not news.
    seen: HashSet<(String, String)>,
    timers: Timers,
    last_news: Option<Instant>,
    window: Option<(Instant, Window)>,
}

impl Settle {
    /// A request started. `url` decides whether it is news.
    pub fn request(&mut self, key: (String, String), url: &str, hold: Hold, now: Instant) {
        if self.seen.insert(host_and_path(url)) {
            self.last_news = Some(now);
        }
        self.requests.insert(
            key,
            Tracked {
                hold,
                started: now,
                response: None,
                done: false,
            },
        );
    }

    /// Response headers arrived.
    pub fn response(&mut self, key: &(String, String), now: Instant) {
        if let Some(t) = self.requests.get_mut(key) {
            t.response.get_or_insert(now);
        }
    }

    /// Finished or failed.
    pub fn done(&mut self, key: &(String, String)) {
        if let Some(t) = self.requests.get_mut(key) {
            t.done = true;
        }
    }

    /// The latest timer report. A timer that ran is news: what it started (a tag it injected)
    /// may not have reached us yet, so the quiet window starts again.
    pub fn timers(&mut self, timers: Timers, now: Instant) {
        if timers.ran > self.timers.ran {
            self.last_news = Some(now);
        }
        self.timers = timers;
    }

    /// Starts a settle window (after load, after a click, after a submit).
    pub fn begin(&mut self, window: Window, now: Instant) {
        self.window = Some((now, window));
        self.last_news = Some(now);
    }

    /// Something the page did that deserves a fresh quiet window (a click, a submit).
    pub fn news(&mut self, now: Instant) {
        self.last_news = Some(now);
    }

    /// Requests that can still complete.
    pub fn holding_requests(&self, now: Instant) -> usize {
        self.requests
            .values()
            .filter(|t| !t.done && holds(t, now))
            .count()
    }

    fn holding_timers(&self, now: Instant) -> usize {
        let cap = self.window.map(|(start, w)| start + w.max);
        self.timers
            .due
            .iter()
            .filter(|&&due| now < due + OVERDUE_GRACE && cap.is_none_or(|c| due <= c))
            .count()
    }

    /// `Some(reason)` once the page is settled.
    pub fn verdict(&self, now: Instant) -> Option<SettleReason> {
        let (start, w) = self.window?;
        if now >= start + w.max {
            return Some(SettleReason::Max);
        }
        if self.holding_requests(now) > 0 || self.holding_timers(now) > 0 {
            return None;
        }
        let news = self.last_news.unwrap_or(start);
        (now.duration_since(news) >= w.quiet).then_some(SettleReason::Quiet)
    }

    /// Time settling so far.
    pub fn elapsed(&self, now: Instant) -> Duration {
        self.window
            .map(|(start, _)| now.duration_since(start))
            .unwrap_or_default()
    }
}

fn holds(t: &Tracked, now: Instant) -> bool {
    match (t.hold, t.response) {
        (Hold::Never, _) => false,
        (Hold::UntilResponse, Some(_)) => false,
        (Hold::UntilDone, Some(at)) => now.duration_since(at) < STREAM_BOUND,
        (_, None) => now.duration_since(t.started) < PENDING_BOUND,
    }
}

fn host_and_path(url: &str) -> (String, String) {
    match url::Url::parse(url) {
        Ok(u) => (
            u.host_str().unwrap_or_default().to_string(),
            u.path().to_string(),
        ),
        Err(_) => (url.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window {
        quiet: Duration::from_millis(500),
        max: Duration::from_secs(5),
    };

    fn key(id: &str) -> (String, String) {
        ("s".into(), id.into())
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn quiet_after_the_last_new_request_finished() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        s.begin(W, t0);
        s.request(key("1"), "https://a.test/x.js", Hold::UntilDone, ms(t0, 10));
        assert_eq!(s.verdict(ms(t0, 600)), None, "in flight");
        s.response(&key("1"), ms(t0, 100));
        s.done(&key("1"));
        assert_eq!(s.verdict(ms(t0, 400)), None, "quiet window not over");
        assert_eq!(s.verdict(ms(t0, 520)), Some(SettleReason::Quiet));
    }

    #[test]
    fn a_keepalive_pair_is_done_at_its_response() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        s.begin(W, t0);
        s.request(
            key("p"),
            "https://analytics.tiktok.com/api/v2/pixel",
            Hold::of("Preflight", "OPTIONS"),
            t0,
        );
        s.request(
            key("b"),
            "https://www.facebook.com/tr",
            Hold::of("Ping", "POST"),
            t0,
        );
        s.response(&key("p"), ms(t0, 50));
        s.response(&key("b"), ms(t0, 60));
        // Neither ever reports loadingFinished.
        assert_eq!(s.verdict(ms(t0, 600)), Some(SettleReason::Quiet));
    }

    #[test]
    fn sockets_streams_and_long_polls_never_hold_past_their_bound() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        s.begin(W, t0);
        s.request(
            key("ws"),
            "wss://chat.test/socket",
            Hold::of("WebSocket", "GET"),
            t0,
        );
        s.request(
            key("es"),
            "https://a.test/events",
            Hold::of("EventSource", "GET"),
            t0,
        );
        s.request(key("lp"), "https://a.test/poll", Hold::UntilDone, t0);
        s.request(key("st"), "https://a.test/stream", Hold::UntilDone, t0);
        s.response(&key("st"), ms(t0, 100));
        assert_eq!(
            s.verdict(ms(t0, 1000)),
            None,
            "long poll still within its bound"
        );
        assert_eq!(s.verdict(ms(t0, 2001)), Some(SettleReason::Quiet));
    }

    #[test]
    fn heartbeats_do_not_restart_the_quiet_window() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        s.begin(W, t0);
        for (i, at) in [0u64, 300, 600, 900].iter().enumerate() {
            let k = key(&format!("hb{i}"));
            s.request(
                k.clone(),
                &format!("https://a.test/beat?n={i}"),
                Hold::UntilDone,
                ms(t0, *at),
            );
            s.response(&k, ms(t0, at + 20));
            s.done(&k);
        }
        // Last news was the first beat at 0 ms.
        assert_eq!(s.verdict(ms(t0, 950)), Some(SettleReason::Quiet));
    }

    #[test]
    fn short_timers_hold_until_they_ran_but_not_past_the_cap() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        s.begin(W, t0);
        s.timers(
            Timers {
                due: vec![ms(t0, 2500)],
                ran: 0,
            },
            t0,
        );
        assert_eq!(s.verdict(ms(t0, 2000)), None);
        // The timer ran and injected a tag, whose request we have not seen yet: still news.
        s.timers(
            Timers {
                due: vec![],
                ran: 1,
            },
            ms(t0, 2505),
        );
        assert_eq!(
            s.verdict(ms(t0, 2600)),
            None,
            "a timer that ran restarts the window"
        );
        s.request(
            key("t"),
            "https://late.test/tag.js",
            Hold::UntilDone,
            ms(t0, 2510),
        );
        s.response(&key("t"), ms(t0, 2530));
        s.done(&key("t"));
        assert_eq!(s.verdict(ms(t0, 2800)), None);
        assert_eq!(s.verdict(ms(t0, 3011)), Some(SettleReason::Quiet));
        // A timer beyond the cap is not awaited; a cleared one stops holding once overdue.
        let mut s = Settle::default();
        s.begin(W, t0);
        s.timers(
            Timers {
                due: vec![ms(t0, 9000), ms(t0, 100)],
                ran: 0,
            },
            t0,
        );
        assert_eq!(s.verdict(ms(t0, 600)), None);
        assert_eq!(s.verdict(ms(t0, 900)), Some(SettleReason::Quiet));
    }

    #[test]
    fn the_cap_ends_everything() {
        let t0 = Instant::now();
        let mut s = Settle::default();
        s.begin(W, t0);
        s.timers(
            Timers {
                due: vec![ms(t0, 4900)],
                ran: 0,
            },
            t0,
        );
        assert_eq!(s.verdict(ms(t0, 5000)), Some(SettleReason::Max));
    }
}
