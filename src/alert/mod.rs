//! Alerts: what changed on a site (drift), a site that keeps failing, and a test message, sent by
//! email (SMTP) and/or a JSON webhook.
//!
//! Invariants:
//! - An alert is written to the `alerts` table (one row per channel, status `pending`) before the
//!   first attempt, in the same transaction as the decision to send it ([`history`]), and marked
//!   `sent` only after the channel acknowledged it. Whoever sends a row claims it first, so two
//!   processes never send the same row. A send that fails every bounded attempt of a run is
//!   marked `failed` and re-sent on the next run: never lost silently, always logged.
//! - The same drift is alerted once: the fingerprint of its added items (and of the baseline it
//!   was measured against) is kept per site; a scan with the same fingerprint sends nothing, a
//!   changed drift or a newly approved baseline does. A scan without drift clears it.
//! - A failing site alerts once after N consecutive failures, not on each failure.
//! - Whether to retry is decided by the channel ([`SendError`]); timing is decided here.

mod email;
pub mod history;
pub mod judge;
mod message;
mod webhook;

use std::time::Duration;

use sha2::{Digest, Sha256};

pub use email::Email;
pub use webhook::Webhook;

use crate::config::{Config, RetryConfig};
use crate::diff::{Baseline, Drift};
use crate::model::{ScanReport, Severity};
use crate::report::untrusted::{TEXT_MAX, cut, evidence, plain};
use crate::store::{Store, StoreError};
use history::Decision;

/// Errors setting up a channel (bad settings, unreadable password).
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("email via {server}: {message}")]
    Email { server: String, message: String },
    #[error("webhook {url}: {message}")]
    Webhook { url: String, message: String },
}

/// One failed attempt, classified by the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Temporary (4xx reply, timeout, connection refused, HTTP 429/5xx): try again.
    Retry(String),
    /// Permanent (5xx SMTP reply, HTTP 4xx): another attempt now would fail the same way.
    Reject(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retry(m) => write!(f, "temporary failure: {m}"),
            SendError::Reject(m) => write!(f, "rejected: {m}"),
        }
    }
}

/// One line of the alert history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub site: String,
    pub kind: String,
    pub channel: String,
    /// "pending", "sending" (claimed by a sender), "sent", "failed" or "abandoned".
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub subject: String,
}

/// A message ready to send on any channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// "drift", "site_down" or "test".
    pub kind: String,
    pub site: String,
    pub scan_id: Option<i64>,
    pub severity: Severity,
    pub fingerprint: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Structured details for the webhook (merged into its JSON body).
    pub payload: serde_json::Value,
}

/// The fingerprint of a drift: its added identities and the baseline they were measured against.
pub fn drift_fingerprint(drift: &Drift, baseline: Option<&Baseline>) -> String {
    let mut h = Sha256::new();
    match baseline {
        Some(b) => h.update(format!("{}|{:?}\n", b.approved_at, b.scan_id)),
        None => h.update("no baseline\n"),
    }
    for i in &drift.added {
        h.update(format!("{}\t{}\n", i.category, i.key));
    }
    hex::encode(h.finalize())
}

impl Alert {
    /// The alert for a scan's drift, or `None` when nothing appeared (removals alone are not
    /// alerted). Without a baseline, pass the drift against an empty one.
    pub fn drift(drift: &Drift, report: &ScanReport, baseline: Option<&Baseline>) -> Option<Alert> {
        if drift.added.is_empty() {
            return None;
        }
        let new = message::new_findings(drift, report);
        let severity = message::worst(&new);
        let (subject, text, html) = message::drift(drift, report, baseline, &new, severity);
        // Structured details, bounded like the text: at most N items per kind, excerpts only.
        let findings: Vec<serde_json::Value> = new
            .iter()
            .flat_map(|n| n.findings.iter().take(5))
            .take(50)
            .map(|f| {
                serde_json::json!({
                    "kind": f.kind, "severity": f.severity.as_str(), "vendor": f.vendor,
                    "page": plain(&cut(&f.page, TEXT_MAX)),
                    "request_url": f.request_url.as_deref().map(|u| plain(&cut(u, TEXT_MAX)).into_owned()),
                    "evidence": plain(&evidence(&f.evidence, f.matched.as_deref())),
                    "rule": f.rule,
                })
            })
            .collect();
        let mut added = Vec::new();
        let mut omitted = serde_json::Map::new();
        for (category, items) in crate::diff::by_category(&drift.added) {
            for i in items.iter().take(message::MAX_ITEMS_PER_KIND) {
                added.push(serde_json::json!({
                    "category": i.category,
                    "key": plain(&cut(&i.key, TEXT_MAX)),
                    "pages": i.pages.iter().take(5).map(|p| plain(&cut(p, TEXT_MAX)).into_owned()).collect::<Vec<_>>(),
                    "pages_total": i.pages.len(),
                }));
            }
            if items.len() > message::MAX_ITEMS_PER_KIND {
                omitted.insert(
                    category.to_string(),
                    serde_json::json!(items.len() - message::MAX_ITEMS_PER_KIND),
                );
            }
        }
        Some(Alert {
            kind: "drift".into(),
            site: drift.site.clone(),
            scan_id: report.id,
            severity,
            fingerprint: drift_fingerprint(drift, baseline),
            subject,
            text,
            html,
            payload: serde_json::json!({
                "added": added,
                "added_total": drift.added.len(),
                "added_omitted": omitted,
                "removed_count": drift.removed.len(),
                "new_findings": findings,
                "baseline_scan": drift.baseline_scan,
            }),
        })
    }

