//! The SQL behind the outbox commands; every function runs inside the writer's transaction,
//! except [`claim`], which reads on the claims connection.

use std::cell::RefCell;
use std::ops::Deref;

use rusqlite::{Connection, OptionalExtension, Statement, params};

use super::pending::Pending;
use super::{Batch, Claimed, Decision, Enqueued, NewAudit, Nonce, Record, RowRef, Stored};
use crate::relay::consent::NewConsent;

const INSERT_AUDIT: &str =
    "INSERT INTO audit (received_ms, source, event_id, event, decision, reasons, consent_id,
                    legal_basis, updated_ms, destinations, pending)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?1, ?9, ?10)";
const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (id, destination, event_id, test_event_code, payload, next_attempt_ms,
                    created_ms, audit_id, event_time)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)";
const INSERT_NONCE: &str =
    "INSERT INTO nonce (hash, expires_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING";

/// The writer's connection, with the statements every accepted request runs held prepared,
/// and what the outbox holds ([`Pending`]: the keys that make a repeated event id a duplicate
/// without a unique index). rusqlite's statement cache hashes the whole SQL text on each use
/// and again when the statement goes back (SipHash over ~250 bytes, twice): on the writer, the
/// one thread every request waits for, that cost more than binding the values. Everything
/// else goes through the connection ([`Deref`]) and its cache.
pub(super) struct Db<'c> {
    conn: &'c Connection,
    insert_audit: RefCell<Statement<'c>>,
    insert_outbox: RefCell<Statement<'c>>,
    insert_nonce: RefCell<Statement<'c>>,
    pub(super) pending: RefCell<Pending>,
}

impl<'c> Db<'c> {
    pub(super) fn new(conn: &'c Connection, pending: Pending) -> rusqlite::Result<Db<'c>> {
        Ok(Db {
            conn,
            insert_audit: RefCell::new(conn.prepare(INSERT_AUDIT)?),
            insert_outbox: RefCell::new(conn.prepare(INSERT_OUTBOX)?),
            insert_nonce: RefCell::new(conn.prepare(INSERT_NONCE)?),
            pending: RefCell::new(pending),
        })
    }

    /// Give back what the outbox holds (the statements are dropped).
    pub(super) fn into_pending(self) -> Pending {
        self.pending.into_inner()
    }
}

impl Deref for Db<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// Run one command inside a savepoint of the group's transaction; `f` says whether to keep
/// its writes, and a command that failed is rolled back alone. The savepoint statements are
/// prepared once and cached (rusqlite's `Savepoint` parses them anew each time).
pub(super) fn in_savepoint(c: &Db<'_>, f: impl FnOnce(&Db<'_>) -> bool) -> rusqlite::Result<()> {
    c.prepare_cached("SAVEPOINT command")?.execute([])?;
    let mark = c.pending.borrow().mark();
    if !f(c) {
        // Undo this command's writes; the rest of the group stays.
        c.prepare_cached("ROLLBACK TO command")?.execute([])?;
        c.pending.borrow_mut().undo_to(mark);
    }
    c.prepare_cached("RELEASE command")?.execute([])?;
    Ok(())
}

/// Apply `f` only if the nonce (when there is one) has not been stored before; the nonce is
/// stored in the same transaction as the effect.
pub(super) fn guarded<T>(
    c: &Db<'_>,
    nonce: Option<&Nonce>,
    f: impl FnOnce(&Db<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Stored<T>> {
    if let Some(n) = nonce {
        let fresh = c
            .insert_nonce
            .borrow_mut()
            .execute(params![n.hash, n.expires_ms])?;
        if fresh == 0 {
            return Ok(Stored::Replayed);
        }
    }
    f(c).map(Stored::Done)
}

pub(super) fn prune_nonces(c: &Connection, now_ms: i64) -> rusqlite::Result<usize> {
    c.prepare_cached("DELETE FROM nonce WHERE expires_ms < ?1")?
        .execute([now_ms])
}

pub(super) fn insert_consent(c: &Connection, n: &NewConsent) -> rusqlite::Result<i64> {
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
}

/// `{"name": {"event": "...", "state": "..."}}` from relay-built names and codes. Names are
/// validated `[a-z0-9_]` at config load and standard event names are plain words; the values
/// still go through the JSON string encoder.
fn destinations_json(a: &NewAudit, states: &[&str]) -> String {
    let mut out = String::with_capacity(48 * a.destinations.len() + 2);
    out.push('{');
    for (i, (d, state)) in a.destinations.iter().zip(states).enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, &d.name);
        out.push_str(":{");
        if let Some(ev) = &d.event {
            out.push_str("\"event\":");
            push_json_str(&mut out, ev);
            out.push(',');
        }
        out.push_str("\"state\":\"");
        out.push_str(state);
        out.push_str("\"}");
    }
    out.push('}');
    out
}

