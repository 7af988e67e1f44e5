//! Durable outbox: a single writer thread that group-commits accepts, consent and delivery state.
//!
//! Durability invariants:
//! 1. An event is *accepted* (HTTP 202) only after the transaction holding its sanitized outbox
//!    row and its audit row has committed. The writer replies to a request only after `COMMIT`
//!    returns; if the commit fails, every request in the group gets an error (HTTP 503).
//! 2. Only the sanitized outgoing event is stored. The raw incoming body is never written: it is
//!    parsed in memory by the request handler and dropped.
//! 3. A row leaves the outbox only after the destination acknowledged it (`code` 0), or it moves
//!    to `dead` after a terminal answer or too many attempts. A crash at any point leaves the row
//!    `pending`, so a restart re-sends it with the same `event_id` (at-least-once; TikTok
//!    de-duplicates on pixel + event + event_id within 48 h).
//! 4. Journal mode is WAL. With `synchronous = FULL` (default) a commit survives power loss;
//!    with `synchronous = NORMAL` it survives a process crash or `kill -9` but the last commits
//!    may be lost on power loss. This is a config choice (`database.synchronous`).
//!
//! Group commit: the writer takes one command, then drains whatever else is queued (up to
//! [`MAX_GROUP`]) and applies them all in one transaction, each inside its own savepoint so one
//! failing command does not fail the others.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::config::Synchronous;
use super::consent::NewConsent;
use super::db;
use super::error::StoreError;
use super::metrics::Metrics;

/// Largest number of commands committed together.
pub const MAX_GROUP: usize = 512;

/// Final or interim decision on an event, as stored in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Accepted into the outbox, not yet delivered.
    Queued,
    /// Acknowledged by the destination.
    Delivered,
    /// Not forwarded by policy (consent, mapping, time window...).
    Dropped,
    /// Not forwarded because the PHI detector matched.
    Blocked,
    /// Gave up after a terminal error or too many attempts.
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

/// A sanitized event to enqueue.
#[derive(Debug, Clone)]
pub struct NewOutboxRow {
    /// Outgoing event id.
    pub event_id: String,
    /// Test event code, or `None` for live.
    pub test_event_code: Option<String>,
    /// Sanitized `data[]` element (JSON).
    pub payload: String,
}

/// One audit record, plus the outbox row when the event is queued.
#[derive(Debug, Clone)]
pub struct NewAudit {
    /// Receive time, Unix ms.
    pub received_ms: i64,
    /// `browser` or `server`.
    pub source: &'static str,
    /// Outgoing event id when known.
    pub event_id: Option<String>,
    /// Mapped event name.
    pub event: Option<String>,
    /// Decision.
    pub decision: Decision,
    /// Reason codes and field names.
    pub reasons: Vec<String>,
    /// Consent record consulted.
    pub consent_id: Option<i64>,
    /// Legal basis used instead of consent.
    pub legal_basis: Option<String>,
    /// Outbox row (only with `Decision::Queued`).
    pub outbox: Option<NewOutboxRow>,
}

/// Result of enqueueing one audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored; the event is accepted.
    Accepted,
    /// The same event id is already pending: nothing new stored beyond the audit row.
    Duplicate,
    /// Audit row stored for a dropped or blocked event.
    Recorded,
}

/// A pending row handed to the dispatcher.
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
}

/// A claimed batch: all rows share one test event code (or none).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Test event code shared by the batch.
    pub test_event_code: Option<String>,
    /// Rows.
    pub rows: Vec<Claimed>,
}

/// Retry timing owned by the outbox.
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
    /// Delay before attempt `attempts + 1`: exponential, capped, with full jitter in [d/2, d].
    pub fn delay_ms(&self, attempts: u32) -> u64 {
        let exp = self
            .base_ms
            .saturating_mul(1u64 << attempts.min(32))
            .min(self.cap_ms);
        rand::rng().random_range(exp / 2..=exp)
    }
}

