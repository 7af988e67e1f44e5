//! The connection under every store module: a SQLite file (embedded default) or a PostgreSQL
//! server (a fleet), one SQL dialect for both, and one migration runner per backend.
//!
//! Invariants:
//! - Queries are written once, with `$1`-style parameters (rewritten to `?1` for SQLite), in the
//!   SQL both backends accept; backend-only statements (the job queue's `SKIP LOCKED`) are marked
//!   as such where they are written.
//! - Migrations run inside the write lock: SQLite's `BEGIN IMMEDIATE` before `user_version` is
//!   read, PostgreSQL's transaction-scoped advisory lock before `schema_migrations` is read, so
//!   two processes starting at once apply each migration exactly once.
//! - A transaction that is dropped without `commit` is rolled back (SQLite) or its connection is
//!   closed, which makes the server roll it back (PostgreSQL): nothing half-written stays.
//! - A PostgreSQL URL is shown with its password removed, in errors and logs alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod migrate;
mod value;

pub use migrate::{Migration, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, apply_sqlite};
pub(crate) use value::params;
pub use value::{FromValue, Row, Value};

use tokio_postgres::types::{ToSql, Type};

use super::StoreError;

/// How long a SQLite writer waits for another process holding the database.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a PostgreSQL caller waits for a connection (connect included) before the database
/// counts as unreachable.
const PG_WAIT: Duration = Duration::from_secs(10);

/// Names a PEM file of extra root certificates that a PostgreSQL server's TLS certificate may
/// chain to (a cloud provider's or a private CA), besides the Mozilla roots.
pub const CA_FILE_ENV: &str = "PIXELWATCH_DB_CA_FILE";

fn add_roots(roots: &mut rustls::RootCertStore, file: &Path) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let shown = format!("{CA_FILE_ENV} '{}'", file.display());
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(file).map_err(|e| format!("{shown}: {e}"))? {
        let cert = cert.map_err(|e| format!("{shown}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{shown}: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err(format!("{shown}: no certificate in it"));
    }
    Ok(())
}

/// Where the store lives: `--db` / `PIXELWATCH_DB` is a file path or a `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    Sqlite(PathBuf),
    Postgres(String),
}

impl std::str::FromStr for DbTarget {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<DbTarget, Self::Err> {
        Ok(
            if s.starts_with("postgres://") || s.starts_with("postgresql://") {
                DbTarget::Postgres(s.to_string())
            } else {
                DbTarget::Sqlite(PathBuf::from(s))
            },
        )
    }
}

impl<'de> serde::Deserialize<'de> for DbTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DbTarget, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().expect("infallible"))
    }
}

impl From<&Path> for DbTarget {
    fn from(p: &Path) -> DbTarget {
        DbTarget::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for DbTarget {
    fn from(p: &PathBuf) -> DbTarget {
        DbTarget::Sqlite(p.clone())
    }
}

impl From<PathBuf> for DbTarget {
    fn from(p: PathBuf) -> DbTarget {
        DbTarget::Sqlite(p)
    }
}

impl From<&DbTarget> for DbTarget {
    fn from(t: &DbTarget) -> DbTarget {
        t.clone()
    }
}

impl std::fmt::Display for DbTarget {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbTarget::Sqlite(p) => write!(f, "{}", p.display()),
            DbTarget::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl DbTarget {
    /// `$PIXELWATCH_DB`, else `$XDG_DATA_HOME/pixelwatch/pixelwatch.db`, else
    /// `~/.local/share/pixelwatch/pixelwatch.db`.
    pub fn default_target() -> DbTarget {
        if let Some(v) = std::env::var_os("PIXELWATCH_DB").filter(|v| !v.is_empty()) {
            return v.to_string_lossy().parse().expect("infallible");
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        DbTarget::Sqlite(base.join("pixelwatch").join("pixelwatch.db"))
    }

    /// Whether this is a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        matches!(self, DbTarget::Postgres(_))
    }
}

/// A URL with any password replaced by `***` (also `password=` in the query string).
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "postgres://(unparsable URL)".to_string(),
    }
}

/// An open database.
#[derive(Clone)]
pub enum Db {
    Sqlite {
        conn: Arc<tokio::sync::Mutex<rusqlite::Connection>>,
        path: PathBuf,
    },
    Postgres {
        pool: deadpool_postgres::Pool,
        shown: String,
    },
}

fn sqlite_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('$') {
        return sql.into();
    }
    static PARAM: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\$(\d+)").expect("valid"));
    PARAM.replace_all(sql, "?$1")
}

fn sqlite_rows(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&sqlite_sql(sql))?;
    let n = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut vals = Vec::with_capacity(n);
        for i in 0..n {
            use rusqlite::types::ValueRef;
            vals.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
            });
        }
        out.push(Row(vals));
    }
    Ok(out)
}

