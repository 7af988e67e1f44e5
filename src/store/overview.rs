//! What the dashboard's overview reads for every site at once, in a few queries: the sites
//! known (stored, or scanned), each one's recent scans, baseline, run of failed scans and next
//! queued job.

use std::collections::BTreeMap;

use super::db::params;
use super::scans::{SCAN_ROW_COLUMNS, scan_row};
use super::{ScanRow, Store, StoreError};

/// A site's approved baseline, without its inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineRef {
    pub scan_id: Option<i64>,
    pub approved_at: String,
}

impl Store {
    /// Every site the store knows: stored sites and sites with scans, by URL.
    pub async fn known_sites(&self) -> Result<Vec<String>, StoreError> {
        self.db()
            .query(
                "SELECT url FROM sites UNION SELECT DISTINCT site FROM scans ORDER BY 1",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The newest `n` scans of every site, newest first.
    pub async fn recent_scans_by_site(
        &self,
        n: usize,
    ) -> Result<BTreeMap<String, Vec<ScanRow>>, StoreError> {
        let sql = format!(
            "SELECT {SCAN_ROW_COLUMNS} FROM (
                SELECT s.*, row_number() OVER (PARTITION BY site ORDER BY id DESC) AS n
                FROM scans s) AS ranked
             WHERE n <= $1 ORDER BY site, id DESC"
        );
        let mut out: BTreeMap<String, Vec<ScanRow>> = BTreeMap::new();
        for r in self.db().query(&sql, params![n]).await? {
            let row = scan_row(&r)?;
            out.entry(row.site.clone()).or_default().push(row);
        }
        Ok(out)
    }

    /// Every approved baseline (site -> the scan it came from and when).
    pub async fn baseline_refs(&self) -> Result<BTreeMap<String, BaselineRef>, StoreError> {
        self.db()
            .query("SELECT site, scan_id, approved_at FROM baselines", &[])
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.get(0)?,
                    BaselineRef {
                        scan_id: r.get(1)?,
                        approved_at: r.get(2)?,
                    },
                ))
            })
            .collect()
    }

    /// Sites whose latest scans failed (watch or worker runs): site -> failures in a row.
    pub async fn failure_runs(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        self.db()
            .query(
                "SELECT site, consecutive_failures FROM alert_state WHERE consecutive_failures > 0",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }

    /// PostgreSQL: the earliest queued or running job of every site (site -> due time, state);
    /// empty on SQLite, which has no queue.
    pub async fn next_jobs(&self) -> Result<BTreeMap<String, (String, String)>, StoreError> {
        if !self.db().is_postgres() {
            return Ok(BTreeMap::new());
        }
        self.db()
            .query(
                "SELECT DISTINCT ON (site) site, due_at, state FROM jobs
                 WHERE state IN ('queued', 'running') ORDER BY site, due_at",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .collect()
    }
}
