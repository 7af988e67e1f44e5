//! The history of `pixelwatch watch`: one `watch_runs` row per scheduled run of a site.

use crate::store::db::params;
use crate::store::{Store, StoreError};

/// One scheduled run of `pixelwatch watch`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WatchRun {
    pub site: String,
    pub started_at: String,
    pub finished_at: String,
    pub scan_id: Option<i64>,
    /// "ok" or "failed".
    pub outcome: String,
    pub drift_added: usize,
    pub error: Option<String>,
}

impl Store {
    /// Records one scheduled run of `pixelwatch watch`.
    pub async fn record_watch_run(&self, run: &WatchRun) -> Result<(), StoreError> {
        self.db()
            .execute(
                "INSERT INTO watch_runs (site, started_at, finished_at, scan_id, outcome,
                    drift_added, error) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                params![
                    &run.site,
                    &run.started_at,
                    &run.finished_at,
                    run.scan_id,
                    &run.outcome,
                    run.drift_added,
                    run.error.as_deref()
                ],
            )
            .await?;
        Ok(())
    }

    /// Scheduled runs of `site` (or of every site), oldest first.
    pub async fn watch_runs(&self, site: Option<&str>) -> Result<Vec<WatchRun>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT site, started_at, finished_at, scan_id, outcome, drift_added, error
                 FROM watch_runs WHERE (CAST($1 AS TEXT) IS NULL OR site = $1) ORDER BY id",
                params![site],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WatchRun {
                    site: r.get(0)?,
                    started_at: r.get(1)?,
                    finished_at: r.get(2)?,
                    scan_id: r.get(3)?,
                    outcome: r.get(4)?,
                    drift_added: r.get(5)?,
                    error: r.get(6)?,
                })
            })
            .collect()
    }
}
