//! The record of actions people take (sign-in, baseline approvals, scans queued, mutes added and
//! lifted, accounts changed): who, when, what, and on which site. Written in the same
//! transaction as the action where there is one, never edited.

use super::db::{Row, Tx, params};
use super::{Store, StoreError};

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Action {
    pub id: i64,
    pub at: String,
    pub actor: String,
    /// "approve_baseline", "scan_now", "mute", "unmute", "sign_in", "user_add", ...
    pub action: String,
    pub site: Option<String>,
    /// What was done, for people (scan ids, reasons, expiry).
    pub detail: String,
}

fn action_row(r: &Row) -> Result<Action, StoreError> {
    Ok(Action {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        site: r.get(4)?,
        detail: r.get(5)?,
    })
}

/// Records an action inside `tx`.
pub async fn record_in(
    tx: &mut Tx,
    actor: &str,
    action: &str,
    site: Option<&str>,
    detail: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, site, detail) VALUES ($1, $2, $3, $4, $5)",
        params![super::now(), actor, action, site, detail],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Records an action.
    pub async fn record_action(
        &self,
        actor: &str,
        action: &str,
        site: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin().await?;
        record_in(&mut tx, actor, action, site, detail).await?;
        tx.commit().await
    }

    /// Recent actions, newest first: of one site, or of all.
    pub async fn actions(
        &self,
        site: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Action>, StoreError> {
        self.db()
            .query(
                "SELECT id, at, actor, action, site, detail FROM audit_log
                 WHERE (CAST($1 AS TEXT) IS NULL OR site = $1) ORDER BY id DESC LIMIT $2",
                params![site, limit],
            )
            .await?
            .iter()
            .map(action_row)
            .collect()
    }

    /// The last time `action` was taken on `site`, if ever.
    pub async fn last_action(
        &self,
        site: &str,
        action: &str,
    ) -> Result<Option<Action>, StoreError> {
        let row = self
            .db()
            .query_opt(
                "SELECT id, at, actor, action, site, detail FROM audit_log
                 WHERE site = $1 AND action = $2 ORDER BY id DESC LIMIT 1",
                params![site, action],
            )
            .await?;
        row.map(|r| action_row(&r)).transpose()
    }
}
