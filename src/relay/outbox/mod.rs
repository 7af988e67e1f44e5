//! Durable outbox: a single writer thread that group-commits accepts, consent, nonces and
//! delivery state.
//!
//! Durability invariants:
//! 1. An event is *accepted* (HTTP 202) only after the transaction holding its sanitized outbox
//!    rows (one per destination) and its audit row has committed. The writer replies to a
//!    request only after `COMMIT` returns; if the commit fails, every request in the group gets
//!    an error (HTTP 503).
//! 2. A row leaves the outbox only after its destination acknowledged it, or it moves to `dead`
//!    after a terminal answer or too many attempts. A crash at any point leaves the row
//!    `pending`, so a restart re-sends it with the same `event_id` (at-least-once; both
//!    platforms de-duplicate on event_id). Destinations are independent: one may be down while
//!    another delivers.
//! 3. A signed request's nonce is written in the same transaction as its effect, so a replay
//!    is refused and changes nothing, before and after a restart.
//! 4. Journal mode is WAL. With `synchronous = FULL` (default) a commit survives power loss;
//!    with `synchronous = NORMAL` it survives a process crash or `kill -9` but the last commits
//!    may be lost on power loss. This is a config choice (`database.synchronous`).
//!
//! What is stored: only strings the relay built or allowlisted. The raw body is never written
//! (it is parsed in memory by the handler and dropped); outbox payloads are the events built
//! by [`super::sanitize`]; audit rows hold reason codes, config names, mapped standard events,
//! keyed hashes and lengths of unknown field names, ids that passed [`super::ids`]; consent rows
//! hold hashed keys and configured `source`/`policy_version`/`purposes` values; nonces are
//! hashes. A caller's free text has no column to go to.
//!
//! Group commit: the writer takes one command, then drains whatever else is queued (up to
//! [`MAX_GROUP`]) and applies them all in one transaction, then answers each caller after
//! `COMMIT` returned. A command only reads its inputs, so it can be applied twice: the group
//! is applied first without savepoints; if one command fails, that transaction is rolled back
//! and the group applied again with each command in its own savepoint, so the failing one is
//! undone alone and the others still commit (`commit_group`).
//!
//! Delivery is one `delivery` row per acknowledged request (schema v3), written in the
//! transaction that deletes the delivered outbox rows and listing exactly the audit rows of
//! the rows it deleted; audit rows are not rewritten per delivered event.
//! `super::audit` reads the two together.
//!
//! Claims (reading a destination's due rows) run on a read connection of their own, not on
//! the writer: WAL lets them read committed rows while the writer commits.
//!
//! No index is written per accepted event (schema v4): an outbox row goes into the table
//! alone. That an event id is already in a destination's outbox is known from the writer's
//! memory ([`pending`], rebuilt from the table at start); a row's first attempt is claimed in
//! id order from where that destination's claims got to (the writer hands out ids, so they
//! only grow while the process runs); only rows waiting for a retry, and dead letters, are in
//! an index. That is why one relay process owns a database ([`Outbox::open`] takes a lock
//! file); the operator commands only read it, or turn dead letters into retries.

mod pending;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::config::Synchronous;
use super::consent::NewConsent;
use super::db;
use super::error::StoreError;
use super::metrics::Metrics;

/// Largest number of commands committed together.
pub const MAX_GROUP: usize = 512;

/// How often expired nonces are deleted.
const NONCE_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Final or interim decision on an event, as stored in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Accepted into the outbox for at least one destination, not yet delivered everywhere.
    Queued,
    /// Acknowledged by every destination it was queued for.
    Delivered,
    /// Not forwarded by policy (consent, mapping, time window...).
    Dropped,
    /// Not forwarded because the PHI detector matched.
    Blocked,
    /// At least one destination gave up after a terminal error or too many attempts.
    DeadLettered,
}

impl Decision {
    /// Stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Queued => "queued",
            Decision::Delivered => "delivered",
            Decision::Dropped => "dropped",
            Decision::Blocked => "blocked",
            Decision::DeadLettered => "dead_lettered",
        }
    }
}

