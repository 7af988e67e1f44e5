//! SQLite access: open the relay database, set pragmas and apply `migrations/relay/*.sql` in order.

use std::path::Path;

use rusqlite::Connection;

use super::config::Synchronous;
use super::error::StoreError;
use crate::store::db::{Migration, apply_sqlite};

macro_rules! relay_migrations {
    ($($name:literal),* $(,)?) => {
        &[$(Migration { name: $name, sql: include_str!(concat!("../../migrations/relay/", $name)) }),*]
    };
}

/// Migrations in order; the database's `PRAGMA user_version` is the number applied.
/// Never edit one that has shipped; add a new file. Applied by the crate's one SQLite
/// migration runner ([`apply_sqlite`]: version read again under the write lock, so two
/// processes opening one database at once apply each file once).
const MIGRATIONS: &[Migration] = relay_migrations!(
    "0001_init.sql",
    "0002_destinations_nonces.sql",
    "0003_delivery_batches.sql",
    "0004_outbox_lean_indexes.sql",
);

/// Schema version this relay writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

/// Open (creating if needed) and migrate the database. WAL journal; `synchronous` per config.
pub fn open(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(err(path))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err(path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err(path))?;
    let level = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)
        .map_err(err(path))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err(path))?;
    // Savepoint journals (one per group-committed command) in memory, not in a temp file.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(err(path))?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Open an existing database for reading (admin commands); migrates it if it is older.
pub fn open_existing(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Sqlite {
            path: path.display().to_string(),
            source: rusqlite::Error::InvalidPath(path.to_path_buf()),
        });
    }
    open(path, Synchronous::Full)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    use crate::store::StoreError as Shared;
    apply_sqlite(conn, &path.display().to_string(), MIGRATIONS).map_err(|e| match e {
        Shared::TooNew { path, found, .. } => StoreError::TooNew {
            path,
            found,
            supported: SCHEMA_VERSION,
        },
        other => StoreError::Migration(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("r.db");
        let c = open(&p, Synchronous::Full).expect("open");
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(v, SCHEMA_VERSION);
        drop(c);
        let c = open(&p, Synchronous::Normal).expect("reopen");
        let n: i64 = c
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .expect("table exists");
        assert_eq!(n, 0);
    }

    #[test]
    fn v1_rows_migrate_to_destinations_and_lose_field_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("r.db");
        let c = Connection::open(&p).expect("open");
        c.execute_batch(MIGRATIONS[0].sql).expect("v1");
        c.pragma_update(None, "user_version", 1).expect("version");
        c.execute_batch(
            r#"INSERT INTO audit (received_ms, source, event_id, event, decision, reasons, updated_ms)
               VALUES (1, 'browser', 'e1', 'Schedule', 'queued',
                       '["dropped_field:diagnosis","dropped_field:email","page_url_generalized"]', 1),
                      (2, 'browser', NULL, NULL, 'dropped', '["no_consent"]', 2);"#,
        )
        .expect("v1 rows");
        drop(c);
        let c = open(&p, Synchronous::Full).expect("migrate");
        let (reasons, dests, pending): (String, String, i64) = c
            .query_row(
                "SELECT reasons, destinations, pending FROM audit WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("row");
        assert_eq!(
            reasons,
            r#"["unknown_field:legacy:9","dropped_field:email","page_url_generalized"]"#
        );
        assert_eq!(dests, r#"{"tiktok":{"state":"queued","event":"Schedule"}}"#);
        assert_eq!(pending, 1);
        let dests: String = c
            .query_row("SELECT destinations FROM audit WHERE id = 2", [], |r| {
                r.get(0)
            })
            .expect("row");
        assert_eq!(dests, "{}");
    }

    #[test]
    fn newer_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("r.db");
        let c = Connection::open(&p).expect("open");
        c.pragma_update(None, "user_version", 99).expect("set");
        drop(c);
        let e = open(&p, Synchronous::Full).expect_err("too new");
        assert!(e.to_string().contains("99"), "{e}");
    }
}