fn sqlite_execute(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(&sqlite_sql(sql))?;
    stmt.execute(rusqlite::params_from_iter(params.iter()))
        .map(|n| n as u64)
}

fn pg_row(row: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    let mut vals = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_();
        let v = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::TIMESTAMPTZ => row
                .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)?
                .map(|t| Value::Text(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
            _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        vals.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(vals))
}

fn pg_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Statements (and statement preparations) sent to PostgreSQL by this process: the fleet's
/// coordination cost, exposed by the worker as `pixelwatch_db_round_trips_total`.
static ROUND_TRIPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many round trips to PostgreSQL this process has made.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(std::sync::atomic::Ordering::Relaxed)
}

fn count_round_trip() {
    ROUND_TRIPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// A statement prepared once per connection (counting the round trip when it is new).
async fn pg_prepare(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    let cached = c.statement_cache.size();
    let stmt = c.prepare_cached(sql).await?;
    if c.statement_cache.size() != cached {
        count_round_trip();
    }
    count_round_trip();
    Ok(stmt)
}

/// Runs a query on a PostgreSQL connection.
async fn pg_run(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: &[Value],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let stmt = pg_prepare(c, sql).await?;
    c.query(&stmt, &pg_params(params)).await
}

/// Runs a statement on a PostgreSQL connection; returns the rows it changed.
async fn pg_exec(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: &[Value],
) -> Result<u64, tokio_postgres::Error> {
    let stmt = pg_prepare(c, sql).await?;
    c.execute(&stmt, &pg_params(params)).await
}

async fn pg_batch(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    count_round_trip();
    c.batch_execute(sql).await
}

fn pg_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<Row>, tokio_postgres::Error> {
    rows.iter().map(pg_row).collect()
}

/// A SQLite error of database `shown`: locked (another process writes), or another one.
fn sqlite_error(shown: &str, source: rusqlite::Error) -> StoreError {
    let path = shown.to_string();
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Locked { path }
        }
        _ => StoreError::Sql { path, source },
    }
}

impl Db {
    /// Opens (creating a SQLite file and its directory if needed) and migrates.
    pub async fn open(target: &DbTarget) -> Result<Db, StoreError> {
        let db = match target {
            DbTarget::Sqlite(path) => Db::open_sqlite(path)?,
            DbTarget::Postgres(url) => Db::open_postgres(url)?,
        };
        db.migrate().await?;
        Ok(db)
    }

    fn open_sqlite(path: &Path) -> Result<Db, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: shown.clone(),
                source,
            })?;
        }
        let conn = rusqlite::Connection::open(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        let db = Db::Sqlite {
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
            path: path.to_path_buf(),
        };
        {
            let Db::Sqlite { conn, .. } = &db else {
                unreachable!()
            };
            let c = conn.try_lock().expect("not shared yet");
            c.busy_timeout(BUSY_TIMEOUT).map_err(|e| db.sqlite_err(e))?;
            c.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
            )
            .map_err(|e| db.sqlite_err(e))?;
        }
        Ok(db)
    }

    fn open_postgres(url: &str) -> Result<Db, StoreError> {
        let shown = redact_url(url);
        let config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::BadUrl {
            db: shown.clone(),
            message: format!("{e}"),
        })?;
        let tls = {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            if let Some(file) = std::env::var_os(CA_FILE_ENV) {
                add_roots(&mut roots, Path::new(&file)).map_err(|message| StoreError::BadUrl {
                    db: shown.clone(),
                    message,
                })?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| StoreError::BadUrl {
                    db: shown.clone(),
                    message: format!("TLS setup: {e}"),
                })?
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_postgres_rustls::MakeRustlsConnect::new(cfg)
        };
        let mgr = deadpool_postgres::Manager::from_config(
            config,
            tls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(mgr)
            .max_size(16)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(PG_WAIT))
            .create_timeout(Some(PG_WAIT))
            .recycle_timeout(Some(PG_WAIT))
            .build()
            .map_err(|e| StoreError::BadUrl {
                db: shown.clone(),
                message: e.to_string(),
            })?;
        Ok(Db::Postgres { pool, shown })
    }

    /// The database as shown to people (a path, or a URL without its password).
    pub fn shown(&self) -> String {
        match self {
            Db::Sqlite { path, .. } => path.display().to_string(),
            Db::Postgres { shown, .. } => shown.clone(),
        }
    }

    /// Whether this is a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres { .. })
    }

    pub(crate) fn sqlite_err(&self, source: rusqlite::Error) -> StoreError {
        sqlite_error(&self.shown(), source)
    }

    pub(crate) fn pg_err(&self, source: tokio_postgres::Error) -> StoreError {
        StoreError::from_pg(self.shown(), source)
    }

    /// A pooled PostgreSQL connection.
    pub(crate) async fn pg_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let Db::Postgres { pool, shown } = self else {
            return Err(StoreError::NeedsPostgres(self.shown()));
        };
        pool.get().await.map_err(|e| StoreError::Unavailable {
            db: shown.clone(),
            message: match e {
                deadpool_postgres::PoolError::Backend(e) => crate::store::pg_message(&e),
                other => other.to_string(),
            },
        })
    }

    /// Runs one statement; returns the rows it changed.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        match self {
            Db::Sqlite { conn, .. } => {
                let c = conn.lock().await;
                sqlite_execute(&c, sql, params).map_err(|e| self.sqlite_err(e))
            }
            Db::Postgres { .. } => {
                let c = self.pg_client().await?;
                pg_exec(&c, sql, params).await.map_err(|e| self.pg_err(e))
            }
        }
    }

    /// Runs a query and returns every row.
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        match self {
            Db::Sqlite { conn, .. } => {
                let c = conn.lock().await;
                sqlite_rows(&c, sql, params).map_err(|e| self.sqlite_err(e))
            }
            Db::Postgres { .. } => {
                let c = self.pg_client().await?;
                let rows = pg_run(&c, sql, params).await.map_err(|e| self.pg_err(e))?;
                pg_rows(&rows).map_err(|e| self.pg_err(e))
            }
        }
    }

    /// The first row of a query, if any.
    pub async fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Starts a write transaction (SQLite: `BEGIN IMMEDIATE`, holding the write lock).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        match self {
            Db::Sqlite { conn, .. } => {
                let c = conn.clone().lock_owned().await;
                c.execute_batch("BEGIN IMMEDIATE")
                    .map_err(|e| self.sqlite_err(e))?;
                Ok(Tx {
                    db: self.clone(),
                    inner: Some(TxInner::Sqlite(c)),
                })
            }
            Db::Postgres { .. } => {
                let c = self.pg_client().await?;
                pg_batch(&c, "BEGIN").await.map_err(|e| self.pg_err(e))?;
                Ok(Tx {
                    db: self.clone(),
                    inner: Some(TxInner::Postgres(Box::new(c))),
                })
            }
        }
    }
}