/// A sanitized event to enqueue for one destination.
#[derive(Debug, Clone)]
pub struct NewOutboxRow {
    /// Outgoing event id.
    pub event_id: String,
    /// Test event code, or `None` for live.
    pub test_event_code: Option<String>,
    /// Sanitized event (JSON), exactly as sent.
    pub payload: String,
    /// Unix seconds.
    pub event_time: i64,
}

/// What happened to an event for one destination at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationState {
    /// Queued (an outbox row goes with it).
    Queued,
    /// Not forwarded to this destination by policy.
    Dropped,
    /// Blocked by the PHI detector for this destination.
    Blocked,
}

impl DestinationState {
    fn as_str(self) -> &'static str {
        match self {
            DestinationState::Queued => "queued",
            DestinationState::Dropped => "dropped",
            DestinationState::Blocked => "blocked",
        }
    }
}

/// One destination's part of an audit record.
#[derive(Debug, Clone)]
pub struct DestinationEntry {
    /// Destination name (from config).
    pub name: Arc<str>,
    /// State at ingest.
    pub state: DestinationState,
    /// Mapped standard event.
    pub event: Option<String>,
    /// Outbox row (only with [`DestinationState::Queued`]).
    pub row: Option<NewOutboxRow>,
}

/// One audit record, plus the outbox rows when the event is queued.
#[derive(Debug, Clone)]
pub struct NewAudit {
    /// Receive time, Unix ms.
    pub received_ms: i64,
    /// `browser` or `server`.
    pub source: &'static str,
    /// Outgoing event id when known.
    pub event_id: Option<String>,
    /// Mapped event name (of the first destination that has one).
    pub event: Option<String>,
    /// Decision.
    pub decision: Decision,
    /// Reason codes (destination-specific ones prefixed with the destination name).
    pub reasons: Vec<String>,
    /// Consent record consulted.
    pub consent_id: Option<i64>,
    /// Legal basis used instead of consent.
    pub legal_basis: Option<String>,
    /// Per destination, when the event reached the destinations.
    pub destinations: Vec<DestinationEntry>,
}

/// Result of enqueueing one event for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored; the event is accepted for this destination.
    Accepted,
    /// The same event id is already pending for this destination: nothing new stored.
    Duplicate,
    /// Nothing queued (dropped or blocked for this destination).
    Recorded,
}

/// A signed request's nonce: stored with its effect; a second use is refused.
#[derive(Debug, Clone)]
pub struct Nonce {
    /// SHA-256 of the signature.
    pub hash: String,
    /// When the timestamp can no longer pass the replay window, Unix ms.
    pub expires_ms: i64,
}

/// Outcome of a command guarded by a nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored<T> {
    /// Applied and committed.
    Done(T),
    /// The nonce was seen before: nothing was applied.
    Replayed,
}

/// A pending row handed to a dispatcher.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Outbox row id.
    pub id: i64,
    /// Outgoing event id.
    pub event_id: String,
    /// Payload JSON.
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Audit row id.
    pub audit_id: i64,
    /// Enqueue time, Unix ms.
    pub created_ms: i64,
    /// Event time, Unix seconds (None for rows from schema v1).
    pub event_time: Option<i64>,
}

/// What recording an outcome needs of a claimed row (not its payload).
#[derive(Debug, Clone, Copy)]
pub struct RowRef {
    /// Outbox row id.
    pub id: i64,
    /// Audit row id.
    pub audit_id: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Enqueue time, Unix ms (a retry is always scheduled after it).
    pub created_ms: i64,
}

/// A claimed batch: all rows share one destination and one test event code (or none).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Test event code shared by the batch.
    pub test_event_code: Option<String>,
    /// Rows.
    pub rows: Vec<Claimed>,
}

