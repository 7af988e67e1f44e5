//! Dispatcher: one per destination. Claims due outbox rows in batches, sends them, and records
//! the classified outcome; timing (backoff, attempts, dead letter) is the outbox's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::destinations::{Client, Outcome};
use super::metrics::{DestinationMetrics, Metrics};
use super::outbox::{Claimed, Outbox, Record, RetryPolicy};

/// Delivery loop for one destination.
pub struct Dispatcher {
    /// Destination name (outbox rows, metrics, audit).
    pub destination: Arc<str>,
    /// Outbox handle.
    pub outbox: Outbox,
    /// Destination client.
    pub client: Client,
    /// Retry timing.
    pub policy: RetryPolicy,
    /// Events per request.
    pub batch_size: usize,
    /// Idle poll interval.
    pub poll: Duration,
    /// Wait after a wake-up so a batch can fill.
    pub linger: Duration,
    /// Woken by ingest after an accept.
    pub wake: Arc<Notify>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Dispatcher {
    fn m(&self) -> &DestinationMetrics {
        self.metrics.destination(&self.destination)
    }

    /// Run until `shutdown` turns true; an in-flight batch is finished and recorded first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let batch = match self
                .outbox
                .claim(&self.destination, self.batch_size, now_ms())
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(destination = %self.destination, error = %e, "cannot read the outbox");
                    if matches!(e, super::error::StoreError::WriterGone) {
                        break;
                    }
                    tokio::time::sleep(self.poll).await;
                    continue;
                }
            };
            if batch.rows.is_empty() {
                let woken = tokio::select! {
                    _ = self.wake.notified() => true,
                    _ = tokio::time::sleep(self.poll) => false,
                    _ = shutdown.changed() => false,
                };
                if woken && !self.linger.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(self.linger) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                continue;
            }
            let full = batch.rows.len() >= self.batch_size;
            let rows = self.drop_stale(batch.rows).await;
            if !rows.is_empty() {
                self.deliver(batch.test_event_code.as_deref(), &rows).await;
            }
            if !full && !self.linger.is_zero() {
                // Under steady load, let the next batch fill instead of claiming a few rows at
                // a time: fewer requests and fewer outbox writes per event.
                tokio::select! {
                    _ = tokio::time::sleep(self.linger) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::debug!(destination = %self.destination, "dispatcher stopped");
    }

    /// Rows the destination would refuse for their age (Meta: older than 7 days, which fails
    /// the whole request) are dead-lettered without being sent.
    async fn drop_stale(&self, rows: Vec<Claimed>) -> Vec<Claimed> {
        let Some(max_age) = self.client.max_event_age_secs() else {
            return rows;
        };
        let oldest = now_ms() / 1000 - max_age;
        let (stale, fresh): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|r| r.event_time.is_some_and(|t| t < oldest));
        if !stale.is_empty() {
            let outcome = Outcome::reject("event_time_too_old".into());
            self.record(&stale, &outcome).await;
        }
        fresh
    }

    /// Send rows; a parameter error on a multi-event batch is bisected so one bad event does
    /// not dead-letter the others (at most ~2·log2(n) extra requests per bad event).
    async fn deliver(&self, test_event_code: Option<&str>, rows: &[Claimed]) {
        let mut stack: Vec<&[Claimed]> = vec![rows];
        while let Some(part) = stack.pop() {
            let payloads: Vec<&str> = part.iter().map(|r| r.payload.as_str()).collect();
            let started = Instant::now();
            let outcome = self.client.send(test_event_code, &payloads).await;
            self.m().request_latency.observe(started.elapsed());
            if let Outcome::Reject {
                credentials: false,
                reason,
            } = &outcome
                && part.len() > 1
            {
                tracing::warn!(destination = %self.destination, events = part.len(), %reason,
                    "batch rejected; splitting it to isolate the bad event");
                let (a, b) = part.split_at(part.len() / 2);
                stack.push(b);
                stack.push(a);
                continue;
            }
            let stop = matches!(
                outcome,
                Outcome::Reject {
                    credentials: true,
                    ..
                }
            );
            self.record(part, &outcome).await;
            if stop {
                // Bad credentials fail every part the same way: dead-letter the rest too.
                for rest in stack.drain(..) {
                    self.record(rest, &outcome).await;
                }
            }
        }
    }

    async fn record(&self, part: &[Claimed], outcome: &Outcome) {
        let n = part.len() as u64;
        let now = now_ms();
        let dest = &*self.destination;
        let m = self.m();
        let record = match outcome {
            Outcome::Delivered {
                request_id,
                received,
            } => {
                let shortfall = received.filter(|r| *r < n).map(|r| (r, n));
                if let Some((r, sent)) = shortfall {
                    tracing::warn!(
                        destination = dest,
                        received = r,
                        sent,
                        "destination accepted the batch but counted fewer events"
                    );
                } else {
                    tracing::debug!(destination = dest, events = n, %request_id, "batch delivered");
                }
                Record::Delivered {
                    request_id: request_id.clone(),
                    shortfall,
                }
            }
            Outcome::Retry { reason } => {
                tracing::warn!(destination = dest, events = n, %reason, "delivery failed; will retry with backoff");
                Record::Retry {
                    reason: reason.clone(),
                    policy: self.policy,
                }
            }
            Outcome::Reject {
                reason,
                credentials,
            } => {
                if *credentials {
                    tracing::error!(destination = dest, events = n, %reason,
                        "the destination refused the access token or permission; events dead-lettered");
                } else {
                    tracing::warn!(destination = dest, events = n, %reason, "event rejected; dead-lettered");
                }
                Record::Dead {
                    reason: reason.clone(),
                }
            }
        };
        let shortfall = match &record {
            Record::Delivered { shortfall, .. } => *shortfall,
            _ => None,
        };
        match self
            .outbox
            .record(&self.destination, part, record, now)
            .await
        {
            Ok(died) => match outcome {
                Outcome::Delivered { .. } => {
                    m.delivered.add(n);
                    if let Some((r, sent)) = shortfall {
                        m.not_counted.add(sent - r);
                    }
                    for row in part {
                        let ms = (now - row.created_ms).max(0) as u64;
                        m.end_to_end_latency.observe(Duration::from_millis(ms));
                    }
                }
                Outcome::Retry { .. } => {
                    m.retried.add(n - died);
                    m.dead_lettered.add(died);
                }
                Outcome::Reject { .. } => m.dead_lettered.add(died),
            },
            Err(e) => {
                // The rows stay pending and will be sent again with the same event ids.
                tracing::error!(destination = dest, error = %e, "cannot record the delivery outcome");
                tokio::time::sleep(self.poll).await;
            }
        }
    }
}
