//! Prometheus metrics: counters, per-destination and per-reason counts, latency histograms and
//! per-stage ingest timings, rendered as text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets for request-scale latencies (seconds).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for the ingest stages, which take microseconds (seconds).
const STAGE_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.1, 0.25, 0.5, 1.0,
];

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket latency histogram.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_buckets(BUCKETS)
    }
}

impl Histogram {
    fn with_buckets(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let n = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let l = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{l} {sum}\n{name}_count{l} {n}");
    }
}

/// The ingest stages timed per request.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// Body read, content-type and signature checks, JSON parse.
    Parse,
    /// Consent gate.
    Consent,
    /// Allowlist build, per-destination events and PHI detector.
    Sanitize,
    /// Waiting for the durable group commit.
    Commit,
}

const STAGES: [(Stage, &str); 4] = [
    (Stage::Parse, "parse"),
    (Stage::Consent, "consent"),
    (Stage::Sanitize, "sanitize"),
    (Stage::Commit, "commit"),
];

/// Counters of one destination.
#[derive(Debug, Default)]
pub struct DestinationMetrics {
    /// Outbox rows written for this destination.
    pub queued: Counter,
    /// Events acknowledged.
    pub delivered: Counter,
    /// Event deliveries scheduled for retry.
    pub retried: Counter,
    /// Events moved to the dead letter.
    pub dead_lettered: Counter,
    /// Events blocked by the PHI detector for this destination.
    pub blocked: Counter,
    /// Events the destination acknowledged but did not count (Meta `events_received`).
    pub not_counted: Counter,
    /// Time of one request.
    pub request_latency: Histogram,
    /// Time from accept to acknowledgement.
    pub end_to_end_latency: Histogram,
}

/// All relay metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Events committed to the outbox for at least one destination.
    pub accepted: Counter,
    destinations: Vec<(String, DestinationMetrics)>,
    fallback: DestinationMetrics,
    /// Requests refused with 4xx/5xx, by status.
    rejected: Mutex<BTreeMap<u16, u64>>,
    /// Events dropped, by reason.
    dropped: Mutex<BTreeMap<String, u64>>,
    /// Time from request arrival to the 202 (includes the durable commit).
    pub ingest_latency: Histogram,
    stages: [Histogram; 4],
    /// Duration of one outbox group commit (apply + COMMIT incl. fsync).
    pub commit_latency: Histogram,
    /// Commands per group commit.
    pub group_commands: AtomicU64,
    /// Group commits.
    pub group_commits: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(&[])
    }
}

impl Metrics {
    /// Metrics for the named destinations.
    pub fn new(destinations: &[&str]) -> Metrics {
        Metrics {
            accepted: Counter::default(),
            destinations: destinations
                .iter()
                .map(|d| (d.to_string(), DestinationMetrics::default()))
                .collect(),
            fallback: DestinationMetrics::default(),
            rejected: Mutex::default(),
            dropped: Mutex::default(),
            ingest_latency: Histogram::default(),
            stages: std::array::from_fn(|_| Histogram::with_buckets(STAGE_BUCKETS)),
            commit_latency: Histogram::default(),
            group_commands: AtomicU64::new(0),
            group_commits: AtomicU64::new(0),
        }
    }