/// Retry timing owned by the outbox, the same for every destination.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay, ms.
    pub base_ms: u64,
    /// Longest delay, ms.
    pub cap_ms: u64,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1`: exponential, capped, with jitter in [d/2, d].
    pub fn delay_ms(&self, attempts: u32) -> u64 {
        let exp = self
            .base_ms
            .saturating_mul(1u64 << attempts.min(32))
            .min(self.cap_ms);
        rand::rng().random_range(exp / 2..=exp)
    }
}

/// A delivery outcome to record for some rows of one destination.
#[derive(Debug, Clone)]
pub enum Record {
    /// Acknowledged; `counted` is `(received, sent)` when the destination counted fewer.
    Delivered {
        /// Destination's request id.
        request_id: String,
        /// `(received, sent)` when the destination counted fewer events than sent.
        shortfall: Option<(u64, u64)>,
    },
    /// Retry later (rows at `max_attempts` are dead-lettered instead).
    Retry {
        /// Reason code.
        reason: String,
        /// Timing.
        policy: RetryPolicy,
    },
    /// Dead-letter now.
    Dead {
        /// Reason code.
        reason: String,
    },
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One caller's command: applied against the group's transaction, answered after the commit.
trait Command: Send {
    /// Apply against the open transaction and keep the result. May be called a second time
    /// (after the group was rolled back because another command failed), so it only reads the
    /// command's inputs.
    fn apply(&mut self, c: &store::Db<'_>, err: &dyn Fn(rusqlite::Error) -> StoreError);
    /// Whether the last [`Command::apply`] failed.
    fn failed(&self) -> bool;
    /// Answer the caller: the kept result if the group committed, the commit error otherwise.
    fn answer(self: Box<Self>, commit: Option<&StoreError>);
}

/// A [`Command`] from a function of the connection and the caller's reply channel.
struct Call<T, F> {
    f: F,
    result: Option<Result<T, StoreError>>,
    reply: Reply<T>,
}

impl<T, F> Command for Call<T, F>
where
    T: Send,
    F: Fn(&store::Db<'_>) -> rusqlite::Result<T> + Send,
{
    fn apply(&mut self, c: &store::Db<'_>, err: &dyn Fn(rusqlite::Error) -> StoreError) {
        self.result = Some((self.f)(c).map_err(err));
    }

    fn failed(&self) -> bool {
        matches!(self.result, Some(Err(_)))
    }

    fn answer(self: Box<Self>, commit: Option<&StoreError>) {
        let result = match (commit, self.result) {
            (Some(e), _) => Err(StoreError::Commit(e.to_string())),
            (None, Some(r)) => r,
            (None, None) => Err(StoreError::WriterGone),
        };
        let _ = self.reply.send(result);
    }
}

type Cmd = Box<dyn Command>;

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Cmd>,
    /// A read connection for claims: reading due rows (payloads included) is not the writer's
    /// work. A dispatcher claims again only after its previous batch was recorded (committed),
    /// so a read sees every outcome it must.
    claims: Arc<std::sync::Mutex<Claims>>,
    path: Arc<Path>,
}

/// The claims connection, and per destination the id after which its first attempts are read
/// (in memory: a restart reads from the start again).
struct Claims {
    conn: Connection,
    after: HashMap<Arc<str>, i64>,
}

/// The writer thread; join it after dropping every [`Outbox`] handle.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Wait until the writer has applied every queued command and closed the database.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Outbox {
    /// Open the database and start the writer thread. Returns the handle, the thread, the
    /// per-installation id salt and a read connection for loading state.
    pub fn open(
        path: &Path,
        sync: Synchronous,
        metrics: Arc<Metrics>,
    ) -> Result<(Outbox, WriterThread, Vec<u8>, Connection), StoreError> {
        let lock = lock(path)?;
        let conn = db::open(path, sync)?;
        // Every statement the writer runs stays prepared (the default cache holds 16).
        conn.set_prepared_statement_cache_capacity(64);
        let p = path.to_path_buf();
        let e = move |source| StoreError::Sqlite {
            path: p.display().to_string(),
            source,
        };
        // What the outbox holds, and the statements the writer holds prepared ([`store::Db`]):
        // fail here, not in the thread.
        let pending = store::Db::new(&conn, pending::Pending::load(&conn).map_err(&e)?)
            .map_err(&e)?
            .into_pending();
        let salt: Vec<u8> = rand::rng().random::<[u8; 32]>().to_vec();
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('id_salt', ?1)",
            [&salt],
        )
        .map_err(&e)?;
        let salt: Vec<u8> = conn
            .query_row("SELECT value FROM meta WHERE key = 'id_salt'", [], |r| {
                r.get(0)
            })
            .map_err(&e)?;
        // WAL checkpoints run in the writer (SQLite's default: every 1000 pages). A separate
        // checkpointer thread measured worse: its database fsync queues behind and in front of
        // the WAL fsync on the same disk and made p99 spikes of ~300 ms.
        let reader = db::open(path, sync)?;
        let (tx, rx) = mpsc::channel(4096);
        let claims = Arc::new(std::sync::Mutex::new(Claims {
            conn: db::open(path, sync)?,
            after: HashMap::new(),
        }));
        let shown: Arc<Path> = Arc::from(path);
        let path: PathBuf = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || {
                writer_loop(conn, pending, rx, path, metrics);
                // Held until the writer closed its connection; the OS drops it if we die.
                drop(lock);
            })
            .map_err(|_| StoreError::WriterGone)?;
        let outbox = Outbox {
            tx,
            claims,
            path: shown,
        };
        Ok((outbox, WriterThread(writer), salt, reader))
    }

    /// Run `f` in the writer's next group commit; the answer comes once that group committed.
    async fn call<T: Send + 'static>(
        &self,
        f: impl Fn(&store::Db<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let cmd: Cmd = Box::new(Call {
            f,
            result: None,
            reply,
        });
        self.tx
            .send(cmd)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Store audit rows (and outbox rows) in one committed transaction, with the request's
    /// nonce when it is signed. Returns, per audit row, the result per destination entry.
    pub async fn ingest(
        &self,
        rows: Vec<NewAudit>,
        nonce: Option<Nonce>,
    ) -> Result<Stored<Vec<Vec<Enqueued>>>, StoreError> {
        self.call(move |c| {
            store::guarded(c, nonce.as_ref(), |c| {
                rows.iter().map(|a| store::insert_audit(c, a)).collect()
            })
        })
        .await
    }

    /// Store a consent record (with the request's nonce when signed); returns its id.
    pub async fn consent(
        &self,
        c: NewConsent,
        nonce: Option<Nonce>,
    ) -> Result<Stored<i64>, StoreError> {
        self.call(move |conn| {
            store::guarded(conn, nonce.as_ref(), |conn| store::insert_consent(conn, &c))
        })
        .await
    }

    /// Oldest due rows of one destination, up to `limit`, sharing one test event code.
    pub async fn claim(
        &self,
        destination: &Arc<str>,
        limit: usize,
        now_ms: i64,
    ) -> Result<Batch, StoreError> {
        let dest = destination.clone();
        let (claims, path) = (self.claims.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another claim panicked; the connection is fine.
            let mut c = claims.lock().unwrap_or_else(|p| p.into_inner());
            let Claims { conn, after } = &mut *c;
            let after = after.entry(dest.clone()).or_insert(0);
            store::claim(conn, &dest, limit, now_ms, after).map_err(|source| StoreError::Sqlite {
                path: path.display().to_string(),
                source,
            })
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    /// Record a delivery outcome for rows of one destination. Returns how many rows were
    /// dead-lettered (by a `Dead` record, or a `Retry` past `max_attempts`). Rows whose outcome
    /// could not be recorded are claimed again (they stay pending, never tried or not).
    pub async fn record(
        &self,
        destination: &Arc<str>,
        rows: &[Claimed],
        outcome: Record,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let rows: Vec<RowRef> = rows
            .iter()
            .map(|c| RowRef {
                id: c.id,
                audit_id: c.audit_id,
                attempts: c.attempts,
                created_ms: c.created_ms,
            })
            .collect();
        let dest = destination.clone();
        let lowest = rows.iter().map(|r| r.id).min();
        let recorded = self
            .call(move |c| store::record(c, &dest, &rows, &outcome, now_ms))
            .await;
        if let (Err(_), Some(lowest)) = (&recorded, lowest) {
            let mut c = self.claims.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(after) = c.after.get_mut(destination) {
                *after = (*after).min(lowest - 1);
            }
        }
        recorded
    }

    /// Pending rows per destination.
    pub async fn depth(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.call(store::depth).await
    }

    /// Check that the database accepts a write lock.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| {
            c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('ping', x'00')")?
                .execute([])
                .map(|_| ())
        })
        .await
    }
}

/// Only one writer per database: what it keeps in memory ([`pending`]) and the row ids it
/// hands out assume no other process adds or deletes outbox rows. An advisory lock on
/// `<database>.lock`, held for the writer's life (the OS releases it if the process dies).
/// The operator commands (`audit`, `dead-letters`, `replay`) do not take it.
fn lock(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let shown = || lock_path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StoreError::Lock {
            path: path.display().to_string(),
            lock: shown(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: path.display().to_string(),
            lock: shown(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Lock {
            path: path.display().to_string(),
            lock: shown(),
            source,
        }),
    }
}

fn writer_loop(
    conn: Connection,
    pending: pending::Pending,
    mut rx: mpsc::Receiver<Cmd>,
    path: PathBuf,
    metrics: Arc<Metrics>,
) {
    let err = |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let db = match store::Db::new(&conn, pending) {
        Ok(db) => db,
        Err(e) => {
            // Checked in `Outbox::open`; callers get `WriterGone`.
            tracing::error!(error = %err(e), "outbox writer cannot prepare its statements");
            return;
        }
    };
    let mut group: Vec<Cmd> = Vec::with_capacity(MAX_GROUP);
    let mut last_prune = Instant::now();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        metrics
            .group_commands
            .fetch_add(group.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let prune = last_prune.elapsed() >= NONCE_PRUNE_EVERY;
        let result = commit_group(&db, &mut group, prune, &err);
        // What the outbox holds in memory follows the transaction: kept if it committed,
        // undone if not (a transaction that failed anywhere is rolled back when dropped).
        match &result {
            Ok(()) => db.pending.borrow_mut().committed(),
            Err(_) => db.pending.borrow_mut().rolled_back(),
        }
        if prune && result.is_ok() {
            last_prune = Instant::now();
        }
        metrics.commit_latency.observe(started.elapsed());
        metrics
            .group_commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let failure = result.err().map(err);
        if let Some(e) = &failure {
            tracing::error!(error = %e, "outbox commit failed");
        }
        for cmd in group.drain(..) {
            cmd.answer(failure.as_ref());
        }
    }
    tracing::debug!("outbox writer stopped");
}

/// Apply a group in one transaction and commit it.
///
/// First without savepoints: a savepoint per command costs two statements and a copy of every
/// page the command touches. If a command fails, the whole transaction is rolled back and the
/// group applied again with each command in its own savepoint, so the failing one is undone
/// alone and the others still commit. Commands only read their inputs, so applying one twice
/// is the same as applying it once.
fn commit_group(
    db: &store::Db<'_>,
    group: &mut [Cmd],
    prune: bool,
    err: &dyn Fn(rusqlite::Error) -> StoreError,
) -> rusqlite::Result<()> {
    // The writer is the connection's only user, so a transaction that borrows it shared (the
    // held statements borrow it too) cannot overlap another.
    let tx = db.unchecked_transaction()?;
    let mut failed = false;
    for cmd in group.iter_mut() {
        cmd.apply(db, err);
        if cmd.failed() {
            // Stop here: the rest would be applied again anyway, and some errors (disk full,
            // I/O) end the transaction, after which a statement would run in autocommit.
            failed = true;
            break;
        }
    }
    if failed {
        tx.rollback()?;
        db.pending.borrow_mut().rolled_back();
        let tx = db.unchecked_transaction()?;
        for cmd in group.iter_mut() {
            store::in_savepoint(db, |c| {
                cmd.apply(c, err);
                !cmd.failed()
            })?;
        }
        return finish(tx, prune);
    }
    finish(tx, prune)
}

fn finish(tx: rusqlite::Transaction<'_>, prune: bool) -> rusqlite::Result<()> {
    if prune {
        store::prune_nonces(&tx, chrono::Utc::now().timestamp_millis())?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests;
