//! Prometheus metrics: counters, per-reason drop counts and latency histograms, rendered as text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug)]
pub struct Histogram {
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {n}");
    }
}

/// All relay metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events committed to the outbox.
    pub accepted: AtomicU64,
    /// Events acknowledged by TikTok.
    pub delivered: AtomicU64,
    /// Event deliveries scheduled for retry.
    pub retried: AtomicU64,
    /// Events moved to the dead letter.
    pub dead_lettered: AtomicU64,
    /// Events blocked by the PHI detector.
    pub blocked: AtomicU64,
    /// Requests refused with 4xx/5xx, by status.
    rejected: Mutex<BTreeMap<u16, u64>>,
    /// Events dropped, by reason.
    dropped: Mutex<BTreeMap<String, u64>>,
    /// Time from request arrival to the 202 (includes the durable commit).
    pub ingest_latency: Histogram,
    /// Time of one request to TikTok.
    pub delivery_latency: Histogram,
    /// Time from accept to acknowledgement.
    pub end_to_end_latency: Histogram,
    /// Duration of one outbox group commit (apply + COMMIT incl. fsync).
    pub commit_latency: Histogram,
    /// Commands per group commit.
    pub group_commands: AtomicU64,
    /// Group commits.
    pub group_commits: AtomicU64,
}

impl Metrics {
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

    /// Prometheus text exposition.
    pub fn render(&self, outbox_depth: Option<i64>) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "relay_events_accepted_total",
            "Events committed to the outbox.",
            &self.accepted,
        );
        counter(
            &mut out,
            "relay_events_delivered_total",
            "Events acknowledged by TikTok.",
            &self.delivered,
        );
        counter(
            &mut out,
            "relay_events_retried_total",
            "Event deliveries scheduled for retry.",
            &self.retried,
        );
        counter(
            &mut out,
            "relay_events_dead_lettered_total",
            "Events moved to the dead letter.",
            &self.dead_lettered,
        );
        counter(
            &mut out,
            "relay_events_blocked_total",
            "Events blocked by the PHI detector.",
            &self.blocked,
        );
        let _ = writeln!(
            out,
            "# HELP relay_events_dropped_total Events not forwarded, by reason.\n# TYPE relay_events_dropped_total counter"
        );
        for (reason, n) in self.dropped.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "relay_events_dropped_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP relay_requests_rejected_total Requests refused, by HTTP status.\n# TYPE relay_requests_rejected_total counter"
        );
        for (status, n) in self.rejected.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "relay_requests_rejected_total{{status=\"{status}\"}} {n}"
            );
        }
        if let Some(d) = outbox_depth {
            let _ = writeln!(
                out,
                "# HELP relay_outbox_depth Pending events in the outbox.\n# TYPE relay_outbox_depth gauge\nrelay_outbox_depth {d}"
            );
        }
        self.ingest_latency.render(
            "relay_ingest_latency_seconds",
            "Request arrival to durable acknowledgement.",
            &mut out,
        );
        self.delivery_latency.render(
            "relay_delivery_request_seconds",
            "Duration of one request to TikTok.",
            &mut out,
        );
        self.commit_latency.render(
            "relay_outbox_commit_seconds",
            "Duration of one outbox group commit, fsync included.",
            &mut out,
        );
        counter(
            &mut out,
            "relay_outbox_commits_total",
            "Outbox group commits.",
            &self.group_commits,
        );
        counter(
            &mut out,
            "relay_outbox_commands_total",
            "Commands applied by group commits (commands / commits = mean group size).",
            &self.group_commands,
        );
        self.end_to_end_latency.render(
            "relay_accept_to_delivery_seconds",
            "Accept to TikTok acknowledgement.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_reasons_and_buckets() {
        let m = Metrics::default();
        m.accepted.fetch_add(3, Ordering::Relaxed);
        m.dropped("no_consent");
        m.dropped("no_consent");
        m.ingest_latency.observe(Duration::from_millis(3));
        let t = m.render(Some(7));
        assert!(t.contains("relay_events_accepted_total 3"), "{t}");
        assert!(t.contains("relay_events_dropped_total{reason=\"no_consent\"} 2"));
        assert!(t.contains("relay_outbox_depth 7"));
        assert!(t.contains("relay_ingest_latency_seconds_bucket{le=\"0.005\"} 1"));
        assert!(t.contains("relay_ingest_latency_seconds_bucket{le=\"0.0025\"} 0"));
    }
}
