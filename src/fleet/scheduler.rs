//! `pixelwatch scheduler`: queues each stored site's scans when its cron schedule makes them due.
//!
//! Invariants:
//! - One scheduler is active: the one holding a session-level PostgreSQL advisory lock on a
//!   connection of its own. When that connection dies (the process was killed, the server
//!   restarted) the lock is gone and a standby takes over within one tick.
//! - Each due time is queued once, also across a failover: the due times of a site and its cursor
//!   (`sites.enqueued_until`, the last due time queued) are written in one transaction, so the
//!   next leader continues exactly where the last commit left off; and `jobs` is unique on
//!   (site, due_at), so even two schedulers that both believe they lead cannot queue one twice.
//! - Due times older than the catch-up window (every scheduler was down for longer) are skipped
//!   with a warning rather than queued as a burst.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{FleetError, pause};
use crate::config::parse_schedule;
use crate::store::{Store, StoreError, jobs, sites};

/// The advisory lock that elects the active scheduler ("pxwsched").
const LEADER_LOCK: i64 = 0x7078_7773_6368_6564;

/// Most due times of one site queued per tick (a per-second schedule after a long pause).
const MAX_PER_TICK: usize = 1000;

/// How a scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// How often the leader looks for due scans (and a standby for a vacant lead).
    pub tick: Duration,
    /// Due times missed by longer than this are skipped.
    pub catch_up: Duration,
    /// Attempts per job.
    pub max_attempts: u32,
}

/// Runs until `shutdown` resolves: stands by, leads when the lead is vacant, queues due scans.
pub async fn run(
    store: Store,
    opts: SchedulerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), FleetError> {
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut standing_by = false;
    // The connection that asks for (and, once granted, holds) the lead; kept while standing by.
    let mut session: Option<deadpool_postgres::ClientWrapper> = None;
    loop {
        match try_lead(&store, &mut session).await {
            Ok(true) => {
                tracing::info!(db = %store.shown(), "leading: this scheduler queues due scans");
                standing_by = false;
                let lead = session.take().expect("a granted lead has its session");
                loop {
                    match enqueue_due(&store, Utc::now(), &opts).await {
                        Ok(n) if n > 0 => tracing::debug!(queued = n, "tick"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot queue due scans; retrying"),
                    }
                    if pause(opts.tick, &mut stop).await {
                        return Ok(());
                    }
                    if lead.simple_query("SELECT 1").await.is_err() {
                        tracing::warn!("lost the connection that holds the lead; standing by");
                        break;
                    }
                }
            }
            Ok(false) => {
                if !standing_by {
                    tracing::info!("another scheduler leads; standing by");
                    standing_by = true;
                }
            }
            Err(e) => {
                session = None;
                tracing::warn!(error = %e, "cannot reach the database; retrying");
            }
        }
        if pause(opts.tick, &mut stop).await {
            return Ok(());
        }
    }
}

/// Takes the lead if it is vacant, on `session`: a connection of its own (out of the pool, made
/// when there is none) that holds the lock for as long as it lives.
async fn try_lead(
    store: &Store,
    session: &mut Option<deadpool_postgres::ClientWrapper>,
) -> Result<bool, StoreError> {
    if session.is_none() {
        *session = Some(deadpool_postgres::Object::take(
            store.db().pg_client().await?,
        ));
    }
    let conn = session.as_ref().expect("just made");
    let row = conn
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .await
        .map_err(|e| store.db().pg_err(e))?;
    Ok(row.get(0))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Queues every due time of every stored site up to `now`; returns how many were queued.
pub async fn enqueue_due(
    store: &Store,
    now: DateTime<Utc>,
    opts: &SchedulerOptions,
) -> Result<usize, StoreError> {
    let floor = now - chrono::Duration::from_std(opts.catch_up).unwrap_or_default();
    let mut queued = 0;
    for site in store.sites().await? {
        let cron = match parse_schedule(&site.schedule) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(site = %site.url, error = %e, "not scheduling this site");
                continue;
            }
        };
        let cursor = site
            .enqueued_until
            .as_deref()
            .or(Some(site.created_at.as_str()))
            .and_then(parse_time)
            .unwrap_or(now);
        let mut from = cursor.max(floor);
        if cursor < floor
            && let Ok(first) = cron.find_next_occurrence(&cursor, false)
            && first <= floor
        {
            tracing::warn!(site = %site.url, since = %first.to_rfc3339(), "due times older than the catch-up window were missed (no scheduler ran); skipping them");
        }
        let mut due = Vec::new();
        while let Ok(next) = cron.find_next_occurrence(&from, false) {
            if next > now || due.len() >= MAX_PER_TICK {
                break;
            }
            due.push(next);
            from = next;
        }
        let Some(last) = due.last() else { continue };
        let last = last.to_rfc3339();
        let mut tx = store.db().begin().await?;
        for t in &due {
            let at = t.to_rfc3339();
            if jobs::enqueue_in(&mut tx, &site.url, &at, &site.settings, opts.max_attempts).await? {
                tracing::info!(site = %site.url, due = %at, "queued");
                queued += 1;
            }
        }
        sites::set_enqueued_until_in(&mut tx, &site.url, &last).await?;
        tx.commit().await?;
    }
    Ok(queued)
}