    /// Counters of one destination.
    pub fn destination(&self, name: &str) -> &DestinationMetrics {
        self.destinations
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&self.fallback, |(_, m)| m)
    }

    /// Time spent in one ingest stage.
    pub fn stage(&self, stage: Stage, d: Duration) {
        self.stages[stage as usize].observe(d);
    }

    /// Count a dropped event.
    pub fn dropped(&self, reason: &str) {
        *self
            .dropped
            .lock()
            .expect("metrics lock")
            .entry(reason.to_string())
            .or_default() += 1;
    }

    /// Count a refused request.
    pub fn rejected(&self, status: u16) {
        *self
            .rejected
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
    }

    /// Prometheus text exposition; `depth` is the pending rows per destination.
    pub fn render(&self, depth: Option<&[(String, i64)]>) -> String {
        let mut out = String::with_capacity(8192);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "relay_events_accepted_total",
            "counter",
            "Events committed to the outbox for at least one destination.",
        );
        let _ = writeln!(out, "relay_events_accepted_total {}", self.accepted.get());
        type Pick = fn(&DestinationMetrics) -> &Counter;
        let per_destination: [(&str, &str, Pick); 6] = [
            (
                "relay_events_queued_total",
                "Outbox rows written, by destination.",
                |m| &m.queued,
            ),
            (
                "relay_events_delivered_total",
                "Events acknowledged, by destination.",
                |m| &m.delivered,
            ),
            (
                "relay_events_retried_total",
                "Event deliveries scheduled for retry, by destination.",
                |m| &m.retried,
            ),
            (
                "relay_events_dead_lettered_total",
                "Events moved to the dead letter, by destination.",
                |m| &m.dead_lettered,
            ),
            (
                "relay_events_blocked_total",
                "Events blocked by the PHI detector, by destination.",
                |m| &m.blocked,
            ),
            (
                "relay_events_not_counted_total",
                "Events acknowledged but not counted by the destination (events_received shortfall).",
                |m| &m.not_counted,
            ),
        ];
        for (name, help, pick) in per_destination {
            head(&mut out, name, "counter", help);
            for (d, m) in &self.destinations {
                let _ = writeln!(out, "{name}{{destination=\"{d}\"}} {}", pick(m).get());
            }
        }
        head(
            &mut out,
            "relay_events_dropped_total",
            "counter",
            "Events (or an event for one destination) not forwarded, by reason.",
        );
        for (reason, n) in self.dropped.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "relay_events_dropped_total{{reason=\"{reason}\"}} {n}");
        }
        head(
            &mut out,
            "relay_requests_rejected_total",
            "counter",
            "Requests refused, by HTTP status.",
        );
        for (status, n) in self.rejected.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "relay_requests_rejected_total{{status=\"{status}\"}} {n}"
            );
        }
        if let Some(depth) = depth {
            head(
                &mut out,
                "relay_outbox_depth",
                "gauge",
                "Pending events in the outbox, by destination.",
            );
            for (d, _) in &self.destinations {
                let n = depth.iter().find(|(x, _)| x == d).map_or(0, |(_, n)| *n);
                let _ = writeln!(out, "relay_outbox_depth{{destination=\"{d}\"}} {n}");
            }
        }
        head(
            &mut out,
            "relay_ingest_latency_seconds",
            "histogram",
            "Request arrival to durable acknowledgement.",
        );
        self.ingest_latency
            .render("relay_ingest_latency_seconds", "", &mut out);
        head(
            &mut out,
            "relay_stage_seconds",
            "histogram",
            "Time per ingest request in each stage (parse, consent, sanitize, commit).",
        );
        for (stage, label) in STAGES {
            self.stages[stage as usize].render(
                "relay_stage_seconds",
                &format!("stage=\"{label}\""),
                &mut out,
            );
        }
        head(
            &mut out,
            "relay_delivery_request_seconds",
            "histogram",
            "Duration of one request to a destination.",
        );
        for (d, m) in &self.destinations {
            m.request_latency.render(
                "relay_delivery_request_seconds",
                &format!("destination=\"{d}\""),
                &mut out,
            );
        }
        head(
            &mut out,
            "relay_accept_to_delivery_seconds",
            "histogram",
            "Accept to acknowledgement, by destination.",
        );
        for (d, m) in &self.destinations {
            m.end_to_end_latency.render(
                "relay_accept_to_delivery_seconds",
                &format!("destination=\"{d}\""),
                &mut out,
            );
        }
        head(
            &mut out,
            "relay_outbox_commit_seconds",
            "histogram",
            "Duration of one outbox group commit, fsync included.",
        );
        self.commit_latency
            .render("relay_outbox_commit_seconds", "", &mut out);
        for (name, help, v) in [
            (
                "relay_outbox_commits_total",
                "Outbox group commits.",
                &self.group_commits,
            ),
            (
                "relay_outbox_commands_total",
                "Commands applied by group commits (commands / commits = mean group size).",
                &self.group_commands,
            ),
        ] {
            head(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_reasons_stages_and_buckets() {
        let m = Metrics::new(&["tiktok", "meta"]);
        m.accepted.add(3);
        m.destination("meta").not_counted.add(2);
        m.dropped("no_consent");
        m.dropped("no_consent");
        m.ingest_latency.observe(Duration::from_millis(3));
        m.stage(Stage::Sanitize, Duration::from_micros(20));
        let t = m.render(Some(&[("meta".into(), 7)]));
        assert!(t.contains("relay_events_accepted_total 3"), "{t}");
        assert!(
            t.contains("relay_events_not_counted_total{destination=\"meta\"} 2"),
            "{t}"
        );
        assert!(t.contains("relay_events_dropped_total{reason=\"no_consent\"} 2"));
        assert!(t.contains("relay_outbox_depth{destination=\"meta\"} 7"));
        assert!(t.contains("relay_outbox_depth{destination=\"tiktok\"} 0"));
        assert!(t.contains("relay_ingest_latency_seconds_bucket{le=\"0.005\"} 1"));
        assert!(t.contains("relay_ingest_latency_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(
            t.contains("relay_stage_seconds_bucket{stage=\"sanitize\",le=\"0.000025\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("relay_stage_seconds_count{stage=\"parse\"} 0"),
            "{t}"
        );
    }
}