enum Cmd {
    Ingest(
        Vec<NewAudit>,
        oneshot::Sender<Result<Vec<Enqueued>, StoreError>>,
    ),
    Consent(NewConsent, oneshot::Sender<Result<i64, StoreError>>),
    Claim(usize, i64, oneshot::Sender<Result<Batch, StoreError>>),
    Delivered(
        Vec<(i64, i64)>,
        String,
        i64,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Retry(
        Vec<(i64, i64, u32)>,
        String,
        RetryPolicy,
        i64,
        oneshot::Sender<Result<u64, StoreError>>,
    ),
    Dead(
        Vec<(i64, i64)>,
        String,
        i64,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Depth(oneshot::Sender<Result<i64, StoreError>>),
    Ping(oneshot::Sender<Result<(), StoreError>>),
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Cmd>,
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
        let conn = db::open(path, sync)?;
        let p = path.to_path_buf();
        let e = move |source| StoreError::Sqlite {
            path: p.display().to_string(),
            source,
        };
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
        let path: PathBuf = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer_loop(conn, rx, path, metrics))
            .map_err(|_| StoreError::WriterGone)?;
        Ok((Outbox { tx }, WriterThread(writer), salt, reader))
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Cmd,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Store audit rows (and outbox rows) in one committed transaction.
    pub async fn ingest(&self, rows: Vec<NewAudit>) -> Result<Vec<Enqueued>, StoreError> {
        self.call(|r| Cmd::Ingest(rows, r)).await
    }

    /// Store a consent record; returns its id.
    pub async fn consent(&self, c: NewConsent) -> Result<i64, StoreError> {
        self.call(|r| Cmd::Consent(c, r)).await
    }

    /// Oldest due rows, up to `limit`, sharing one test event code.
    pub async fn claim(&self, limit: usize, now_ms: i64) -> Result<Batch, StoreError> {
        self.call(|r| Cmd::Claim(limit, now_ms, r)).await
    }

    /// Delete delivered rows and mark their audit rows with the destination's request id.
    pub async fn delivered(
        &self,
        rows: &[Claimed],
        request_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let ids = rows.iter().map(|c| (c.id, c.audit_id)).collect();
        self.call(|r| Cmd::Delivered(ids, request_id.to_string(), now_ms, r))
            .await
    }

    /// Schedule a retry; rows past `max_attempts` are dead-lettered. Returns how many died.
    pub async fn retry(
        &self,
        rows: &[Claimed],
        reason: &str,
        policy: RetryPolicy,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let ids = rows
            .iter()
            .map(|c| (c.id, c.audit_id, c.attempts))
            .collect();
        self.call(|r| Cmd::Retry(ids, reason.to_string(), policy, now_ms, r))
            .await
    }

    /// Move rows to the dead letter.
    pub async fn dead(
        &self,
        rows: &[Claimed],
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let ids = rows.iter().map(|c| (c.id, c.audit_id)).collect();
        self.call(|r| Cmd::Dead(ids, reason.to_string(), now_ms, r))
            .await
    }

    /// Number of pending rows.
    pub async fn depth(&self) -> Result<i64, StoreError> {
        self.call(Cmd::Depth).await
    }

    /// Check that the database accepts a write lock.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(Cmd::Ping).await
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Cmd>,
    path: PathBuf,
    metrics: Arc<Metrics>,
) {
    let err = |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        metrics
            .group_commands
            .fetch_add(group.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut replies: Vec<Reply> = Vec::with_capacity(group.len());
        let result = (|| -> Result<(), rusqlite::Error> {
            let mut tx = conn.transaction()?;
            for cmd in group.drain(..) {
                replies.push(apply(&mut tx, cmd, &err));
            }
            tx.commit()
        })();
        metrics.commit_latency.observe(started.elapsed());
        metrics
            .group_commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // If BEGIN failed nothing was drained: dropping the commands fails their callers.
        group.clear();
        let failure = result.err().map(err);
        if let Some(e) = &failure {
            tracing::error!(error = %e, "outbox commit failed");
        }
        for reply in replies {
            reply(failure.as_ref());
        }
    }
    tracing::debug!("outbox writer stopped");
}

type Reply = Box<dyn FnOnce(Option<&StoreError>)>;

fn reply_with<T: Send + 'static>(
    tx: oneshot::Sender<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> Reply {
    Box::new(move |commit_err: Option<&StoreError>| {
        let _ = tx.send(match commit_err {
            Some(e) => Err(StoreError::Commit(e.to_string())),
            None => result,
        });
    })
}

fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&rusqlite::Savepoint<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let sp = tx.savepoint()?;
    let v = f(&sp)?;
    sp.commit()?;
    Ok(v)
}

