//! Sites in the store: a start URL (normalised, the key scans and baselines use), its cron
//! schedule and its scan settings, so a fleet is managed without copying files to every machine.
//! `enqueued_until` is the scheduler's cursor: the last due time it queued.

use super::db::{Row, Tx, params};
use super::{Store, StoreError};
use crate::settings::ScanSettings;

/// One stored site.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiteRow {
    pub url: String,
    pub schedule: String,
    pub settings: ScanSettings,
    pub created_at: String,
    pub updated_at: String,
    /// The last due time the scheduler queued (RFC 3339), if any.
    pub enqueued_until: Option<String>,
}

/// What `upsert_site` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Added,
    Updated,
    Unchanged,
}

const COLUMNS: &str = "url, schedule, settings_json, created_at, updated_at, enqueued_until";

fn site_row(r: &Row) -> Result<SiteRow, StoreError> {
    let json: String = r.get(2)?;
    Ok(SiteRow {
        url: r.get(0)?,
        schedule: r.get(1)?,
        settings: ScanSettings::from_json(&json)
            .map_err(|e| StoreError::Decode(format!("settings of a stored site: {e}")))?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
        enqueued_until: r.get(5)?,
    })
}

/// Moves the scheduler's cursor of `url` (the last due time queued) inside `tx`.
pub async fn set_enqueued_until_in(tx: &mut Tx, url: &str, at: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE sites SET enqueued_until = $2 WHERE url = $1",
        params![url, at],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Adds a site; a site already stored is an error (change it with `update_site`).
    pub async fn add_site(
        &self,
        url: &str,
        schedule: &str,
        settings: &ScanSettings,
    ) -> Result<(), StoreError> {
        let now = super::now();
        let n = self
            .db()
            .execute(
                "INSERT INTO sites (url, schedule, settings_json, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (url) DO NOTHING",
                params![url, schedule, settings.to_json(), now],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::SiteExists(url.to_string()));
        }
        Ok(())
    }

    /// Adds the site, or replaces its schedule and settings (`sites import`).
    pub async fn upsert_site(
        &self,
        url: &str,
        schedule: &str,
        settings: &ScanSettings,
    ) -> Result<Upsert, StoreError> {
        match self.site(url).await {
            Ok(old) if old.schedule == schedule && old.settings == *settings => {
                Ok(Upsert::Unchanged)
            }
            Ok(_) => {
                self.update_site(url, schedule, settings).await?;
                Ok(Upsert::Updated)
            }
            Err(StoreError::NoSite(_)) => match self.add_site(url, schedule, settings).await {
                Ok(()) => Ok(Upsert::Added),
                // Added by someone else meanwhile: ours replaces it.
                Err(StoreError::SiteExists(_)) => {
                    self.update_site(url, schedule, settings).await?;
                    Ok(Upsert::Updated)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Replaces a stored site's schedule and settings.
    pub async fn update_site(
        &self,
        url: &str,
        schedule: &str,
        settings: &ScanSettings,
    ) -> Result<(), StoreError> {
        let n = self
            .db()
            .execute(
                "UPDATE sites SET schedule = $2, settings_json = $3, updated_at = $4 WHERE url = $1",
                params![url, schedule, settings.to_json(), super::now()],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NoSite(url.to_string()));
        }
        Ok(())
    }

    /// One stored site.
    pub async fn site(&self, url: &str) -> Result<SiteRow, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sites WHERE url = $1");
        let row = self.db().query_opt(&sql, params![url]).await?;
        site_row(&row.ok_or_else(|| StoreError::NoSite(url.to_string()))?)
    }

    /// Every stored site, by URL.
    pub async fn sites(&self) -> Result<Vec<SiteRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sites ORDER BY url");
        self.db()
            .query(&sql, &[])
            .await?
            .iter()
            .map(site_row)
            .collect()
    }

    /// Removes a stored site (its scans, baseline and history stay); false if there was none.
    pub async fn remove_site(&self, url: &str) -> Result<bool, StoreError> {
        Ok(self
            .db()
            .execute("DELETE FROM sites WHERE url = $1", params![url])
            .await?
            > 0)
    }
}
