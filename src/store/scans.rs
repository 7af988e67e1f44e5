//! Stored scans: one row per scan with its summary and full report, and the vendors it saw
//! (`scan_vendors`, read by the HTML report's "first seen"). Saved in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use super::db::{Tx, params};
use super::{Store, StoreError};
use crate::model::ScanReport;

/// One line of `scans list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScanRow {
    pub id: i64,
    pub site: String,
    pub started_at: String,
    pub finished_at: String,
    pub pages: i64,
    pub pages_errored: i64,
    pub third_party_hosts: i64,
    pub cookies: i64,
    pub findings: i64,
    pub worst_severity: Option<String>,
}

/// Saves a scan inside `tx` and returns its id (also written into the report).
pub async fn save_in(tx: &mut Tx, report: &mut ScanReport) -> Result<i64, StoreError> {
    let worst = report
        .findings
        .iter()
        .map(|f| f.severity)
        .min()
        .map(|s| s.as_str().to_string());
    let row = tx
        .query_opt(
            "INSERT INTO scans (site, started_at, finished_at, consent_mode, pages, pages_errored,
                requests, third_party_hosts, cookies, findings, worst_severity, report_json)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '') RETURNING id",
            params![
                &report.site,
                &report.started_at,
                &report.finished_at,
                &report.consent_mode,
                report.summary.pages,
                report.summary.pages_errored,
                report.summary.requests,
                report.summary.third_party_hosts.len(),
                report.summary.cookies,
                report.findings.len(),
                worst,
            ],
        )
        .await?
        .ok_or_else(|| StoreError::Decode("INSERT ... RETURNING gave no row".into()))?;
    let id: i64 = row.get(0)?;
    report.id = Some(id);
    let vendors: BTreeSet<&str> = report
        .pages
        .iter()
        .flat_map(|p| &p.requests)
        .filter_map(|r| r.vendor.as_deref())
        .collect();
    for v in vendors {
        tx.execute(
            "INSERT INTO scan_vendors (scan_id, vendor) VALUES ($1, $2)",
            params![id, v],
        )
        .await?;
    }
    let json = serde_json::to_string(report).expect("a report always serializes");
    tx.execute(
        "UPDATE scans SET report_json = $1 WHERE id = $2",
        params![json, id],
    )
    .await?;
    Ok(id)
}

impl Store {
    /// Saves a scan in one transaction and returns its id (also written into the report).
    pub async fn save_scan(&self, report: &mut ScanReport) -> Result<i64, StoreError> {
        let mut tx = self.db().begin().await?;
        let id = save_in(&mut tx, report).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Recent scans, newest first, optionally of one site.
    pub async fn list_scans(
        &self,
        site: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScanRow>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT id, site, started_at, finished_at, pages, pages_errored, third_party_hosts,
                    cookies, findings, worst_severity
                 FROM scans WHERE (CAST($1 AS TEXT) IS NULL OR site = $1) ORDER BY id DESC LIMIT $2",
                params![site, limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ScanRow {
                    id: r.get(0)?,
                    site: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    pages: r.get(4)?,
                    pages_errored: r.get(5)?,
                    third_party_hosts: r.get(6)?,
                    cookies: r.get(7)?,
                    findings: r.get(8)?,
                    worst_severity: r.get(9)?,
                })
            })
            .collect()
    }

    /// When each vendor was first seen on `site`: vendor id -> `finished_at` of the earliest
    /// stored scan with a request to it.
    pub async fn vendors_first_seen(
        &self,
        site: &str,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT v.vendor, min(s.finished_at) FROM scan_vendors v
                 JOIN scans s ON v.scan_id = s.id WHERE s.site = $1 GROUP BY v.vendor",
                params![site],
            )
            .await?;
        rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect()
    }

    /// The newest scan of `site` (or of any site), optionally only those older than `before`.
    pub async fn latest_scan_id(
        &self,
        site: Option<&str>,
        before: Option<i64>,
    ) -> Result<i64, StoreError> {
        let id: Option<i64> = match self
            .db()
            .query_opt(
                "SELECT max(id) FROM scans WHERE (CAST($1 AS TEXT) IS NULL OR site = $1)
                    AND (CAST($2 AS BIGINT) IS NULL OR id < $2)",
                params![site, before],
            )
            .await?
        {
            Some(r) => r.get(0)?,
            None => None,
        };
        id.ok_or_else(|| StoreError::NoScans(site.unwrap_or("any site").to_string()))
    }

    /// The full report of scan `id`.
    pub async fn load_scan(&self, id: i64) -> Result<ScanReport, StoreError> {
        let row = self
            .db()
            .query_opt("SELECT report_json FROM scans WHERE id = $1", params![id])
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let json: String = row.get(0)?;
        serde_json::from_str(&json).map_err(|source| StoreError::Corrupt {
            path: self.shown(),
            id,
            source,
        })
    }

    /// Deletes all but the newest `keep` scans of each site (a scan an approved baseline was
    /// made from is kept too); returns how many were deleted.
    pub async fn prune(&self, keep: usize) -> Result<u64, StoreError> {
        self.db()
            .execute(
                "DELETE FROM scans WHERE id IN (
                    SELECT id FROM (
                        SELECT id, row_number() OVER (PARTITION BY site ORDER BY id DESC) AS n
                        FROM scans) AS ranked
                    WHERE n > $1)
                 AND id NOT IN (SELECT scan_id FROM baselines WHERE scan_id IS NOT NULL)",
                params![keep],
            )
            .await
    }
}
