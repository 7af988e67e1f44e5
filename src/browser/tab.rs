//! One browser tab that visits pages and records everything each page does.
//!
//! Order matters (each step was learned the hard way, see reference/chromium-offline.md):
//! the tab is its own window, sits on `about:blank` with every listener attached before it
//! navigates; iframes and workers are auto-attached paused, get Network enabled and the user
//! agent, then resume, so their first request is seen; dialogs and paused requests are answered
//! by a responder task that does not wait for the capture loop; every CDP call is bounded; a page
//! that never finishes is stopped with `Page.stopLoading`. How long a page is watched is decided
//! by the settle rules (`settle.rs`), not a sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::capture::{PageState, handle_event};
use super::cdp::{CdpError, Connection, EVENT_QUEUE, Event};
use super::cookies::{self, VisitCookies};
use super::guard::Verdict;
use super::interact::Plan;
use super::pool::Context;
use super::protocol::{self, Event as Ev, RequestData};
use super::settle::{Timers, Window};
use crate::model::{Page, Phase, SettleReason};

/// Short bound for calls made while collecting; a crashed renderer must not stall the tab long.
pub(super) const COLLECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for each collection loop of a page (frames, script bodies): a page whose main thread
/// stays busy cannot hold a tab for minutes through many bounded calls in a row.
pub(super) const COLLECT_BUDGET: Duration = Duration::from_secs(15);
/// How often the settle loop reads the page's pending timers.
const TIMER_POLL: Duration = Duration::from_millis(100);

/// How long to wait on a page.
#[derive(Debug, Clone, Copy)]
pub struct VisitTiming {
    /// Bound for navigation plus the load event.
    pub page_timeout: Duration,
    /// Nothing new may happen for this long after load...
    pub settle_quiet: Duration,
    /// ...but never wait longer than this after load.
    pub settle_max: Duration,
}

impl VisitTiming {
    fn window(&self) -> Window {
        Window {
            quiet: self.settle_quiet,
            max: self.settle_max,
        }
    }
}

/// What paused requests are judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GuardMode {
    /// Interception is off.
    Off = 0,
    /// The form probe: canaries, navigations and submissions to the site are held back.
    Probe = 1,
    /// A scripted journey: it navigates and submits on purpose; canaries are held back.
    Journey = 2,
}

/// What one visit produced, before the crawler judges scope and vendors.
#[derive(Debug, Default)]
pub struct Visit {
    pub page: Page,
    /// Links in the DOM after scripts ran (absolute URLs).
    pub links: Vec<String>,
    /// URLs the page reached within the document (history.pushState / replaceState).
    pub routes: Vec<String>,
    /// (link URL, link text) of the page's links: what the site calls the pages it links to.
    pub link_texts: Vec<(String, String)>,
    /// What the visit did to the cookie jar.
    pub cookies: VisitCookies,
    /// The tab is unfit for the next page (renderer crash, closed, detached): replace it.
    pub crashed: bool,
    /// The whole browser went away during the visit: restart it.
    pub browser_died: bool,
    /// The main document was not HTML (a download): nothing was rendered.
    pub not_html: bool,
    /// The page a submission let through by `--submit-forms` landed on, with its requests.
    pub landing: Option<Box<Visit>>,
    /// A PNG of the page as the visit left it (when the plan asks for screenshots).
    pub screenshot: Option<Vec<u8>>,
    /// The tab the form probe ran in, when it holds WebSocket frames queued during the probe:
    /// it must never be closed (that would release them); the scan parks it.
    pub parked: Option<Tab>,
}

/// How arriving at a page went ([`Tab::arrive`]).
pub(super) struct Arrival {
    /// Why the page could not be loaded (the visit records it).
    pub(super) error: Option<String>,
    /// Why watching ended.
    pub(super) reason: SettleReason,
    /// How long the page was watched after its load event.
    pub(super) settle_ms: u64,
}

