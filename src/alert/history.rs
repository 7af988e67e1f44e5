//! Alert history in the store: every alert per channel (`alerts`), and per site the drift last
//! alerted and the run of failed scans (`alert_state`).
//!
//! Invariants:
//! - The decision to alert is recorded in the caller's transaction (with the scan it judges):
//!   one row per channel whose claim key (`dedupe`: kind, fingerprint and episode) is unique per
//!   site and channel, so a drift is recorded once however many processes judge it.
//! - A row is delivered by whoever claims it (`pending`/`failed`, or `sending` whose holder let
//!   its claim lapse) and only then; `sent` only after the channel acknowledged it.

use super::{Alert, AlertRow};
use crate::model::Severity;
use crate::store::db::{Row, Tx, params};
use crate::store::{Store, StoreError};

/// How long a sender holds a claimed alert before another process may take it over (it died).
pub const CLAIM_HOLD_MS: i64 = 10 * 60 * 1000;

/// What was recorded for a scan's drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing appeared since the baseline (any earlier drift is cleared).
    NothingNew,
    /// The same drift was already alerted.
    AlreadyAlerted,
    /// Recorded for delivery: one alert row per channel.
    Recorded(Vec<i64>),
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn insert(
    tx: &mut Tx,
    alert: &Alert,
    channel: &str,
    dedupe: &str,
) -> Result<Option<i64>, StoreError> {
    let row = tx
        .query_opt(
            "INSERT INTO alerts (site, kind, channel, fingerprint, scan_id, severity, subject,
                text_body, html_body, payload, created_at, status, dedupe)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12)
             ON CONFLICT (site, channel, dedupe) DO NOTHING RETURNING id",
            params![
                &alert.site,
                &alert.kind,
                channel,
                &alert.fingerprint,
                alert.scan_id,
                alert.severity.as_str(),
                &alert.subject,
                &alert.text,
                &alert.html,
                alert.payload.to_string(),
                crate::scan::now_rfc3339(),
                dedupe
            ],
        )
        .await?;
    row.map(|r| r.get(0)).transpose()
}

/// Records the drift alert of a scan of `site` (`None`: nothing appeared) for `channels`.
pub async fn record_drift(
    tx: &mut Tx,
    site: &str,
    alert: Option<&Alert>,
    channels: &[&str],
) -> Result<Decision, StoreError> {
    let state = tx
        .query_opt(
            "SELECT drift_fingerprint, drift_episode FROM alert_state WHERE site = $1",
            params![site],
        )
        .await?;
    let (last, episode): (Option<String>, i64) = match &state {
        Some(r) => (r.get(0)?, r.get(1)?),
        None => (None, 0),
    };
    let Some(alert) = alert else {
        if last.is_some() {
            tx.execute(
                "UPDATE alert_state SET drift_fingerprint = NULL,
                    drift_episode = drift_episode + 1 WHERE site = $1",
                params![site],
            )
            .await?;
        }
        return Ok(Decision::NothingNew);
    };
    if last.as_deref() == Some(alert.fingerprint.as_str()) {
        return Ok(Decision::AlreadyAlerted);
    }
    tx.execute(
        "INSERT INTO alert_state (site, drift_fingerprint) VALUES ($1, $2)
         ON CONFLICT (site) DO UPDATE SET drift_fingerprint = excluded.drift_fingerprint",
        params![site, &alert.fingerprint],
    )
    .await?;
    let dedupe = format!("drift:{}:{episode}", alert.fingerprint);
    let mut ids = Vec::new();
    for ch in channels {
        ids.extend(insert(tx, alert, ch, &dedupe).await?);
    }
    if ids.is_empty() && !channels.is_empty() {
        return Ok(Decision::AlreadyAlerted);
    }
    Ok(Decision::Recorded(ids))
}

/// Counts one more failed scan of `site`; when the run reaches `threshold`, records one
/// `site_down` alert per channel and returns their ids.
pub async fn record_failure(
    tx: &mut Tx,
    site: &str,
    error: &str,
    threshold: u32,
    channels: &[&str],
) -> Result<Option<Vec<i64>>, StoreError> {
    // The count only grows until a scan succeeds, so it equals the threshold once per outage.
    let failures: u32 = tx
        .query_opt(
            "INSERT INTO alert_state (site, consecutive_failures) VALUES ($1, 1)
             ON CONFLICT (site) DO UPDATE
                SET consecutive_failures = alert_state.consecutive_failures + 1
             RETURNING consecutive_failures",
            params![site],
        )
        .await?
        .ok_or_else(|| StoreError::Decode("upsert returned no row".into()))?
        .get(0)?;
    if failures != threshold {
        return Ok(None);
    }
    let outage: i64 = tx
        .query_opt(
            "UPDATE alert_state SET outages = outages + 1 WHERE site = $1 RETURNING outages",
            params![site],
        )
        .await?
        .ok_or_else(|| StoreError::Decode("update returned no row".into()))?
        .get(0)?;
    let alert = Alert::site_down(site, threshold, error);
    let dedupe = format!("site_down:{outage}");
    let mut ids = Vec::new();
    for ch in channels {
        ids.extend(insert(tx, &alert, ch, &dedupe).await?);
    }
    Ok(Some(ids))
}

