//! Approved baselines: the state of each site that drift is measured against.

use super::db::{Tx, params};
use super::{Store, StoreError};
use crate::diff::Baseline;

/// The approved baseline of `site` inside `tx`, if there is one.
pub async fn get_in(tx: &mut Tx, site: &str) -> Result<Option<Baseline>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT baseline_json FROM baselines WHERE site = $1",
            params![site],
        )
        .await?;
    row.map(|r| parse(&tx.db().shown(), &r.get::<String>(0)?))
        .transpose()
}

fn parse(db: &str, json: &str) -> Result<Baseline, StoreError> {
    serde_json::from_str(json)
        .map(Baseline::normalized)
        .map_err(|source| StoreError::Corrupt {
            path: db.to_string(),
            id: 0,
            source,
        })
}

impl Store {
    /// Marks `baseline` as the approved state of its site (replacing any earlier one).
    pub async fn approve_baseline(&self, baseline: &Baseline) -> Result<(), StoreError> {
        let json = serde_json::to_string(baseline).expect("a baseline always serializes");
        self.db()
            .execute(
                "INSERT INTO baselines (site, scan_id, approved_at, baseline_json)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (site) DO UPDATE SET scan_id = excluded.scan_id,
                    approved_at = excluded.approved_at, baseline_json = excluded.baseline_json",
                params![
                    &baseline.site,
                    baseline.scan_id,
                    &baseline.approved_at,
                    json
                ],
            )
            .await?;
        Ok(())
    }

    /// The approved baseline of `site`.
    pub async fn baseline(&self, site: &str) -> Result<Baseline, StoreError> {
        let row = self
            .db()
            .query_opt(
                "SELECT baseline_json FROM baselines WHERE site = $1",
                params![site],
            )
            .await?
            .ok_or_else(|| StoreError::NoBaseline(site.to_string()))?;
        parse(&self.shown(), &row.get::<String>(0)?)
    }
}