/// `s` as a JSON string (quoted and escaped) at the end of `out`.
fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a string always serialises"));
}

pub(super) fn insert_audit(c: &Db<'_>, a: &NewAudit) -> rusqlite::Result<Vec<Enqueued>> {
    let reasons = serde_json::to_string(&a.reasons).unwrap_or_else(|_| "[]".into());
    let mut states: Vec<&str> = a.destinations.iter().map(|d| d.state.as_str()).collect();
    let queued = a.destinations.iter().filter(|d| d.row.is_some()).count();
    c.insert_audit.borrow_mut().execute(params![
        a.received_ms,
        a.source,
        a.event_id,
        a.event,
        a.decision.as_str(),
        reasons,
        a.consent_id,
        a.legal_basis,
        destinations_json(a, &states),
        queued as i64,
    ])?;
    let audit_id = c.last_insert_rowid();
    let mut out = Vec::with_capacity(a.destinations.len());
    let mut duplicates = Vec::new();
    for (i, d) in a.destinations.iter().enumerate() {
        let Some(o) = &d.row else {
            out.push(Enqueued::Recorded);
            continue;
        };
        let id = c
            .pending
            .borrow_mut()
            .add(&d.name, &o.event_id, o.test_event_code.as_deref());
        if let Some(id) = id {
            c.insert_outbox.borrow_mut().execute(params![
                id,
                &*d.name,
                o.event_id,
                o.test_event_code,
                o.payload,
                a.received_ms,
                audit_id,
                o.event_time
            ])?;
            out.push(Enqueued::Accepted);
        } else {
            out.push(Enqueued::Duplicate);
            states[i] = "duplicate";
            duplicates.push(format!("{}:duplicate_pending_event_id", d.name));
        }
    }
    if !duplicates.is_empty() {
        // Rare path: say so in the audit row instead of predicting it before the insert.
        let mut reasons = a.reasons.clone();
        reasons.extend(duplicates.iter().cloned());
        let pending = queued - duplicates.len();
        let decision = if pending == 0 && a.decision == Decision::Queued {
            Decision::Dropped
        } else {
            a.decision
        };
        c.prepare_cached(
            "UPDATE audit SET decision = ?2, reasons = ?3, destinations = ?4, pending = ?5 WHERE id = ?1",
        )?
        .execute(params![
            audit_id,
            decision.as_str(),
            serde_json::to_string(&reasons).unwrap_or_else(|_| "[]".into()),
            destinations_json(a, &states),
            pending as i64
        ])?;
    }
    Ok(out)
}

