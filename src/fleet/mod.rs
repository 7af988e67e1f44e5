//! A fleet: any number of stateless `pixelwatch worker` processes and `pixelwatch scheduler`
//! processes sharing one PostgreSQL database as store and work queue.
//!
//! - [`scheduler`]: the one active scheduler (a PostgreSQL advisory lock elects it) queues each
//!   stored site's scans when its cron schedule makes them due; each due time is queued once.
//! - [`worker`]: claims due jobs (`SKIP LOCKED`), scans with a lease it renews, and finishes by
//!   storing the scan, its drift and the alert decision in one transaction; then delivers the
//!   alert. A worker that dies loses its lease and the job runs again elsewhere.

pub mod metrics;
pub mod scheduler;
pub mod worker;

use crate::store::{DbTarget, StoreError};

/// Why a fleet process could not start or keep going.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "`pixelwatch {command}` needs a PostgreSQL store (--db postgres://... or PIXELWATCH_DB); \
         '{db}' is a SQLite file. On one machine, `pixelwatch watch --config FILE` schedules \
         scans without a server"
    )]
    NeedsPostgres { command: &'static str, db: String },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Alert(#[from] crate::alert::AlertError),
}

impl FleetError {
    /// Whether the error is the user's input (exit 3) rather than a run failure (exit 1).
    pub fn is_usage(&self) -> bool {
        match self {
            FleetError::NeedsPostgres { .. } | FleetError::Alert(_) => true,
            FleetError::Store(e) => e.is_usage(),
            FleetError::Metrics { .. } => false,
        }
    }
}

/// Refuses a SQLite store for a fleet command.
pub fn require_postgres(db: &DbTarget, command: &'static str) -> Result<(), FleetError> {
    if db.is_postgres() {
        Ok(())
    } else {
        Err(FleetError::NeedsPostgres {
            command,
            db: db.to_string(),
        })
    }
}

/// This process, as named in `jobs.lease_owner`: host name and pid.
pub fn process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Waits `d`, or less when `stop` fires; true when it fired.
pub(crate) async fn pause(
    d: std::time::Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}