/// A tab: one page target and the sessions of its children.
pub struct Tab {
    pub(super) ctx: Arc<Context>,
    pub(super) conn: Arc<Connection>,
    target_id: String,
    pub(super) session: String,
    events: mpsc::Receiver<Event>,
    /// What the responder judges paused requests by ([`GuardMode`] as u8).
    pub(super) guard_mode: Arc<AtomicU8>,
    /// WebSockets stay offline in this tab for good: a probe ran while a socket was open, and
    /// frames the page queued then must never be released.
    pub(super) sockets_offline: bool,
    /// Our isolated world's execution context per frame, for the current document.
    worlds: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// The throwaway browser context the tab lives in (the form probe's or a journey's,
    /// `sandbox.rs`), disposed of when the tab is closed. Only such tabs type anything.
    pub(super) browser_context: Option<String>,
    /// Counts this tab as open on its browser.
    _open: super::pool::OpenTab,
}

impl std::fmt::Debug for Tab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tab")
            .field("target_id", &self.target_id)
            .field("browser_context", &self.browser_context)
            .field("sockets_offline", &self.sockets_offline)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tab {
    /// Opens a new tab, its own window, on about:blank with every listener attached.
    pub(super) async fn open(ctx: Arc<Context>) -> Result<Tab, CdpError> {
        Tab::open_in(ctx, None).await
    }

    /// [`Tab::open`] in browser context `browser_context` (the default one when `None`); the
    /// tab disposes of that context when it is closed.
    pub(super) async fn open_in(
        ctx: Arc<Context>,
        browser_context: Option<String>,
    ) -> Result<Tab, CdpError> {
        let conn = ctx.conn.clone();
        let mut params = json!({"url": "about:blank", "newWindow": true});
        if let Some(id) = &browser_context {
            params["browserContextId"] = json!(id);
        }
        let created = conn.call("Target.createTarget", params, None).await?;
        let target_id = created["targetId"].as_str().unwrap_or_default().to_string();
        let attached = conn
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
                None,
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (raw_tx, raw_rx) = mpsc::channel(EVENT_QUEUE);
        conn.subscribe(&session, raw_tx);
        let guard_mode = Arc::new(AtomicU8::new(GuardMode::Off as u8));
        let events = spawn_responder(ctx.clone(), target_id.clone(), raw_rx, guard_mode.clone());
        let tab = Tab {
            ctx: ctx.clone(),
            conn,
            target_id,
            session,
            events,
            guard_mode,
            sockets_offline: false,
            worlds: Default::default(),
            browser_context,
            _open: super::pool::OpenTab::new(&ctx),
        };
        setup_session(&ctx, &tab.session, "page").await?;
        tab.wait_for_window().await;
        Ok(tab)
    }

    /// A new window reports `outerWidth` 0 until it is laid out; pages must never see that.
    async fn wait_for_window(&self) {
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let w = self.eval_main("outerWidth", COLLECT_TIMEOUT).await;
            if w.and_then(|v| v.as_f64()).is_some_and(|w| w > 0.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::debug!("the new window did not report its size");
    }

    /// The browser context key its probes count under: its own context's id, or "" (unknown:
    /// every shared worker counts as in it) for a tab of the default context.
    pub(super) fn probe_context(&self) -> &str {
        self.browser_context.as_deref().unwrap_or_default()
    }

    /// Whether this tab holds WebSocket frames queued during a probe: it must never be closed
    /// or reused for pages whose sockets matter; park it (see [`super::Pool::park`]).
    pub(super) fn holds_queued_frames(&self) -> bool {
        self.sockets_offline
    }

    /// The browser generation this tab belongs to.
    pub fn generation(&self) -> u64 {
        self.ctx.generation
    }

    /// Whether the browser connection is gone.
    pub fn browser_gone(&self) -> bool {
        self.conn.is_closed()
    }

    /// Whether its browser is being replaced: finish the page, then take a new tab.
    pub fn retiring(&self) -> bool {
        self.ctx.retiring.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the tab. A tab that holds WebSocket frames queued during a probe is left open
    /// (closing it would release them); the browser is killed at the end instead.
    pub async fn close(self) {
        self.conn.unsubscribe(&self.session);
        if self.sockets_offline {
            return;
        }
        let _ = self
            .conn
            .call_with_timeout(
                "Target.closeTarget",
                json!({"targetId": self.target_id}),
                None,
                Duration::from_secs(3),
            )
            .await;
        if let Some(id) = &self.browser_context {
            super::sandbox::dispose(&self.conn, id).await;
        }
    }

    /// Visits `url` and returns what happened. Never fails: problems are recorded on the page.
    pub async fn visit(&mut self, url: &str, timing: VisitTiming, plan: &Plan) -> Visit {
        let consented = plan.consent_given.load(Ordering::SeqCst);
        let mut st = self.fresh_state(if consented {
            Phase::Consent
        } else {
            Phase::Load
        });
        let jar_before = cookies::read_jar(&self.conn, self.browser_context.as_deref())
            .await
            .unwrap_or_default();
        let started = Instant::now();
        let Arrival {
            mut error,
            mut reason,
            mut settle_ms,
        } = self.arrive(&mut st, url, timing).await;
        let load_ms = started.elapsed().as_millis() as u64;

        let mut visit = Visit::default();
        let not_html = st
            .main_mime
            .as_deref()
            .is_some_and(|m| !m.contains("html") && !m.contains("xml"));
        // A download (non-HTML answer) aborts the navigation: that is not a page error.
        if not_html && error.as_deref().is_some_and(|e| e.contains("ERR_ABORTED")) {
            error = None;
        }
        // The picture is of the page as a visitor first sees it once it settled (consent
        // banner included), before the scanner clicks or types: after the probe the tab may
        // show only the error page of a submission it held back.
        if plan.screenshots && !st.crashed && !st.tab_broken && !not_html {
            visit.screenshot = self.picture().await;
        }
        if !st.crashed && error.is_none() && !not_html {
            self.collect_dom(&mut st, &mut visit).await;
            let t = Instant::now();
            let interaction = self.interact(&mut st, &mut visit, timing, plan).await;
            settle_ms += t.elapsed().as_millis() as u64;
            reason = reason.max(interaction);
        }
        self.finish(
            st,
            visit,
            &jar_before,
            super::collect::Ending {
                url: url.to_string(),
                error,
                load_ms,
                settle_ms,
                reason,
                not_html,
            },
        )
        .await
    }

    /// Navigates to `url`, waits (bounded) for its load event, then watches the page until the
    /// settle rules say it is done. A page that never finishes is stopped.
    pub(super) async fn arrive(
        &mut self,
        st: &mut PageState,
        url: &str,
        timing: VisitTiming,
    ) -> Arrival {
        let deadline = Instant::now() + timing.page_timeout;
        let mut error: Option<String> = None;
        let mut reason = SettleReason::Quiet;
        let mut settle_ms = 0;

        let nav = self.navigate(url, timing.page_timeout).await;
        match nav {
            Ok(v) => {
                st.main_frame = v["frameId"].as_str().map(str::to_string);
                if let Some(e) = v["errorText"].as_str().filter(|e| !e.is_empty()) {
                    error = Some(format!("navigation failed: {e}"));
                }
            }
            Err(CdpError::Timeout { .. }) => {
                error = Some(format!(
                    "no response within {}s; stopped loading",
                    timing.page_timeout.as_secs()
                ));
                reason = SettleReason::Timeout;
                self.stop_loading().await;
            }
            Err(e) => {
                // The tab itself failed (closed by the page, detached): replace it.
                error = Some(format!("navigation failed: {e}"));
                st.tab_broken = true;
            }
        }
        self.pump(st, Instant::now()).await;

        if error.is_none() {
            self.pump_until(st, deadline, |s| s.load_fired || s.crashed)
                .await;
            if !st.load_fired && !st.crashed {
                error = Some(format!(
                    "page did not finish loading within {}s; stopped loading",
                    timing.page_timeout.as_secs()
                ));
                reason = SettleReason::Timeout;
                self.stop_loading().await;
            }
        }
        if error.is_none() {
            let t = Instant::now();
            reason = self.settle(st, timing).await;
            settle_ms += t.elapsed().as_millis() as u64;
        }
        Arrival {
            error,
            reason,
            settle_ms,
        }
    }

    /// A PNG of what the tab shows (the first screen), bounded by `limit`.
    pub(super) async fn screenshot(&self, limit: Duration) -> Result<Vec<u8>, CdpError> {
        use base64::Engine as _;
        const METHOD: &str = "Page.captureScreenshot";
        let shot = self
            .conn
            .call_with_timeout(
                METHOD,
                json!({"format": "png", "captureBeyondViewport": false}),
                Some(&self.session),
                limit,
            )
            .await?;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(|e| CdpError::Protocol {
                method: METHOD.into(),
                message: format!("the screenshot is not base64: {e}"),
            })
    }

    /// [`Self::screenshot`] for a report: `None`, logged, when the page could not be captured.
    pub(super) async fn picture(&self) -> Option<Vec<u8>> {
        self.screenshot(COLLECT_TIMEOUT)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "no screenshot of this page"))
            .ok()
    }

    /// `Page.navigate` in this tab, bounded by `limit`.
    pub(super) async fn navigate(&self, url: &str, limit: Duration) -> Result<Value, CdpError> {
        self.conn
            .call_with_timeout(
                "Page.navigate",
                json!({"url": url}),
                Some(&self.session),
                limit,
            )
            .await
    }

    /// A clean record for a new page; anything still queued belongs to the previous one.
    pub(super) fn fresh_state(&mut self, phase: Phase) -> PageState {
        while self.events.try_recv().is_ok() {}
        self.lock_worlds_clear();
        PageState {
            phase,
            sockets_offline: self.sockets_offline,
            ..Default::default()
        }
    }

    /// Forgets our isolated worlds: the document they lived in is gone.
    pub(super) fn lock_worlds_clear(&self) {
        lock(&self.worlds).clear();
    }

    /// Leaves through about:blank so unload beacons are captured for this page. What was
    /// already answered is not counted as aborted.
    pub(super) async fn leave(&mut self, st: &mut PageState) {
        st.load_fired = false;
        st.leaving = true;
        let left = self.navigate("about:blank", COLLECT_TIMEOUT).await;
        if left.is_ok() {
            let until = Instant::now() + Duration::from_secs(2);
            self.pump_until(st, until, |s| s.load_fired || s.crashed)
                .await;
            let until = Instant::now() + Duration::from_millis(100);
            self.pump(st, until).await;
        } else {
            // A tab that cannot even go to about:blank (the page closed it, or its renderer
            // is stuck) must not be reused for the next page.
            st.tab_broken = true;
        }
        if self.guard_mode.swap(GuardMode::Off as u8, Ordering::SeqCst) != GuardMode::Off as u8 {
            self.ctx.probe_ended(self.probe_context()).await;
            // The probed page is gone: interception ends, and WebSockets come back online
            // unless frames were queued on a socket that was open during the probe.
            let _ = self
                .conn
                .call("Fetch.disable", json!({}), Some(&self.session))
                .await;
            if !self.sockets_offline && !self.socket_rules(false).await {
                self.sockets_offline = true; // still offline: treat it as for good
            }
        }
    }

    /// Navigates to `url` and waits for its load event (bounded); the page stays open.
    pub(super) async fn open_url(&mut self, url: &str, limit: Duration) -> bool {
        self.load(url, limit).await.is_some_and(|st| st.load_fired)
    }

    /// Navigates to `url` and records events until its load event or `limit`. `None` when the
    /// navigation itself failed.
    async fn load(&mut self, url: &str, limit: Duration) -> Option<PageState> {
        while self.events.try_recv().is_ok() {}
        lock(&self.worlds).clear();
        let nav = self.navigate(url, limit).await.ok()?;
        if nav["errorText"].as_str().is_some_and(|e| !e.is_empty()) {
            return None;
        }
        let mut st = PageState {
            main_frame: nav["frameId"].as_str().map(str::to_string),
            ..Default::default()
        };
        let until = Instant::now() + limit;
        self.pump_until(&mut st, until, |s| s.load_fired || s.crashed)
            .await;
        Some(st)
    }

    /// Evaluates `expression` in the page's main world (no `Runtime.enable` needed) and returns
    /// its value.
    pub(super) async fn eval_main(&self, expression: &str, timeout: Duration) -> Option<Value> {
        let res = self
            .conn
            .call_with_timeout(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
                Some(&self.session),
                timeout,
            )
            .await
            .ok()?;
        Some(res["result"]["value"].clone())
    }

    /// Loads `url` as a document and returns its status and body text (robots.txt, sitemaps).
    pub async fn fetch_text(&mut self, url: &str) -> Option<(u16, String)> {
        let st = self.load(url, Duration::from_secs(15)).await?;
        let status = st.main_status?;
        let key = st
            .order
            .iter()
            .rev()
            .find(|k| {
                k.0 == self.session
                    && st
                        .reqs
                        .get(*k)
                        .is_some_and(|r| r.request.resource_type == "Document")
            })?
            .clone();
        let bytes = self.response_body(&self.session, &key.1).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Some((status, text))
    }

    /// Watches the page until the settle rules say it is done (after load, a click or a
    /// submit). Returns why watching ended.
    pub(super) async fn settle(&mut self, st: &mut PageState, timing: VisitTiming) -> SettleReason {
        let now = Instant::now();
        st.settle.begin(timing.window(), now);
        let arm = self.ctx.disguise.arm_expression();
        self.eval_main(&arm, COLLECT_TIMEOUT).await;
        let query = self.ctx.disguise.pending_timers_expression();
        let mut next_poll = now;
        loop {
            if st.crashed {
                return SettleReason::Max;
            }
            let now = Instant::now();
            if now >= next_poll {
                if let Some(v) = self.eval_main(&query, Duration::from_secs(1)).await {
                    let now = Instant::now();
                    st.settle.timers(timers_from(&v, now), now);
                }
                next_poll = Instant::now() + TIMER_POLL;
            }
            if let Some(reason) = st.settle.verdict(Instant::now()) {
                tracing::debug!(
                    reason = reason.as_str(),
                    ms = st.settle.elapsed(Instant::now()).as_millis() as u64,
                    "settled"
                );
                return reason;
            }
            let step = (Instant::now() + Duration::from_millis(50)).min(next_poll);
            self.pump(st, step).await;
        }
    }

    async fn stop_loading(&self) {
        let _ = self
            .conn
            .call_with_timeout(
                "Page.stopLoading",
                json!({}),
                Some(&self.session),
                COLLECT_TIMEOUT,
            )
            .await;
    }

    /// Handles queued events until `until`.
    pub(super) async fn pump(&mut self, st: &mut PageState, until: Instant) {
        loop {
            let now = Instant::now();
            let wait = until.saturating_duration_since(now);
            match tokio::time::timeout(wait, self.events.recv()).await {
                Ok(Some(ev)) => handle_event(&self.conn, &self.session, st, ev),
                Ok(None) => {
                    // The browser went away: treat as a crash of this tab.
                    st.crashed = true;
                    return;
                }
                Err(_) => return,
            }
            if Instant::now() >= until {
                // Drain what is already queued without waiting.
                while let Ok(ev) = self.events.try_recv() {
                    handle_event(&self.conn, &self.session, st, ev);
                }
                return;
            }
        }
    }

    pub(super) async fn pump_until(
        &mut self,
        st: &mut PageState,
        until: Instant,
        done: impl Fn(&PageState) -> bool,
    ) {
        while !done(st) && Instant::now() < until {
            let step = (Instant::now() + Duration::from_millis(50)).min(until);
            self.pump(st, step).await;
        }
    }

    /// Evaluates `expression` in our isolated world of `frame_id` (page scripts cannot see or
    /// tamper with it; the DOM is shared) and returns its value. The world is created once per
    /// document, so what one call keeps in its globals the next one finds.
    pub(super) async fn eval_in_frame(&self, frame_id: &str, expression: &str) -> Option<Value> {
        for attempt in 0..2 {
            let cached = lock(&self.worlds).get(frame_id).copied();
            let ctx = match cached {
                Some(ctx) if attempt == 0 => ctx,
                _ => {
                    let world = self
                        .conn
                        .call_with_timeout(
                            "Page.createIsolatedWorld",
                            json!({"frameId": frame_id, "worldName": "pixelwatch"}),
                            Some(&self.session),
                            COLLECT_TIMEOUT,
                        )
                        .await
                        .ok()?;
                    let ctx = world["executionContextId"].as_i64()?;
                    lock(&self.worlds).insert(frame_id.to_string(), ctx);
                    ctx
                }
            };
            let res = self
                .conn
                .call_with_timeout(
                    "Runtime.evaluate",
                    json!({"expression": expression, "contextId": ctx, "returnByValue": true,
                           "userGesture": true}),
                    Some(&self.session),
                    COLLECT_TIMEOUT,
                )
                .await;
            match res {
                Ok(v) => return Some(v["result"]["value"].clone()),
                // The document changed and took the world with it: make a new one once.
                Err(CdpError::Protocol { .. }) if cached.is_some() && attempt == 0 => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// (frame id, url) for every frame of a session's tree, main frame first.
    pub(super) async fn frame_tree(&self, session: &str) -> Vec<(String, String)> {
        let Ok(tree) = self
            .conn
            .call_with_timeout(
                "Page.getFrameTree",
                json!({}),
                Some(session),
                COLLECT_TIMEOUT,
            )
            .await
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut stack = vec![&tree["frameTree"]];
        while let Some(node) = stack.pop() {
            if let Some(id) = node["frame"]["id"].as_str() {
                let url = node["frame"]["url"].as_str().unwrap_or_default();
                out.push((id.to_string(), url.to_string()));
            }
            if let Some(children) = node["childFrames"].as_array() {
                stack.extend(children.iter().rev());
            }
        }
        out
    }

    /// The body of a finished response, decoded from base64 when CDP sent it so.
    pub(super) async fn response_body(&self, session: &str, request_id: &str) -> Option<Vec<u8>> {
        let body = self
            .conn
            .call_with_timeout(
                "Network.getResponseBody",
                json!({"requestId": request_id}),
                Some(session),
                COLLECT_TIMEOUT,
            )
            .await
            .ok()?;
        let text = body["body"].as_str().unwrap_or_default();
        if body["base64Encoded"].as_bool() == Some(true) {
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        } else {
            Some(text.as_bytes().to_vec())
        }
    }
}

/// Due times from the hook's answer (ms until due, negative when overdue).
fn timers_from(v: &Value, now: Instant) -> Timers {
    let due = v["due"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .map(|ms| {
            if ms >= 0.0 {
                now + Duration::from_millis(ms as u64)
            } else {
                now.checked_sub(Duration::from_millis((-ms) as u64))
                    .unwrap_or(now)
            }
        })
        .collect();
    Timers {
        due,
        ran: v["ran"].as_u64().unwrap_or(0),
    }
}

/// Enables capture on one session: the page, an out-of-process iframe, or a worker. Never
/// `Runtime.enable` (a page can tell): the hook is read with `Runtime.evaluate`.
async fn setup_session(ctx: &Context, session: &str, kind: &str) -> Result<(), CdpError> {
    let conn = &ctx.conn;
    let s = Some(session);
    let network = json!({
        "maxPostDataSize": 1 << 20,
        "maxTotalBufferSize": 100 << 20,
        "maxResourceBufferSize": 20 << 20,
    });
    conn.call("Network.enable", network, s).await?;
    conn.call(
        "Network.setCacheDisabled",
        json!({"cacheDisabled": true}),
        s,
    )
    .await?;
    if let Some(headers) = ctx.disguise.extra_headers() {
        conn.call("Network.setExtraHTTPHeaders", headers, s).await?;
    }
    // Workers too: an override without client hints empties navigator.userAgentData.brands.
    if let Err(e) = conn
        .call(
            "Network.setUserAgentOverride",
            ctx.disguise.user_agent_override(),
            s,
        )
        .await
    {
        tracing::debug!(%kind, error = %e, "user agent override not applied");
    }
    if kind == "page" || kind == "iframe" {
        conn.call("Page.enable", json!({}), s).await?;
        conn.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": ctx.disguise.hook_source()}),
            s,
        )
        .await?;
        conn.call("DOMStorage.enable", json!({}), s).await?;
        if kind == "page" {
            conn.call("Inspector.enable", json!({}), s).await?;
            // Every tab behaves as the focused one (focus/visibility-gated pixels fire).
            conn.call(
                "Emulation.setFocusEmulationEnabled",
                json!({"enabled": true}),
                s,
            )
            .await?;
        }
        conn.call(
            "Target.setAutoAttach",
            json!({"autoAttach": true, "waitForDebuggerOnStart": true, "flatten": true}),
            s,
        )
        .await?;
    }
    Ok(())
}

/// Answers what cannot wait for the capture loop (dialogs, new child targets, paused requests)
/// and forwards every event to the tab.
fn spawn_responder(
    ctx: Arc<Context>,
    target_id: String,
    mut raw: mpsc::Receiver<Event>,
    guard_mode: Arc<AtomicU8>,
) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(async move {
        while let Some(mut ev) = raw.recv().await {
            let wanted = matches!(
                ev.method.as_str(),
                "Page.javascriptDialogOpening" | "Target.attachedToTarget" | "Fetch.requestPaused"
            );
            let parsed = if wanted {
                protocol::parse(&ev.method, &ev.params).ok().flatten()
            } else {
                None
            };
            match parsed {
                Some(Ev::DialogOpening) => {
                    let conn = ctx.conn.clone();
                    let session = ev.session_id.clone();
                    tokio::spawn(async move {
                        tracing::debug!("auto-dismissing a JavaScript dialog");
                        let _ = conn
                            .call(
                                "Page.handleJavaScriptDialog",
                                json!({"accept": true}),
                                session.as_deref(),
                            )
                            .await;
                    });
                }
                Some(Ev::AttachedToTarget(e)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        let kind = e.target_info.kind;
                        let child = e.session_id;
                        let resume = || {
                            ctx.conn.call(
                                "Runtime.runIfWaitingForDebugger",
                                json!({}),
                                Some(&child),
                            )
                        };
                        // A service worker also waits for the browser session, which intercepts
                        // its requests from the start (`pool.rs`); set up here while paused, a new
                        // one never answers (seen in the probe's browser context: its
                        // registration stalled), so it runs first.
                        if kind == "service_worker" {
                            let _ = resume().await;
                        }
                        if let Err(err) = setup_session(&ctx, &child, &kind).await {
                            tracing::debug!(%kind, error = %err, "child target setup incomplete");
                        }
                        if kind != "service_worker" {
                            let _ = resume().await;
                        }
                    });
                }
                Some(Ev::RequestPaused(e)) => {
                    let mode = guard_mode.load(Ordering::SeqCst);
                    let verdict = judge_paused(&target_id, &ctx.guard, mode, &e);
                    let (method, params) = match verdict {
                        Verdict::Block(why) => {
                            tracing::debug!(why, "the form probe held a request back");
                            ev.params["pixelwatchBlocked"] = json!(why);
                            (
                                "Fetch.failRequest",
                                json!({"requestId": e.request_id, "errorReason": "BlockedByClient"}),
                            )
                        }
                        Verdict::Continue if mode != GuardMode::Off as u8 => (
                            "Fetch.continueRequest",
                            json!({"requestId": e.request_id,
                                   "headers": pinned_headers(&ctx.guard, &e.request)}),
                        ),
                        Verdict::Continue => {
                            ("Fetch.continueRequest", json!({"requestId": e.request_id}))
                        }
                    };
                    let conn = ctx.conn.clone();
                    let session = ev.session_id.clone();
                    let request_id = e.request_id.clone();
                    tokio::spawn(async move {
                        let s = session.as_deref();
                        if conn.call(method, params, s).await.is_err()
                            && method.ends_with("continueRequest")
                        {
                            // Headers the protocol would not take back: the request is failed,
                            // never let go with cookies nobody judged, nor left paused.
                            let fail =
                                json!({"requestId": request_id, "errorReason": "BlockedByClient"});
                            let _ = conn.call("Fetch.failRequest", fail, s).await;
                        }
                    });
                }
                _ => {}
            }
            match tx.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => ctx.conn.count_dropped(),
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    });
    rx
}

/// The headers a request let go by the guard leaves with: exactly the ones judged, `Cookie`
/// included. Otherwise the network stack adds the jar's cookies as they are when the request
/// leaves, and the page may have written a typed value into one since the pause (seen in a
/// test: `fetch('/race'); document.cookie = 'lead=' + typed` sent the typed value). Since
/// Chromium 145 a `Cookie` header given here replaces the jar's. A request to the scanned site
/// that had no cookies is given an empty `Cookie` header (it leaves with `cookie:` and nothing
/// else): the page can write the site's cookies, not a tracker's, so requests to other hosts
/// keep their headers as they were.
fn pinned_headers(guard: &super::guard::Guard, req: &RequestData) -> Vec<Value> {
    let mut list: Vec<Value> = req
        .headers
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name, value.as_str()?)))
        // Repeated headers come joined by newlines; each goes back as an entry of its own.
        .flat_map(|(name, value)| {
            value
                .split('\n')
                .map(move |v| json!({"name": name, "value": v}))
        })
        .collect();
    let has_cookie = list.iter().any(|h| {
        h["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case("cookie"))
    });
    if !has_cookie && guard.is_site(&super::capture::host_of(&req.url)) {
        list.push(json!({"name": "Cookie", "value": ""}));
    }
    list
}