/// Integer ids only, so building the IN list is injection-free.
fn id_list(ids: impl Iterator<Item = i64>) -> String {
    ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// JSON path of one destination's entry; names are validated `[a-z0-9_]` at config load.
fn path(dest: &str, key: &str) -> String {
    format!("$.\"{dest}\".{key}")
}

pub(super) fn record(
    c: &Db<'_>,
    dest: &str,
    rows: &[RowRef],
    outcome: &Record,
    now: i64,
) -> rusqlite::Result<u64> {
    match outcome {
        Record::Delivered {
            request_id,
            shortfall,
        } => {
            // One row per acknowledged request; the audit rows are not touched (schema v3).
            // It lists the audit rows of the outbox rows this deleted, so an event is listed
            // as delivered to a destination at most once.
            let mut audit_ids: Vec<i64> = Vec::with_capacity(rows.len());
            let mut pending = c.pending.borrow_mut();
            for chunk in rows.chunks(500) {
                let mut stmt = c.prepare(&format!(
                    "DELETE FROM outbox WHERE id IN ({}) RETURNING audit_id, event_id, test_event_code",
                    id_list(chunk.iter().map(|r| r.id))
                ))?;
                let mut deleted = stmt.query([])?;
                while let Some(r) = deleted.next()? {
                    audit_ids.push(r.get(0)?);
                    pending.remove(
                        dest,
                        r.get_ref(1)?.as_str()?,
                        r.get_ref(2)?.as_str_or_null()?,
                    );
                }
            }
            audit_ids.sort_unstable();
            let (Some(first), Some(last)) = (audit_ids.first(), audit_ids.last()) else {
                return Ok(0);
            };
            c.prepare_cached(
                "INSERT INTO delivery (destination, request_id, delivered_ms, counted,
                                       first_audit_id, last_audit_id, audit_ids)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                dest,
                request_id,
                now,
                shortfall.map(|(received, sent)| format!("{received}/{sent}")),
                first,
                last,
                format!("[{}]", id_list(audit_ids.iter().copied()))
            ])?;
            Ok(0)
        }
        Record::Retry { reason, policy } => {
            let mut died = 0;
            for r in rows {
                let attempts = r.attempts + 1;
                if attempts >= policy.max_attempts {
                    died += 1;
                    mark_dead(c, dest, r, &format!("{reason};max_attempts"), now)?;
                } else {
                    // Later than its creation time, so the row is in the retry index and
                    // never again taken for a first attempt.
                    let next = (now + policy.delay_ms(attempts - 1) as i64).max(r.created_ms + 1);
                    c.prepare_cached(
                        "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 WHERE id = ?1",
                    )?
                    .execute(params![r.id, attempts, next, reason])?;
                }
            }
            Ok(died)
        }
        Record::Dead { reason } => {
            for r in rows {
                mark_dead(c, dest, r, reason, now)?;
            }
            Ok(rows.len() as u64)
        }
    }
}

fn mark_dead(
    c: &Connection,
    dest: &str,
    r: &RowRef,
    reason: &str,
    now: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE outbox SET state = 'dead', last_error = ?2 WHERE id = ?1")?
        .execute(params![r.id, reason])?;
    c.prepare_cached(
        "UPDATE audit SET decision = 'dead_lettered', updated_ms = ?3, pending = max(pending - 1, 0),
            destinations = json_set(destinations, ?4, 'dead_lettered'),
            reasons = json_insert(reasons, '$[#]', ?2) WHERE id = ?1",
    )?
    .execute(params![r.audit_id, format!("{dest}:{reason}"), now, path(dest, "state")])?;
    Ok(())
}