    /// "The site could not be scanned `failures` times in a row."
    pub fn site_down(site: &str, failures: u32, error: &str) -> Alert {
        let (subject, text, html) = message::site_down(site, failures, error);
        Alert {
            kind: "site_down".into(),
            site: site.to_string(),
            scan_id: None,
            severity: Severity::High,
            fingerprint: format!("site_down {failures}"),
            subject,
            text,
            html,
            payload: serde_json::json!({ "failures": failures, "error": plain(&cut(error, TEXT_MAX)) }),
        }
    }

    /// A test message.
    pub fn test() -> Alert {
        let (subject, text, html) = message::test(&crate::scan::now_rfc3339());
        Alert {
            kind: "test".into(),
            site: "-".into(),
            scan_id: None,
            severity: Severity::Info,
            fingerprint: "test".into(),
            subject,
            text,
            html,
            payload: serde_json::json!({}),
        }
    }
}

/// A destination.
pub enum Channel {
    Email(Box<Email>),
    Webhook(Webhook),
}

impl Channel {
    /// "email" or "webhook" (as stored in the `alerts` table).
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Email(_) => "email",
            Channel::Webhook(_) => "webhook",
        }
    }

    async fn send(&self, alert: &Alert) -> Result<(), SendError> {
        match self {
            Channel::Email(e) => e.send(alert).await,
            Channel::Webhook(w) => w.send(alert).await,
        }
    }
}

/// How one channel's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub channel: &'static str,
    pub attempts: u32,
    /// `None` when delivered, else the last error.
    pub error: Option<String>,
}

/// What happened to a scan's drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftAlert {
    /// Nothing appeared since the baseline.
    NothingNew,
    /// The same drift was already alerted.
    AlreadyAlerted,
    /// Sent (or recorded as failed, to be re-sent): one outcome per channel.
    Sent(Vec<Outcome>),
}

/// The configured channels and the retry policy.
pub struct Alerter {
    channels: Vec<Channel>,
    retry: RetryConfig,
    /// One re-send pass at a time, so two passes never send the same failed alert twice.
    resending: tokio::sync::Mutex<()>,
}