enum TxInner {
    Sqlite(tokio::sync::OwnedMutexGuard<rusqlite::Connection>),
    Postgres(Box<deadpool_postgres::Object>),
}

/// A write transaction: `commit` makes it durable; dropping it undoes everything.
pub struct Tx {
    db: Db,
    inner: Option<TxInner>,
}

impl Tx {
    /// The database this transaction writes.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Runs one statement; returns the rows it changed.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        match self.inner.as_mut().expect("open") {
            TxInner::Sqlite(c) => sqlite_execute(c, sql, params).map_err(|e| self.db.sqlite_err(e)),
            TxInner::Postgres(c) => pg_exec(c, sql, params).await.map_err(|e| self.db.pg_err(e)),
        }
    }

    /// Runs a query and returns every row.
    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        match self.inner.as_mut().expect("open") {
            TxInner::Sqlite(c) => sqlite_rows(c, sql, params).map_err(|e| self.db.sqlite_err(e)),
            TxInner::Postgres(c) => {
                let rows = pg_run(c, sql, params)
                    .await
                    .map_err(|e| self.db.pg_err(e))?;
                pg_rows(&rows).map_err(|e| self.db.pg_err(e))
            }
        }
    }

    /// The first row of a query, if any.
    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Makes everything durable.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        match self.inner.take().expect("open") {
            TxInner::Sqlite(c) => c.execute_batch("COMMIT").map_err(|e| {
                let _ = c.execute_batch("ROLLBACK");
                self.db.sqlite_err(e)
            }),
            TxInner::Postgres(c) => match pg_batch(&c, "COMMIT").await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // The outcome is unknown to us; never hand this connection to anyone else.
                    let _ = deadpool_postgres::Object::take(*c);
                    Err(self.db.pg_err(e))
                }
            },
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        match self.inner.take() {
            None => {}
            Some(TxInner::Sqlite(c)) => {
                let _ = c.execute_batch("ROLLBACK");
            }
            // Closing the connection makes the server roll the transaction back.
            Some(TxInner::Postgres(c)) => drop(deadpool_postgres::Object::take(*c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_hide_passwords() {
        assert_eq!(
            "x/p.db".parse::<DbTarget>().unwrap(),
            DbTarget::Sqlite("x/p.db".into())
        );
        let t: DbTarget = "postgres://pw:s3cret@db.internal:5432/pixelwatch?password=other"
            .parse()
            .unwrap();
        assert!(t.is_postgres());
        let shown = t.to_string();
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
        assert!(
            shown.contains("pw:***@db.internal:5432/pixelwatch"),
            "{shown}"
        );
    }

    #[test]
    fn parameters_are_rewritten_for_sqlite() {
        assert_eq!(
            sqlite_sql("SELECT $1, $12 WHERE a = $1"),
            "SELECT ?1, ?12 WHERE a = ?1"
        );
    }
}