/// The guard's verdict on a request paused in a tab judged by `mode` (`Fetch` shows the
/// `Cookie` header the request will carry, measured in Chromium 156: a cookie the page wrote a
/// typed value into is judged with the other headers).
fn judge_paused(
    target_id: &str,
    guard: &super::guard::Guard,
    mode: u8,
    e: &super::protocol::RequestPaused,
) -> Verdict {
    if mode == GuardMode::Probe as u8 {
        guard.judge_probe(e, Some(target_id))
    } else if mode == GuardMode::Journey as u8 {
        guard.judge_worker(e)
    } else {
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::canary::Needles;

    fn request(url: &str, headers: Value) -> RequestData {
        RequestData {
            url: url.into(),
            method: "GET".into(),
            headers,
            ..Default::default()
        }
    }

    #[test]
    fn a_let_go_request_leaves_with_the_cookies_it_was_judged_with() {
        let guard = super::super::guard::Guard::new("clinic.test", Needles::default(), None);
        let pinned = |url: &str, headers: Value| -> Vec<(String, String)> {
            pinned_headers(&guard, &request(url, headers))
                .iter()
                .map(|h| {
                    (
                        h["name"].as_str().unwrap().into(),
                        h["value"].as_str().unwrap().into(),
                    )
                })
                .collect()
        };
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(
            pinned(
                "https://www.clinic.test/ping",
                json!({"Accept": "*/*", "Cookie": "visitor=v1"})
            ),
            [pair("Accept", "*/*"), pair("Cookie", "visitor=v1")]
        );
        // No cookies when judged: none may be added on the way out (the site's own hosts).
        assert_eq!(
            pinned("https://book.clinic.test/x", json!({"Accept": "*/*"})),
            [pair("Accept", "*/*"), pair("Cookie", "")]
        );
        // A tracker's request keeps its headers as they were (the page cannot write its cookies).
        assert_eq!(
            pinned("https://analytics.tiktok.com/p", json!({"Accept": "*/*"})),
            [pair("Accept", "*/*")]
        );
        // Repeated headers, joined by a newline in the pause, go back one entry each.
        assert_eq!(
            pinned("https://analytics.tiktok.com/p", json!({"X-A": "1\n2"})),
            [pair("X-A", "1"), pair("X-A", "2")]
        );
    }
}
