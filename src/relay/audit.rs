//! Audit log and dead-letter inspection for operators (`audit`, `dead-letters`, `replay`).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;

use super::db;
use super::error::{AdminError, StoreError};
use super::outbox::Decision;

/// One audit record as shown to operators. Holds no event values, only decisions and names.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRecord {
    /// Row id.
    pub id: i64,
    /// Receive time (RFC 3339).
    pub received_at: String,
    /// `browser` or `server`.
    pub source: String,
    /// Outgoing event id.
    pub event_id: Option<String>,
    /// Mapped event name.
    pub event: Option<String>,
    /// Decision.
    pub decision: String,
    /// Reason codes (destination-specific ones prefixed `name:`), keyed hashes of unknown
    /// field names.
    pub reasons: Vec<String>,
    /// Per destination: state, mapped event, request id, counted/sent on a shortfall.
    pub destinations: serde_json::Value,
    /// Consent record id.
    pub consent_id: Option<i64>,
    /// Legal basis used instead of consent.
    pub legal_basis: Option<String>,
    /// Last destination request id.
    pub request_id: Option<String>,
}

/// A dead-lettered outbox row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// Outbox row id.
    pub id: i64,
    /// Destination name.
    pub destination: String,
    /// Outgoing event id.
    pub event_id: String,
    /// Attempts made.
    pub attempts: i64,
    /// Last error reason code.
    pub last_error: Option<String>,
    /// Test event code.
    pub test_event_code: Option<String>,
}

fn err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Most recent audit records, newest first, optionally only one decision.
pub fn recent(
    path: &Path,
    limit: usize,
    decision: Option<Decision>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let conn = db::open_existing(path)?;
    records(&conn, limit, decision).map_err(err(path))
}

/// Rows read per query while looking for `limit` records of one decision.
const PAGE: usize = 1000;

/// [`recent`] on an open connection.
///
/// An audit row holds what was decided at ingest, dead letters and replays; deliveries are
/// rows of the `delivery` table, one per acknowledged request (schema v3). A record is the two
/// read together ([`settle`]), so a row stored as `queued` may read as `delivered`: rows are
/// read newest first, page by page, settled, then filtered.
pub fn records(
    conn: &Connection,
    limit: usize,
    decision: Option<Decision>,
) -> rusqlite::Result<Vec<AuditRecord>> {
    let wanted = decision.map(Decision::as_str);
    // Only a row stored as `queued` reads differently once settled.
    let or_queued = matches!(decision, Some(Decision::Queued | Decision::Delivered));
    let mut stmt = conn.prepare(
        "SELECT id, received_ms, source, event_id, event, decision, reasons, consent_id, legal_basis,
                request_id, destinations
         FROM audit WHERE id < ?1 AND (?2 IS NULL OR decision = ?2 OR (?3 AND decision = 'queued'))
         ORDER BY id DESC LIMIT ?4",
    )?;
    let mut out = Vec::new();
    let mut before = i64::MAX;
    while out.len() < limit {
        let page: Vec<AuditRecord> = stmt
            .query_map(
                params![before, wanted, or_queued, limit.min(PAGE) as i64],
                stored_record,
            )?
            .collect::<rusqlite::Result<_>>()?;
        let (Some(hi), Some(lo)) = (page.first().map(|r| r.id), page.last().map(|r| r.id)) else {
            break;
        };
        before = lo;
        let found = deliveries(conn, lo, hi)?;
        for mut r in page {
            settle(&mut r, &found);
            if wanted.is_none_or(|w| r.decision == w) && out.len() < limit {
                out.push(r);
            }
        }
    }
    Ok(out)
}

fn stored_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    let reasons: String = r.get(6)?;
    let destinations: String = r.get(10)?;
    Ok(AuditRecord {
        id: r.get(0)?,
        received_at: ms_to_rfc3339(r.get(1)?),
        source: r.get(2)?,
        event_id: r.get(3)?,
        event: r.get(4)?,
        decision: r.get(5)?,
        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        consent_id: r.get(7)?,
        legal_basis: r.get(8)?,
        request_id: r.get(9)?,
        destinations: serde_json::from_str(&destinations).unwrap_or_default(),
    })
}

/// One acknowledged request of a destination (a `delivery` row).
#[derive(Debug, Clone)]
struct Delivery {
    id: i64,
    request_id: String,
    counted: Option<String>,
}

/// The deliveries that acknowledged audit rows `lo..=hi`, by (audit id, destination).
fn deliveries(
    conn: &Connection,
    lo: i64,
    hi: i64,
) -> rusqlite::Result<HashMap<(i64, String), Delivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, destination, request_id, counted, audit_ids FROM delivery
          WHERE last_audit_id >= ?1 AND first_audit_id <= ?2",
    )?;
    let mut found = HashMap::new();
    let rows = stmt.query_map(params![lo, hi], |r| {
        let ids: String = r.get(4)?;
        Ok((
            r.get::<_, String>(1)?,
            ids,
            Delivery {
                id: r.get(0)?,
                request_id: r.get(2)?,
                counted: r.get(3)?,
            },
        ))
    })?;
    for row in rows {
        let (destination, ids, d) = row?;
        let ids: Vec<i64> = serde_json::from_str(&ids).unwrap_or_default();
        for id in ids.into_iter().filter(|id| (lo..=hi).contains(id)) {
            found.insert((id, destination.clone()), d.clone());
        }
    }
    Ok(found)
}