/// Oldest due rows of one destination, up to `limit`, sharing one test event code, in the
/// order they fell due: rows waiting for a retry (the due index holds only those) and rows
/// never tried (read in id order from `after` on; a row falls due when it is created) are
/// merged, so neither kind starves the other. `after` moves past the first attempts handed
/// out. Every read sees one snapshot.
pub(super) fn claim(
    c: &Connection,
    dest: &str,
    limit: usize,
    now: i64,
    after: &mut i64,
) -> rusqlite::Result<Batch> {
    let tx = c.unchecked_transaction()?;
    let fresh = first_attempts(&tx, dest, limit, now, *after)?;
    let retry_head: Option<(i64, i64, Option<String>)> = tx
        .prepare_cached(
            "SELECT next_attempt_ms, id, test_event_code FROM outbox
              WHERE destination = ?1 AND state = 'pending' AND next_attempt_ms > created_ms
                AND next_attempt_ms <= ?2
              ORDER BY next_attempt_ms, id LIMIT 1",
        )?
        .query_row(params![dest, now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    // The batch's test event code is the one of the row that fell due first.
    let code = match (fresh.rows.first(), &retry_head) {
        (None, None) => {
            if !fresh.seen {
                // No first attempt after `after` at all: none below the newest id is left.
                let top: Option<i64> = tx
                    .prepare_cached("SELECT max(id) FROM outbox")?
                    .query_row([], |r| r.get(0))?;
                *after = (*after).max(top.unwrap_or(0));
            }
            return Ok(Batch::default());
        }
        (Some(f), Some((next, id, rcode))) => {
            if (f.created_ms, f.id) <= (*next, *id) {
                fresh.code.clone()
            } else {
                rcode.clone()
            }
        }
        (Some(_), None) => fresh.code.clone(),
        (None, Some((_, _, code))) => code.clone(),
    };
    let retries = match retry_head {
        Some(_) => retries_with_code(&tx, dest, limit, now, code.as_deref())?,
        None => Vec::new(),
    };
    // First attempts are taken from the front only, so `after` can move to the last one taken.
    let fresh = if fresh.code == code {
        fresh.rows
    } else {
        Vec::new()
    };
    let mut batch = Batch {
        test_event_code: code,
        rows: Vec::with_capacity(limit.min(retries.len() + fresh.len())),
    };
    let (mut retries, mut fresh) = (retries.into_iter().peekable(), fresh.into_iter().peekable());
    while batch.rows.len() < limit {
        let take_fresh = match (fresh.peek(), retries.peek()) {
            (Some(f), Some((next, r))) => (f.created_ms, f.id) <= (*next, r.id),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let row = if take_fresh {
            let row = fresh.next().expect("peeked");
            *after = row.id;
            row
        } else {
            retries.next().expect("peeked").1
        };
        batch.rows.push(row);
    }
    Ok(batch)
}

fn claimed(r: &rusqlite::Row<'_>) -> rusqlite::Result<Claimed> {
    Ok(Claimed {
        id: r.get(0)?,
        event_id: r.get(1)?,
        payload: r.get(2)?,
        attempts: r.get(3)?,
        audit_id: r.get(4)?,
        created_ms: r.get(5)?,
        event_time: r.get(6)?,
    })
}

/// Due rows waiting for a retry with one test event code, with the time each fell due.
fn retries_with_code(
    c: &Connection,
    dest: &str,
    limit: usize,
    now: i64,
    code: Option<&str>,
) -> rusqlite::Result<Vec<(i64, Claimed)>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, event_id, payload, attempts, audit_id, created_ms, event_time, next_attempt_ms
           FROM outbox
          WHERE destination = ?1 AND state = 'pending' AND next_attempt_ms > created_ms
            AND next_attempt_ms <= ?2 AND IFNULL(test_event_code, '') = ?3
          ORDER BY next_attempt_ms, id LIMIT ?4",
    )?;
    stmt.query_map(
        params![dest, now, code.unwrap_or_default(), limit as i64],
        |r| Ok((r.get(7)?, claimed(r)?)),
    )?
    .collect()
}

/// A run of rows never tried, in id order, that share one test event code.
struct FirstAttempts {
    code: Option<String>,
    rows: Vec<Claimed>,
    /// Whether the read found any row after `after` at all.
    seen: bool,
}

/// Rows never tried, after `after` in id order: the run that is due and shares the first
/// one's test event code. Ids only grow while the relay runs (the writer hands them out), so
/// a first attempt at or below `after` was handed out before.
fn first_attempts(
    c: &Connection,
    dest: &str,
    limit: usize,
    now: i64,
    after: i64,
) -> rusqlite::Result<FirstAttempts> {
    let mut stmt = c.prepare_cached(
        "SELECT id, event_id, payload, attempts, audit_id, created_ms, event_time, test_event_code
           FROM outbox
          WHERE id > ?1 AND destination = ?2 AND state = 'pending' AND next_attempt_ms = created_ms
          ORDER BY id LIMIT ?3",
    )?;
    let mut found = stmt.query(params![after, dest, limit as i64])?;
    let mut run = FirstAttempts {
        code: None,
        rows: Vec::new(),
        seen: false,
    };
    while let Some(r) = found.next()? {
        run.seen = true;
        let code: Option<String> = r.get(7)?;
        if (!run.rows.is_empty() && code != run.code) || r.get::<_, i64>(5)? > now {
            break;
        }
        run.code = code;
        run.rows.push(claimed(r)?);
    }
    Ok(run)
}

/// Pending rows per destination (destinations with none are left out): the rows the writer
/// knows of, less the dead letters (the dead index holds only those).
pub(super) fn depth(c: &Db<'_>) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = c.prepare_cached(
        "SELECT destination, count(*) FROM outbox WHERE state = 'dead' GROUP BY destination",
    )?;
    let dead: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let pending = c.pending.borrow();
    Ok(pending
        .rows()
        .map(|(d, n)| {
            let dead = dead.iter().find(|(x, _)| x == d).map_or(0, |(_, n)| *n);
            (d.to_string(), n - dead)
        })
        .filter(|(_, n)| *n > 0)
        .collect())
}
