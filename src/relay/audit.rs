//! Audit log and dead-letter inspection for operators (`audit`, `dead-letters`, `replay`).

use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;

use super::db;
use super::error::StoreError;

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
    /// Reason codes and dropped field names.
    pub reasons: Vec<String>,
    /// Consent record id.
    pub consent_id: Option<i64>,
    /// Legal basis used instead of consent.
    pub legal_basis: Option<String>,
    /// TikTok request id.
    pub request_id: Option<String>,
}

/// A dead-lettered outbox row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// Outbox row id.
    pub id: i64,
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
    decision: Option<&str>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let conn = db::open_existing(path)?;
    query_recent(&conn, limit, decision).map_err(err(path))
}

fn query_recent(
    conn: &Connection,
    limit: usize,
    decision: Option<&str>,
) -> rusqlite::Result<Vec<AuditRecord>> {
    let mut stmt = conn.prepare(
        "SELECT id, received_ms, source, event_id, event, decision, reasons, consent_id, legal_basis, request_id
         FROM audit WHERE (?1 IS NULL OR decision = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    stmt.query_map(params![decision, limit as i64], |r| {
        let reasons: String = r.get(6)?;
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
        })
    })?
    .collect()
}

/// All dead-lettered rows.
pub fn dead_letters(path: &Path) -> Result<Vec<DeadLetter>, StoreError> {
    let conn = db::open_existing(path)?;
    let mut stmt = conn
        .prepare(
            "SELECT id, event_id, attempts, last_error, test_event_code FROM outbox
             WHERE state = 'dead' ORDER BY id",
        )
        .map_err(err(path))?;
    stmt.query_map([], |r| {
        Ok(DeadLetter {
            id: r.get(0)?,
            event_id: r.get(1)?,
            attempts: r.get(2)?,
            last_error: r.get(3)?,
            test_event_code: r.get(4)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(err(path))
}

/// Move dead letters back to pending (all, or the given ids) with attempts reset; their
/// audit rows go back to `queued`. Safe while the relay runs (SQLite locking, WAL).
pub fn replay(path: &Path, ids: Option<&[i64]>) -> Result<usize, StoreError> {
    let mut conn = db::open_existing(path)?;
    let now = chrono::Utc::now().timestamp_millis();
    let tx = conn.transaction().map_err(err(path))?;
    let mut n = 0;
    {
        let targets: Vec<i64> = match ids {
            Some(ids) => ids.to_vec(),
            None => {
                let mut s = tx
                    .prepare("SELECT id FROM outbox WHERE state = 'dead'")
                    .map_err(err(path))?;
                s.query_map([], |r| r.get(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<i64>>>())
                    .map_err(err(path))?
            }
        };
        for id in targets {
            let changed = tx
                .execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?2
                     WHERE id = ?1 AND state = 'dead'",
                    params![id, now],
                )
                .map_err(err(path))?;
            if changed == 1 {
                tx.execute(
                    "UPDATE audit SET decision = 'queued', updated_ms = ?2,
                        reasons = json_insert(reasons, '$[#]', 'replayed')
                     WHERE id = (SELECT audit_id FROM outbox WHERE id = ?1)",
                    params![id, now],
                )
                .map_err(err(path))?;
                n += 1;
            }
        }
    }
    tx.commit().map_err(err(path))?;
    Ok(n)
}