impl Alerter {
    /// Channels from the config (none when it names neither email nor webhook).
    pub fn from_config(c: &Config) -> Result<Alerter, AlertError> {
        let mut channels = Vec::new();
        if let Some(e) = &c.email {
            channels.push(Channel::Email(Box::new(Email::new(e)?)));
        }
        if let Some(w) = &c.webhook {
            channels.push(Channel::Webhook(Webhook::new(w)?));
        }
        Ok(Alerter {
            channels,
            retry: c.retry.clone(),
            resending: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether no channel is configured.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Wait before attempt `n + 1` (n >= 1): doubling from `backoff_ms`, capped, +-20% jitter.
    fn backoff(&self, n: u32) -> Duration {
        let base = self
            .retry
            .backoff_ms
            .saturating_mul(1u64 << (n - 1).min(20))
            .min(self.retry.max_backoff_ms);
        Duration::from_millis((base as f64 * rand::random_range(0.8..1.2)) as u64)
    }

    /// Sends on one channel with bounded retries; every failed attempt is logged.
    async fn send_with_retry(&self, ch: &Channel, alert: &Alert) -> Outcome {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match ch.send(alert).await {
                Ok(()) => {
                    tracing::info!(channel = ch.name(), site = %alert.site, kind = %alert.kind, attempts, "alert sent");
                    return Outcome {
                        channel: ch.name(),
                        attempts,
                        error: None,
                    };
                }
                Err(e) => e,
            };
            let last = attempts >= self.retry.attempts || matches!(err, SendError::Reject(_));
            tracing::warn!(channel = ch.name(), site = %alert.site, kind = %alert.kind, attempt = attempts,
                of = self.retry.attempts, error = %err, "alert not delivered{}", if last { "" } else { "; retrying" });
            if last {
                return Outcome {
                    channel: ch.name(),
                    attempts,
                    error: Some(err.to_string()),
                };
            }
            tokio::time::sleep(self.backoff(attempts)).await;
        }
    }

    /// Sends on every channel now, without recording (for `pixelwatch alert test`).
    pub async fn send_all(&self, alert: &Alert) -> Vec<Outcome> {
        let mut out = Vec::new();
        for ch in &self.channels {
            out.push(self.send_with_retry(ch, alert).await);
        }
        out
    }

    /// The configured channels' names, as alert rows record them.
    pub fn channel_names(&self) -> Vec<&'static str> {
        self.channels.iter().map(Channel::name).collect()
    }

    /// Delivers recorded alert rows: each is claimed first (a row another process holds, or one
    /// already sent, is skipped), sent with retries, and its outcome recorded.
    pub async fn deliver(&self, store: &Store, ids: &[i64]) -> Result<Vec<Outcome>, StoreError> {
        let mut out = Vec::new();
        for &id in ids {
            let Some((channel, alert)) = store.claim_alert(id).await? else {
                continue;
            };
            let Some(ch) = self.channels.iter().find(|c| c.name() == channel) else {
                tracing::warn!(alert_id = id, channel = %channel, "an alert's channel is no longer configured; dropping it");
                store
                    .abandon_alert(id, "channel no longer configured")
                    .await?;
                continue;
            };
            let o = self.send_with_retry(ch, &alert).await;
            store
                .finish_alert(id, o.attempts, o.error.as_deref())
                .await?;
            if let Some(e) = &o.error {
                tracing::error!(channel = ch.name(), site = %alert.site, alert_id = id, error = %e,
                    "alert recorded as failed; it is re-sent on the next run");
            }
            out.push(o);
        }
        Ok(out)
    }

    /// Re-sends alerts an earlier run recorded but did not deliver (of `site`, or of every site).
    pub async fn resend_failed(
        &self,
        store: &Store,
        site: Option<&str>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let _one_pass = self.resending.lock().await;
        let ids = store.alerts_to_send(site).await?;
        if !ids.is_empty() {
            tracing::info!(alerts = ids.len(), "re-sending undelivered alerts");
        }
        self.deliver(store, &ids).await
    }

    /// Alerts a scan's drift unless nothing appeared or the same drift was already alerted.
    pub async fn on_drift(
        &self,
        store: &Store,
        drift: &Drift,
        report: &ScanReport,
        baseline: Option<&Baseline>,
    ) -> Result<DriftAlert, StoreError> {
        let alert = Alert::drift(drift, report, baseline);
        let mut tx = store.db().begin().await?;
        let decision =
            history::record_drift(&mut tx, &drift.site, alert.as_ref(), &self.channel_names())
                .await?;
        tx.commit().await?;
        self.after(store, decision).await
    }

    /// Delivers what a recorded decision asks for.
    pub async fn after(&self, store: &Store, decision: Decision) -> Result<DriftAlert, StoreError> {
        Ok(match decision {
            Decision::NothingNew => DriftAlert::NothingNew,
            Decision::AlreadyAlerted => {
                tracing::debug!("drift already alerted");
                DriftAlert::AlreadyAlerted
            }
            Decision::Recorded(ids) => DriftAlert::Sent(self.deliver(store, &ids).await?),
        })
    }

    /// Counts a failed scan; alerts once when the run of failures reaches `threshold`.
    pub async fn on_scan_failure(
        &self,
        store: &Store,
        site: &str,
        error: &str,
        threshold: u32,
    ) -> Result<Option<Vec<Outcome>>, StoreError> {
        let mut tx = store.db().begin().await?;
        let ids =
            history::record_failure(&mut tx, site, error, threshold, &self.channel_names()).await?;
        tx.commit().await?;
        match ids {
            None => Ok(None),
            Some(ids) => Ok(Some(self.deliver(store, &ids).await?)),
        }
    }
}