fn apply(
    tx: &mut rusqlite::Transaction<'_>,
    cmd: Cmd,
    err: &dyn Fn(rusqlite::Error) -> StoreError,
) -> Reply {
    match cmd {
        Cmd::Ingest(rows, r) => {
            let res = in_savepoint(tx, |c| rows.iter().map(|a| insert_audit(c, a)).collect());
            reply_with(r, res.map_err(err))
        }
        Cmd::Consent(n, r) => {
            let res = in_savepoint(tx, |c| {
                c.prepare_cached(
                    "INSERT INTO consent (key_hash, granted, purposes, source, policy_version, gpc, decided_at, recorded_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    n.key_hash,
                    n.granted,
                    serde_json::to_string(&n.purposes).unwrap_or_else(|_| "[]".into()),
                    n.source,
                    n.policy_version,
                    n.gpc,
                    n.decided_at,
                    chrono::Utc::now().timestamp_millis()
                ])?;
                Ok(c.last_insert_rowid())
            });
            reply_with(r, res.map_err(err))
        }
        Cmd::Claim(limit, now, r) => reply_with(r, claim(tx, limit, now).map_err(err)),
        Cmd::Delivered(ids, request_id, now, r) => {
            let res = in_savepoint(tx, |c| {
                // Integer ids only, so building the IN list is injection-free.
                for chunk in ids.chunks(500) {
                    c.execute(
                        &format!(
                            "DELETE FROM outbox WHERE id IN ({})",
                            id_list(chunk.iter().map(|x| x.0))
                        ),
                        [],
                    )?;
                    c.execute(
                        &format!(
                            "UPDATE audit SET decision = 'delivered', request_id = ?1, updated_ms = ?2 WHERE id IN ({})",
                            id_list(chunk.iter().map(|x| x.1))
                        ),
                        params![request_id, now],
                    )?;
                }
                Ok(())
            });
            reply_with(r, res.map_err(err))
        }
        Cmd::Retry(ids, reason, policy, now, r) => {
            let res = in_savepoint(tx, |c| {
                let mut died = 0;
                for (id, audit, attempts) in &ids {
                    let attempts = attempts + 1;
                    if attempts >= policy.max_attempts {
                        died += 1;
                        mark_dead(c, *id, *audit, &format!("{reason};max_attempts"), now)?;
                    } else {
                        let next = now + policy.delay_ms(attempts - 1) as i64;
                        c.prepare_cached(
                            "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 WHERE id = ?1",
                        )?
                        .execute(params![id, attempts, next, reason])?;
                    }
                }
                Ok(died)
            });
            reply_with(r, res.map_err(err))
        }
        Cmd::Dead(ids, reason, now, r) => {
            let res = in_savepoint(tx, |c| {
                for (id, audit) in &ids {
                    mark_dead(c, *id, *audit, &reason, now)?;
                }
                Ok(())
            });
            reply_with(r, res.map_err(err))
        }
        Cmd::Depth(r) => {
            let res = tx.query_row(
                "SELECT count(*) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            );
            reply_with(r, res.map_err(err))
        }
        Cmd::Ping(r) => {
            let res = in_savepoint(tx, |c| {
                c.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('ping', x'00')",
                    [],
                )
                .map(|_| ())
            });
            reply_with(r, res.map_err(err))
        }
    }
}

fn mark_dead(c: &Connection, id: i64, audit: i64, reason: &str, now: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE outbox SET state = 'dead', last_error = ?2 WHERE id = ?1")?
        .execute(params![id, reason])?;
    c.prepare_cached(
        "UPDATE audit SET decision = 'dead_lettered', updated_ms = ?3,
            reasons = json_insert(reasons, '$[#]', ?2) WHERE id = ?1",
    )?
    .execute(params![audit, reason, now])?;
    Ok(())
}

fn insert_audit(c: &Connection, a: &NewAudit) -> rusqlite::Result<Enqueued> {
    let reasons = serde_json::to_string(&a.reasons).unwrap_or_else(|_| "[]".into());
    c.prepare_cached(
        "INSERT INTO audit (received_ms, source, event_id, event, decision, reasons, consent_id, legal_basis, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?1)",
    )?
    .execute(params![
        a.received_ms,
        a.source,
        a.event_id,
        a.event,
        a.decision.as_str(),
        reasons,
        a.consent_id,
        a.legal_basis
    ])?;
    let Some(o) = &a.outbox else {
        return Ok(Enqueued::Recorded);
    };
    let audit_id = c.last_insert_rowid();
    let n = c
        .prepare_cached(
            "INSERT INTO outbox (destination, event_id, test_event_code, payload, next_attempt_ms, created_ms, audit_id)
             VALUES ('tiktok', ?1, ?2, ?3, ?4, ?4, ?5) ON CONFLICT DO NOTHING",
        )?
        .execute(params![o.event_id, o.test_event_code, o.payload, a.received_ms, audit_id])?;
    if n == 1 {
        return Ok(Enqueued::Accepted);
    }
    c.prepare_cached(
        "UPDATE audit SET decision = 'dropped', reasons = json_insert(reasons, '$[#]', 'duplicate_pending_event_id')
         WHERE id = ?1",
    )?
    .execute([audit_id])?;
    Ok(Enqueued::Duplicate)
}