/// Read an audit row together with its deliveries: a destination still `queued` that a
/// delivery acknowledged is `delivered` (with the request id, and on a shortfall `counted` and
/// the reason `<destination>:events_received_shortfall`); a `queued` decision becomes
/// `delivered` once no destination is queued. Dead letters are already in the row.
fn settle(r: &mut AuditRecord, found: &HashMap<(i64, String), Delivery>) {
    let Some(dests) = r.destinations.as_object_mut() else {
        return;
    };
    let mut latest: Option<&Delivery> = None;
    for (name, entry) in dests.iter_mut() {
        if entry["state"] != "queued" {
            continue;
        }
        let Some(d) = found.get(&(r.id, name.clone())) else {
            continue;
        };
        entry["state"] = "delivered".into();
        entry["request_id"] = d.request_id.as_str().into();
        if let Some(c) = &d.counted {
            entry["counted"] = c.as_str().into();
            r.reasons.push(format!("{name}:events_received_shortfall"));
        }
        if latest.is_none_or(|l| d.id > l.id) {
            latest = Some(d);
        }
    }
    if let Some(d) = latest {
        r.request_id = Some(d.request_id.clone());
    }
    if r.decision == Decision::Queued.as_str() && !dests.values().any(|e| e["state"] == "queued") {
        r.decision = Decision::Delivered.as_str().to_string();
    }
}

/// All dead-lettered rows.
pub fn dead_letters(path: &Path) -> Result<Vec<DeadLetter>, StoreError> {
    let conn = db::open_existing(path)?;
    let mut stmt = conn
        .prepare(
            "SELECT id, destination, event_id, attempts, last_error, test_event_code FROM outbox
             WHERE state = 'dead' ORDER BY id",
        )
        .map_err(err(path))?;
    stmt.query_map([], |r| {
        Ok(DeadLetter {
            id: r.get(0)?,
            destination: r.get(1)?,
            event_id: r.get(2)?,
            attempts: r.get(3)?,
            last_error: r.get(4)?,
            test_event_code: r.get(5)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(err(path))
}

/// Move dead letters back to pending (all, or the given outbox ids) with attempts reset; their
/// audit rows go back to `queued` for that destination. A replayed row is due now, as a retry
/// (`next_attempt_ms` after its creation: the running relay reads first attempts only from
/// ids it has not passed, schema v4). Every given id must be a dead letter:
/// otherwise nothing is changed and the error names the ids. Safe while the relay runs
/// (SQLite locking, WAL).
pub fn replay(path: &Path, ids: Option<&[i64]>) -> Result<usize, AdminError> {
    let mut conn = db::open_existing(path)?;
    let now = chrono::Utc::now().timestamp_millis();
    let e = err(path);
    let tx = conn.transaction().map_err(&e)?;
    let dead: Vec<i64> = {
        let mut s = tx
            .prepare("SELECT id FROM outbox WHERE state = 'dead' ORDER BY id")
            .map_err(&e)?;
        s.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<i64>>>())
            .map_err(&e)?
    };
    let targets: Vec<i64> = match ids {
        Some(ids) => {
            let unknown: Vec<i64> = ids.iter().copied().filter(|i| !dead.contains(i)).collect();
            if !unknown.is_empty() {
                return Err(AdminError::NotDeadLetters { ids: unknown });
            }
            ids.to_vec()
        }
        None => dead,
    };
    let mut n = 0;
    for id in targets {
        let changed = tx
            .execute(
                "UPDATE outbox SET state = 'pending', attempts = 0,
                        next_attempt_ms = max(?2, created_ms + 1)
                 WHERE id = ?1 AND state = 'dead'",
                params![id, now],
            )
            .map_err(&e)?;
        if changed == 1 {
            tx.execute(
                "UPDATE audit SET decision = 'queued', updated_ms = ?2, pending = pending + 1,
                    destinations = json_set(destinations,
                        '$.\"' || (SELECT destination FROM outbox WHERE id = ?1) || '\".state', 'queued'),
                    reasons = json_insert(reasons, '$[#]',
                        (SELECT destination FROM outbox WHERE id = ?1) || ':replayed')
                 WHERE id = (SELECT audit_id FROM outbox WHERE id = ?1)",
                params![id, now],
            )
            .map_err(&e)?;
            n += 1;
        }
    }
    tx.commit().map_err(&e)?;
    Ok(n)
}

/// The audit reason an unknown field name gets in this database (`unknown_field:<hash>:<len>`),
/// so an operator can check a guess without the relay ever storing the name.
pub fn unknown_field_reason(path: &Path, name: &str) -> Result<String, StoreError> {
    let conn = db::open_existing(path)?;
    let salt: Vec<u8> = conn
        .query_row("SELECT value FROM meta WHERE key = 'id_salt'", [], |r| {
            r.get(0)
        })
        .map_err(err(path))?;
    Ok(super::sanitize::unknown_field_reason(
        &super::sanitize::field_key(&salt),
        name,
    ))
}
