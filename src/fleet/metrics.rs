//! What a worker exposes on `/metrics`: the queue (depth, oldest due job's age, running), scans
//! by outcome, pages scanned (a counter, and the last minute's pages per minute) and alert sends.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Registry;
use crate::store::jobs::QueueStats;

type Labels = Vec<(String, String)>;

/// The worker's metrics; clones share the same values.
#[derive(Clone, Default)]
pub struct WorkerMetrics {
    queue_depth: Gauge,
    oldest_due_age: Gauge<f64, AtomicU64>,
    jobs_running: Gauge,
    scans: Family<Labels, Counter>,
    pages: Counter,
    pages_per_minute: Gauge<f64, AtomicU64>,
    alert_sends: Family<Labels, Counter>,
    db_round_trips: Counter,
    round_trips_seen: std::sync::Arc<AtomicU64>,
    recent_pages: std::sync::Arc<Mutex<VecDeque<Instant>>>,
}

impl WorkerMetrics {
    /// The metrics, registered in a new registry.
    pub fn registered() -> (WorkerMetrics, Registry) {
        let m = WorkerMetrics::default();
        let mut r = Registry::default();
        r.register(
            "pixelwatch_queue_depth",
            "Queued scans that are due and wait for a worker (the whole fleet)",
            m.queue_depth.clone(),
        );
        r.register(
            "pixelwatch_queue_oldest_due_age_seconds",
            "How long ago the oldest waiting scan was due (0 when none waits)",
            m.oldest_due_age.clone(),
        );
        r.register(
            "pixelwatch_jobs_running",
            "Scans running now (the whole fleet)",
            m.jobs_running.clone(),
        );
        r.register(
            "pixelwatch_scans",
            "Scans this worker ended, by outcome (ok, unscannable, retry, failed, lease_lost, released)",
            m.scans.clone(),
        );
        r.register(
            "pixelwatch_pages",
            "Pages this worker visited",
            m.pages.clone(),
        );
        r.register(
            "pixelwatch_pages_per_minute",
            "Pages this worker visited in the last minute",
            m.pages_per_minute.clone(),
        );
        r.register(
            "pixelwatch_alert_sends",
            "Alert deliveries by channel and result (sent, failed)",
            m.alert_sends.clone(),
        );
        r.register(
            "pixelwatch_db_round_trips",
            "Statements this worker sent to PostgreSQL (claims, lease renewals, storing scans, polling)",
            m.db_round_trips.clone(),
        );
        (m, r)
    }

    pub fn set_queue(&self, q: &QueueStats) {
        self.queue_depth.set(q.ready);
        self.oldest_due_age.set(q.oldest_due_age_secs);
        self.jobs_running.set(q.running);
    }

    pub fn scan_ended(&self, outcome: &str) {
        self.scans
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    pub fn page_visited(&self) {
        self.pages.inc();
        let mut recent = self.recent_pages.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_back(Instant::now());
    }

    /// Recomputes pages per minute over the last 60 seconds.
    pub fn tick(&self) {
        let mut recent = self.recent_pages.lock().unwrap_or_else(|p| p.into_inner());
        while recent
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(60))
        {
            recent.pop_front();
        }
        self.pages_per_minute.set(recent.len() as f64);
        let now = crate::store::db::round_trips();
        let before = self
            .round_trips_seen
            .swap(now, std::sync::atomic::Ordering::Relaxed);
        self.db_round_trips.inc_by(now.saturating_sub(before));
    }

    pub fn alert_sent(&self, channel: &str, ok: bool) {
        let result = if ok { "sent" } else { "failed" };
        self.alert_sends
            .get_or_create(&vec![
                ("channel".into(), channel.into()),
                ("result".into(), result.into()),
            ])
            .inc();
    }
}

impl crate::scan::Progress for WorkerMetrics {
    fn page_finished(&self, _page: &crate::model::Page, _d: usize, _q: usize, _e: usize) {
        self.page_visited();
    }
}
