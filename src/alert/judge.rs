//! What a finished scan means for alerting, decided inside the caller's transaction: the scan is
//! stored, diffed against its site's approved baseline (an empty one when none is approved) and
//! the alert decision recorded, so the scan, the drift and the decision commit together or not
//! at all. Delivery happens after the commit ([`super::Alerter::after`]).

use super::Alert;
use super::history::{self, Decision};
use crate::diff::{BASELINE_SCHEMA, Baseline, Inventory};
use crate::model::ScanReport;
use crate::store::db::Tx;
use crate::store::{StoreError, baselines, scans};

/// The outcome of [`record_scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub scan_id: i64,
    /// Items the drift added (0 when the scan failed).
    pub drift_added: usize,
    /// Why the scan counts as failed (no page could be loaded), if it does.
    pub failure: Option<String>,
    /// The alert rows recorded for delivery (drift or site down).
    pub decision: Decision,
}

/// Stores `report`, judges it and records the alert decision for `channels`. A scan that loaded
/// no page counts as a failure of its site (a `site_down` alert at `threshold` failures in a row).
pub async fn record_scan(
    tx: &mut Tx,
    report: &mut ScanReport,
    channels: &[&str],
    threshold: u32,
) -> Result<Judged, StoreError> {
    let scan_id = scans::save_in(tx, report).await?;
    if let Some(reason) = report.unscannable() {
        let ids = history::record_failure(tx, &report.site, &reason, threshold, channels).await?;
        return Ok(Judged {
            scan_id,
            drift_added: 0,
            failure: Some(reason),
            decision: ids.map_or(Decision::NothingNew, Decision::Recorded),
        });
    }
    history::record_success(tx, &report.site).await?;
    let baseline = baselines::get_in(tx, &report.site).await?;
    if baseline.is_none() {
        tracing::warn!(site = %report.site, "no approved baseline: everything found counts as new; approve one with `pixelwatch baseline approve`");
    }
    let empty = Baseline {
        schema: BASELINE_SCHEMA.into(),
        site: report.site.clone(),
        scan_id: None,
        approved_at: String::new(),
        inventory: Inventory::default(),
    };
    let drift = crate::diff::diff(baseline.as_ref().unwrap_or(&empty), report);
    let alert = Alert::drift(&drift, report, baseline.as_ref());
    let decision = history::record_drift(tx, &report.site, alert.as_ref(), channels).await?;
    Ok(Judged {
        scan_id,
        drift_added: drift.added.len(),
        failure: None,
        decision,
    })
}

/// Counts a scan of `site` that could not run at all (the browser did not start, ...).
pub async fn record_failed_run(
    tx: &mut Tx,
    site: &str,
    error: &str,
    channels: &[&str],
    threshold: u32,
) -> Result<Decision, StoreError> {
    let ids = history::record_failure(tx, site, error, threshold, channels).await?;
    Ok(ids.map_or(Decision::NothingNew, Decision::Recorded))
}
