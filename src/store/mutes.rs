//! Stored mutes ([`crate::diff::mutes`]): added, listed, lifted; the active ones of a site read
//! inside a judging transaction too, so a worker judges a scan with the mutes of that moment.

use super::db::{Row, Tx, params};
use super::{Store, StoreError};
use crate::diff::mutes::Mute;
use crate::model::FindingKind;

/// A mute to add.
#[derive(Debug, Clone)]
pub struct NewMute<'a> {
    pub site: &'a str,
    pub kind: FindingKind,
    pub vendor: Option<&'a str>,
    pub rule: &'a str,
    pub reason: &'a str,
    pub expires_at: &'a str,
    pub created_by: &'a str,
}

const COLUMNS: &str = "id, site, kind, vendor, rule, reason, expires_at, created_by, created_at,
    lifted_by, lifted_at";

fn mute_row(r: &Row) -> Result<Mute, StoreError> {
    let vendor: String = r.get(3)?;
    Ok(Mute {
        id: r.get(0)?,
        site: r.get(1)?,
        kind: r.get::<String>(2)?.parse().map_err(StoreError::Decode)?,
        vendor: (!vendor.is_empty()).then_some(vendor),
        rule: r.get(4)?,
        reason: r.get(5)?,
        expires_at: r.get(6)?,
        created_by: r.get(7)?,
        created_at: r.get(8)?,
        lifted_by: r.get(9)?,
        lifted_at: r.get(10)?,
    })
}

fn active_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM mutes WHERE site = $1 AND lifted_at IS NULL AND expires_at > $2
         ORDER BY id"
    )
}

/// The mutes of `site` in force now, inside `tx`.
pub async fn active_in(tx: &mut Tx, site: &str) -> Result<Vec<Mute>, StoreError> {
    tx.query(&active_sql(), params![site, super::now()])
        .await?
        .iter()
        .map(mute_row)
        .collect()
}

/// Adds a mute inside `tx`; returns its id.
pub async fn add_in(tx: &mut Tx, m: &NewMute<'_>) -> Result<i64, StoreError> {
    let row = tx
        .query_opt(
            "INSERT INTO mutes (site, kind, vendor, rule, reason, expires_at, created_by,
                created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            params![
                m.site,
                m.kind.as_str(),
                m.vendor.unwrap_or(""),
                m.rule,
                m.reason,
                m.expires_at,
                m.created_by,
                super::now()
            ],
        )
        .await?
        .ok_or_else(|| StoreError::Decode("INSERT ... RETURNING gave no row".into()))?;
    row.get(0)
}

/// Lifts a mute of `site` before it expires, inside `tx`; the mute as it was, or `None` when
/// there is no such mute in force.
pub async fn lift_in(
    tx: &mut Tx,
    site: &str,
    id: i64,
    by: &str,
) -> Result<Option<Mute>, StoreError> {
    let sql = format!(
        "UPDATE mutes SET lifted_by = $3, lifted_at = $4
         WHERE id = $1 AND site = $2 AND lifted_at IS NULL AND expires_at > $4
         RETURNING {COLUMNS}"
    );
    let row = tx
        .query_opt(&sql, params![id, site, by, super::now()])
        .await?;
    row.map(|r| mute_row(&r)).transpose()
}

impl Store {
    /// Adds a mute; returns its id.
    pub async fn add_mute(&self, m: &NewMute<'_>) -> Result<i64, StoreError> {
        let mut tx = self.db().begin().await?;
        let id = add_in(&mut tx, m).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The mutes of `site` in force now.
    pub async fn active_mutes(&self, site: &str) -> Result<Vec<Mute>, StoreError> {
        self.db()
            .query(&active_sql(), params![site, super::now()])
            .await?
            .iter()
            .map(mute_row)
            .collect()
    }

    /// The mutes in force now of every site (site -> its mutes).
    pub async fn all_active_mutes(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Vec<Mute>>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM mutes WHERE lifted_at IS NULL AND expires_at > $1 ORDER BY id"
        );
        let mut out: std::collections::BTreeMap<String, Vec<Mute>> = Default::default();
        for r in self.db().query(&sql, params![super::now()]).await? {
            let m = mute_row(&r)?;
            out.entry(m.site.clone()).or_default().push(m);
        }
        Ok(out)
    }

    /// Every mute of `site`, newest first (expired and lifted ones too).
    pub async fn mutes(&self, site: &str) -> Result<Vec<Mute>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM mutes WHERE site = $1 ORDER BY id DESC");
        self.db()
            .query(&sql, params![site])
            .await?
            .iter()
            .map(mute_row)
            .collect()
    }
}