fn id_list(ids: impl Iterator<Item = i64>) -> String {
    ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn claim(tx: &Connection, limit: usize, now: i64) -> rusqlite::Result<Batch> {
    let first: Option<Option<String>> = tx
        .prepare_cached(
            "SELECT test_event_code FROM outbox WHERE state = 'pending' AND next_attempt_ms <= ?1
             ORDER BY next_attempt_ms, id LIMIT 1",
        )?
        .query_row([now], |r| r.get(0))
        .optional()?;
    let Some(code) = first else {
        return Ok(Batch::default());
    };
    let mut stmt = tx.prepare_cached(
        "SELECT id, event_id, payload, attempts, audit_id, created_ms FROM outbox
         WHERE state = 'pending' AND next_attempt_ms <= ?1 AND IFNULL(test_event_code, '') = ?2
         ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(
            params![now, code.clone().unwrap_or_default(), limit as i64],
            |r| {
                Ok(Claimed {
                    id: r.get(0)?,
                    event_id: r.get(1)?,
                    payload: r.get(2)?,
                    attempts: r.get(3)?,
                    audit_id: r.get(4)?,
                    created_ms: r.get(5)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Batch {
        test_event_code: code,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let p = RetryPolicy {
            base_ms: 100,
            cap_ms: 1_000,
            max_attempts: 5,
        };
        for _ in 0..200 {
            let d0 = p.delay_ms(0);
            assert!((50..=100).contains(&d0), "{d0}");
            let d2 = p.delay_ms(2);
            assert!((200..=400).contains(&d2), "{d2}");
            let d9 = p.delay_ms(9);
            assert!((500..=1_000).contains(&d9), "{d9}");
            assert!(p.delay_ms(40) <= 1_000);
        }
    }

    #[tokio::test]
    async fn retry_then_dead_letter_after_max_attempts() {
        let dir = tempfile::tempdir().expect("dir");
        let (ob, writer, _, _) =
            Outbox::open(&dir.path().join("o.db"), Synchronous::Full, Arc::default())
                .expect("open");
        let audit = NewAudit {
            received_ms: 1,
            source: "server",
            event_id: Some("e1".into()),
            event: Some("Lead".into()),
            decision: Decision::Queued,
            reasons: vec![],
            consent_id: None,
            legal_basis: None,
            outbox: Some(NewOutboxRow {
                event_id: "e1".into(),
                test_event_code: None,
                payload: "{}".into(),
            }),
        };
        assert_eq!(
            ob.ingest(vec![audit.clone()]).await.expect("ingest"),
            vec![Enqueued::Accepted]
        );
        assert_eq!(
            ob.ingest(vec![audit]).await.expect("dup"),
            vec![Enqueued::Duplicate]
        );
        let policy = RetryPolicy {
            base_ms: 10,
            cap_ms: 10,
            max_attempts: 2,
        };
        let b = ob.claim(10, 1_000).await.expect("claim");
        assert_eq!(b.rows.len(), 1);
        assert_eq!(
            ob.retry(&b.rows, "http:500", policy, 1_000)
                .await
                .expect("retry"),
            0
        );
        assert!(
            ob.claim(10, 1_000).await.expect("claim").rows.is_empty(),
            "not due yet"
        );
        let b = ob.claim(10, 2_000).await.expect("claim");
        assert_eq!(b.rows[0].attempts, 1);
        assert_eq!(
            ob.retry(&b.rows, "http:500", policy, 2_000)
                .await
                .expect("retry"),
            1
        );
        assert!(
            ob.claim(10, 99_000).await.expect("claim").rows.is_empty(),
            "dead rows are not claimed"
        );
        assert_eq!(ob.depth().await.expect("depth"), 0);
        drop(ob);
        writer.join();
    }
}
