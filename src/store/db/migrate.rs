//! One migration runner per backend, over the versioned files under `migrations/`: SQLite's
//! `user_version` read again inside `BEGIN IMMEDIATE`, PostgreSQL's `schema_migrations` read
//! under a transaction-scoped advisory lock, so processes starting at once apply each file once.

use super::Db;
use crate::store::StoreError;

/// A versioned schema file.
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migrations {
    ($dir:literal: $($name:literal),* $(,)?) => {
        &[$(Migration { name: $name, sql: include_str!(concat!("../../../migrations/", $dir, "/", $name)) }),*]
    };
}

/// SQLite schema, in order; `PRAGMA user_version` is how many are applied. Never edit one that
/// has shipped; add a file.
pub const SQLITE_MIGRATIONS: &[Migration] = migrations!("scanner":
    "0001_scans.sql", "0002_baselines.sql", "0003_alerts.sql", "0004_fleet.sql",
    "0005_dashboard.sql");

/// PostgreSQL schema, in order; `schema_migrations` lists those applied.
pub const POSTGRES_MIGRATIONS: &[Migration] =
    migrations!("postgres": "0001_init.sql", "0002_dashboard.sql");

/// The advisory lock key that serialises migrations ("pxwmigr").
const MIGRATION_LOCK: i64 = 0x0070_7877_6d69_6772;

/// Applies `migrations` to a SQLite database whose `PRAGMA user_version` counts those applied;
/// `shown` names it in errors. Every SQLite database of the crate uses it (the scanner's store,
/// the relay's outbox: `relay::db`).
pub fn apply_sqlite(
    c: &rusqlite::Connection,
    shown: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let err = |e| super::sqlite_error(shown, e);
    let version = || -> Result<i64, StoreError> {
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)
    };
    if version()? as usize == migrations.len() {
        return Ok(()); // up to date: nothing to apply, no write lock needed
    }
    // The write lock first, then the version again: a second process waits here (busy timeout)
    // and then finds the schema already applied.
    c.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    let run = || -> Result<(), StoreError> {
        let applied = version()?;
        if applied as usize > migrations.len() {
            return Err(StoreError::TooNew {
                path: shown.to_string(),
                found: applied,
                known: migrations.len(),
            });
        }
        for (i, m) in migrations.iter().enumerate().skip(applied as usize) {
            c.execute_batch(&format!("{}\nPRAGMA user_version = {};", m.sql, i + 1))
                .map_err(|e| StoreError::Migration {
                    path: shown.to_string(),
                    name: m.name.to_string(),
                    message: e.to_string(),
                })?;
            tracing::info!(db = %shown, migration = m.name, "applied migration");
        }
        Ok(())
    };
    match run() {
        Ok(()) => c.execute_batch("COMMIT").map_err(err),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

impl Db {
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mig_err = |name: &str, message: String| StoreError::Migration {
            path: self.shown(),
            name: name.to_string(),
            message,
        };
        match self {
            Db::Sqlite { conn, .. } => {
                let c = conn.lock().await;
                apply_sqlite(&c, &self.shown(), SQLITE_MIGRATIONS)
            }
            Db::Postgres { .. } => {
                let mut c = self.pg_client().await?;
                let tx = c.transaction().await.map_err(|e| self.pg_err(e))?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                    .await
                    .map_err(|e| self.pg_err(e))?;
                tx.batch_execute(
                    "SET LOCAL client_min_messages = warning;
                     CREATE TABLE IF NOT EXISTS schema_migrations (
                        version BIGINT PRIMARY KEY, name TEXT NOT NULL,
                        applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .await
                .map_err(|e| self.pg_err(e))?;
                let version: i64 = tx
                    .query_one(
                        "SELECT COALESCE(max(version), 0) FROM schema_migrations",
                        &[],
                    )
                    .await
                    .map_err(|e| self.pg_err(e))?
                    .get(0);
                if version as usize > POSTGRES_MIGRATIONS.len() {
                    return Err(StoreError::TooNew {
                        path: self.shown(),
                        found: version,
                        known: POSTGRES_MIGRATIONS.len(),
                    });
                }
                for (i, m) in POSTGRES_MIGRATIONS
                    .iter()
                    .enumerate()
                    .skip(version as usize)
                {
                    tx.batch_execute(m.sql)
                        .await
                        .map_err(|e| mig_err(m.name, crate::store::pg_message(&e)))?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        &[&(i as i64 + 1), &m.name],
                    )
                    .await
                    .map_err(|e| self.pg_err(e))?;
                    tracing::info!(db = %self.shown(), migration = m.name, "applied migration");
                }
                tx.commit().await.map_err(|e| self.pg_err(e))
            }
        }
    }
}
