//! Persistence by domain over one connection layer ([`db`]): scans, baselines, sites and (on
//! PostgreSQL) the job queue. A SQLite file is the embedded default; a `postgres://` URL makes
//! the same store shared by a fleet. Alert history lives next to alerting (`alert::history`),
//! watch runs next to watching (`watch::runs`).

pub mod baselines;
pub mod db;
pub mod jobs;
pub mod scans;
pub mod sites;

pub use db::{Db, DbTarget};
pub use scans::ScanRow;
pub use sites::SiteRow;

/// Database errors, each naming the database (a path, or a URL without its password).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the directory for database '{path}': {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open database '{path}': {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "database '{path}' is locked by another process (waited {}s); try again when it finishes",
        db::BUSY_TIMEOUT.as_secs()
    )]
    Locked { path: String },
    #[error("database '{path}': migration {name} failed: {message}")]
    Migration {
        path: String,
        name: String,
        message: String,
    },
    #[error(
        "database '{path}' was written by a newer pixelwatch (schema {found}, this one knows {known})"
    )]
    TooNew {
        path: String,
        found: i64,
        known: usize,
    },
    #[error("database '{path}': {source}")]
    Sql {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database '{db}': {message}")]
    Postgres {
        db: String,
        message: String,
        /// The SQLSTATE, e.g. "23505" for a unique violation.
        code: String,
    },
    #[error("database '{db}' cannot be reached: {message}")]
    Unavailable { db: String, message: String },
    #[error("database URL '{db}': {message}")]
    BadUrl { db: String, message: String },
    #[error("database '{0}' is SQLite; the job queue needs PostgreSQL (--db postgres://...)")]
    NeedsPostgres(String),
    #[error("unexpected value in the database: {0}")]
    Decode(String),
    #[error("no scan with id {0}")]
    NotFound(i64),
    #[error("no scans of {0} yet")]
    NoScans(String),
    #[error("no approved baseline for {0}; run `pixelwatch baseline approve --site {0}`")]
    NoBaseline(String),
    #[error("no site {0} in the store; add it with `pixelwatch sites add {0} --schedule CRON`")]
    NoSite(String),
    #[error("site {0} is already stored; change it with `pixelwatch sites set {0} ...`")]
    SiteExists(String),
    #[error("database '{path}': scan {id} has an unreadable report: {source}")]
    Corrupt {
        path: String,
        id: i64,
        source: serde_json::Error,
    },
}

/// A PostgreSQL error as one line: the server's message with its detail, or the client's.
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{} ({detail})", d.message()),
            None => d.message().to_string(),
        },
        None => {
            let mut m = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                m.push_str(": ");
                m.push_str(&s.to_string());
                src = s.source();
            }
            m
        }
    }
}

impl StoreError {
    /// A server error (a constraint, a bad statement) or, when the connection is gone, the
    /// database being unreachable.
    pub(crate) fn from_pg(db: String, e: tokio_postgres::Error) -> StoreError {
        if e.as_db_error().is_none() || e.is_closed() {
            StoreError::Unavailable {
                db,
                message: pg_message(&e),
            }
        } else {
            StoreError::Postgres {
                db,
                message: pg_message(&e),
                code: e.code().map(|c| c.code().to_string()).unwrap_or_default(),
            }
        }
    }

    /// Whether waiting and trying again may succeed (the server is down or restarting, the
    /// SQLite file is locked).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Locked { .. }
        )
    }

    /// Whether a unique constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Postgres { code, .. } if code == "23505")
    }

    /// Whether the error is the user's input (exit 3) rather than a run failure (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound(_)
                | StoreError::NoScans(_)
                | StoreError::NoBaseline(_)
                | StoreError::NoSite(_)
                | StoreError::SiteExists(_)
                | StoreError::BadUrl { .. }
                | StoreError::NeedsPostgres(_)
        )
    }
}

/// An open store.
#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database.
    pub async fn open(target: impl Into<DbTarget>) -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::open(&target.into()).await?,
        })
    }

    /// The connection, for the domain modules.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The database as shown to people (a path, or a URL without its password).
    pub fn shown(&self) -> String {
        self.db.shown()
    }
}

/// Now, as stored in text columns (RFC 3339, UTC).
pub(crate) fn now() -> String {
    crate::scan::now_rfc3339()
}
