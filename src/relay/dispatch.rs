//! Dispatcher: claim due outbox rows in batches, send them, and record the classified outcome.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::metrics::Metrics;
use super::outbox::{Claimed, Outbox, RetryPolicy};
use super::tiktok::{Outcome, TikTokClient};

/// Delivery loop for one destination.
pub struct Dispatcher {
    /// Outbox handle.
    pub outbox: Outbox,
    /// Destination client.
    pub client: TikTokClient,
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
    /// Run until `shutdown` turns true; an in-flight batch is finished and recorded first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let batch = match self.outbox.claim(self.batch_size, now_ms()).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
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
            self.deliver(batch.test_event_code.as_deref(), &batch.rows)
                .await;
        }
        tracing::debug!("dispatcher stopped");
    }

    /// Send rows; a parameter error on a multi-event batch is bisected so one bad event does
    /// not dead-letter the others (at most ~2·log2(n) extra requests per bad event).
    async fn deliver(&self, test_event_code: Option<&str>, rows: &[Claimed]) {
        let mut stack: Vec<&[Claimed]> = vec![rows];
        while let Some(part) = stack.pop() {
            let n = part.len() as u64;
            let payloads: Vec<&str> = part.iter().map(|r| r.payload.as_str()).collect();
            let started = Instant::now();
            let outcome = self.client.send(test_event_code, &payloads).await;
            self.metrics.delivery_latency.observe(started.elapsed());
            if let Outcome::Reject {
                credentials: false,
                reason,
            } = &outcome
                && part.len() > 1
            {
                tracing::warn!(events = n, %reason, "TikTok rejected a batch; splitting it to isolate the bad event");
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
        let recorded = match outcome {
            Outcome::Delivered { request_id } => {
                tracing::debug!(events = n, %request_id, "batch delivered");
                let r = self.outbox.delivered(part, request_id, now).await;
                if r.is_ok() {
                    self.metrics.delivered.fetch_add(n, Ordering::Relaxed);
                    for row in part {
                        let ms = (now - row.created_ms).max(0) as u64;
                        self.metrics
                            .end_to_end_latency
                            .observe(Duration::from_millis(ms));
                    }
                }
                r
            }
            Outcome::Retry { reason } => {
                tracing::warn!(events = n, %reason, "delivery failed; will retry with backoff");
                let r = self.outbox.retry(part, reason, self.policy, now).await;
                if let Ok(died) = r {
                    self.metrics.retried.fetch_add(n - died, Ordering::Relaxed);
                    self.metrics
                        .dead_lettered
                        .fetch_add(died, Ordering::Relaxed);
                }
                r.map(|_| ())
            }
            Outcome::Reject {
                reason,
                credentials,
            } => {
                if *credentials {
                    tracing::error!(events = n, %reason,
                        "TikTok refused the access token or pixel permission; events dead-lettered");
                } else {
                    tracing::warn!(events = n, %reason, "TikTok rejected the event; dead-lettered");
                }
                let r = self.outbox.dead(part, reason, now).await;
                if r.is_ok() {
                    self.metrics.dead_lettered.fetch_add(n, Ordering::Relaxed);
                }
                r
            }
        };
        if let Err(e) = recorded {
            // The rows stay pending and will be sent again with the same event ids.
            tracing::error!(error = %e, "cannot record the delivery outcome");
            tokio::time::sleep(self.poll).await;
        }
    }
}