/// A scan of `site` succeeded: the run of failures ends.
pub async fn record_success(tx: &mut Tx, site: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE alert_state SET consecutive_failures = 0 WHERE site = $1",
        params![site],
    )
    .await?;
    Ok(())
}

fn alert_row(r: &Row, at: usize) -> Result<Alert, StoreError> {
    let severity: String = r.get(at + 3)?;
    let payload: String = r.get(at + 8)?;
    Ok(Alert {
        kind: r.get(at)?,
        site: r.get(at + 1)?,
        scan_id: r.get(at + 2)?,
        severity: serde_json::from_value(serde_json::Value::String(severity))
            .unwrap_or(Severity::High),
        fingerprint: r.get(at + 4)?,
        subject: r.get(at + 5)?,
        text: r.get(at + 6)?,
        html: r.get(at + 7)?,
        payload: serde_json::from_str(&payload).unwrap_or_default(),
    })
}

impl Store {
    /// Claims alert `id` for delivery: its channel and message, or `None` when it is sent or
    /// another process holds it.
    pub async fn claim_alert(&self, id: i64) -> Result<Option<(String, Alert)>, StoreError> {
        let now = now_ms();
        let row = self
            .db()
            .query_opt(
                "UPDATE alerts SET status = 'sending', claimed_until = $2
                 WHERE id = $1 AND (status IN ('pending', 'failed')
                    OR (status = 'sending' AND claimed_until < $3))
                 RETURNING channel, kind, site, scan_id, severity, fingerprint, subject,
                    text_body, html_body, payload",
                params![id, now + CLAIM_HOLD_MS, now],
            )
            .await?;
        row.map(|r| Ok((r.get(0)?, alert_row(&r, 1)?))).transpose()
    }

    /// Records the outcome of a delivery: `sent` without an error, else `failed`.
    pub async fn finish_alert(
        &self,
        id: i64,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db()
            .execute(
                "UPDATE alerts SET attempts = attempts + $2, last_error = $3, claimed_until = NULL,
                    status = CASE WHEN CAST($3 AS TEXT) IS NULL THEN 'sent' ELSE 'failed' END,
                    sent_at = CASE WHEN CAST($3 AS TEXT) IS NULL THEN $4 ELSE NULL END
                 WHERE id = $1",
                params![id, attempts, error, crate::scan::now_rfc3339()],
            )
            .await?;
        Ok(())
    }

    /// Gives up on an alert that can no longer be sent (its channel was removed).
    pub async fn abandon_alert(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.db()
            .execute(
                "UPDATE alerts SET status = 'abandoned', last_error = $2, claimed_until = NULL
                 WHERE id = $1",
                params![id, reason],
            )
            .await?;
        Ok(())
    }

    /// Alerts to (re-)send, oldest first: `failed` ones, `pending` ones nobody claimed, and
    /// `sending` ones whose sender let its claim lapse (it was killed).
    pub async fn alerts_to_send(&self, site: Option<&str>) -> Result<Vec<i64>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT id FROM alerts
                 WHERE (status IN ('failed', 'pending')
                    OR (status = 'sending' AND claimed_until < $2))
                   AND (CAST($1 AS TEXT) IS NULL OR site = $1)
                 ORDER BY id",
                params![site, now_ms()],
            )
            .await?;
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// The fingerprint of the drift last alerted for `site`.
    pub async fn drift_fingerprint(&self, site: &str) -> Result<Option<String>, StoreError> {
        match self
            .db()
            .query_opt(
                "SELECT drift_fingerprint FROM alert_state WHERE site = $1",
                params![site],
            )
            .await?
        {
            Some(r) => r.get(0),
            None => Ok(None),
        }
    }

    /// Recent alerts, newest first.
    pub async fn list_alerts(&self, limit: usize) -> Result<Vec<AlertRow>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT id, site, kind, channel, status, attempts, last_error, created_at, sent_at,
                    subject
                 FROM alerts ORDER BY id DESC LIMIT $1",
                params![limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertRow {
                    id: r.get(0)?,
                    site: r.get(1)?,
                    kind: r.get(2)?,
                    channel: r.get(3)?,
                    status: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                    created_at: r.get(7)?,
                    sent_at: r.get(8)?,
                    subject: r.get(9)?,
                })
            })
            .collect()
    }
}
