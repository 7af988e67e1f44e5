//! Scan history in SQLite: schema from `migrations/scanner/*.sql` applied on open, WAL mode,
//! one transaction per scan.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::ScanReport;

/// Scanner migrations, in order. Never edit one that has shipped; add a new file.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_scans.sql",
        include_str!("../migrations/scanner/0001_scans.sql"),
    ),
    (
        "0002_baselines.sql",
        include_str!("../migrations/scanner/0002_baselines.sql"),
    ),
    (
        "0003_alerts.sql",
        include_str!("../migrations/scanner/0003_alerts.sql"),
    ),
];

/// How long a writer waits for another process holding the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Database errors, each naming the file.
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
        BUSY_TIMEOUT.as_secs()
    )]
    Locked { path: String },
    #[error("database '{path}': migration {name} failed: {source}")]
    Migration {
        path: String,
        name: String,
        source: rusqlite::Error,
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
    #[error("no scan with id {0}")]
    NotFound(i64),
    #[error("no scans of {0} yet")]
    NoScans(String),
    #[error("no approved baseline for {0}; run `pixelwatch baseline approve --site {0}`")]
    NoBaseline(String),
    #[error("database '{path}': scan {id} has an unreadable report: {source}")]
    Corrupt {
        path: String,
        id: i64,
        source: serde_json::Error,
    },
}

/// One line of `scans list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScanRow {
    pub id: i64,
    pub site: String,
    pub started_at: String,
    pub finished_at: String,
    pub pages: i64,
    pub pages_errored: i64,
    pub third_party_hosts: i64,
    pub cookies: i64,
    pub findings: i64,
    pub worst_severity: Option<String>,
}

/// An open scan database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// The default database: `$PIXELWATCH_DB`, else `$XDG_DATA_HOME/pixelwatch/pixelwatch.db`,
/// else `~/.local/share/pixelwatch/pixelwatch.db`.
pub fn default_db_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PIXELWATCH_DB").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pixelwatch").join("pixelwatch.db")
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: shown.clone(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| store.err(e))?;
        store
            .conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
            )
            .map_err(|e| store.err(e))?;
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        let path = self.path.display().to_string();
        match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Locked { path }
            }
            _ => StoreError::Sql { path, source },
        }
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: self.path.display().to_string(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let batch = format!(
                "BEGIN IMMEDIATE; {sql}\nPRAGMA user_version = {}; COMMIT;",
                i + 1
            );
            if let Err(source) = self.conn.execute_batch(&batch) {
                let _ = self.conn.execute_batch("ROLLBACK");
                if matches!(
                    source.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy)
                ) {
                    return Err(self.err(source));
                }
                return Err(StoreError::Migration {
                    path: self.path.display().to_string(),
                    name: name.to_string(),
                    source,
                });
            }
        }
        Ok(())
    }

    /// Saves a scan in one transaction and returns its id (also written into the report).
    pub fn save_scan(&mut self, report: &mut ScanReport) -> Result<i64, StoreError> {
        let path = self.path.display().to_string();
        let map = |source: rusqlite::Error| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Locked { path: path.clone() }
            }
            _ => StoreError::Sql {
                path: path.clone(),
                source,
            },
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(map)?;
        let worst = report
            .findings
            .iter()
            .map(|f| f.severity)
            .min()
            .map(|s| s.as_str().to_string());
        tx.execute(
            "INSERT INTO scans (site, started_at, finished_at, consent_mode, pages, pages_errored,
                requests, third_party_hosts, cookies, findings, worst_severity, report_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, '')",
            params![
                report.site,
                report.started_at,
                report.finished_at,
                report.consent_mode,
                report.summary.pages as i64,
                report.summary.pages_errored as i64,
                report.summary.requests as i64,
                report.summary.third_party_hosts.len() as i64,
                report.summary.cookies as i64,
                report.findings.len() as i64,
                worst,
            ],
        )
        .map_err(map)?;
        let scan_id = tx.last_insert_rowid();
        report.id = Some(scan_id);
        {
            let mut page_stmt = tx
                .prepare(
                    "INSERT INTO pages (scan_id, url, final_url, status, error, depth, found_via)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(map)?;
            let mut req_stmt = tx
                .prepare(
                    "INSERT INTO requests (page_id, url, host, method, resource_type, initiator,
                        status, third_party, vendor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(map)?;
            let mut storage_stmt = tx
                .prepare(
                    "INSERT INTO storage (page_id, origin, kind, key, third_party)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(map)?;
            let mut script_stmt = tx
                .prepare(
                    "INSERT INTO scripts (page_id, url, sha256, third_party) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(map)?;
            let mut frame_stmt = tx
                .prepare("INSERT INTO frames (page_id, url, third_party) VALUES (?1, ?2, ?3)")
                .map_err(map)?;
            for p in &report.pages {
                page_stmt
                    .execute(params![
                        scan_id,
                        p.url,
                        p.final_url,
                        p.status,
                        p.error,
                        p.depth,
                        p.found_via
                    ])
                    .map_err(map)?;
                let page_id = tx.last_insert_rowid();
                for r in &p.requests {
                    req_stmt
                        .execute(params![
                            page_id,
                            r.url,
                            r.host,
                            r.method,
                            r.resource_type,
                            r.initiator,
                            r.status,
                            r.third_party,
                            r.vendor
                        ])
                        .map_err(map)?;
                }
                for s in &p.storage {
                    storage_stmt
                        .execute(params![page_id, s.origin, s.kind, s.key, s.third_party])
                        .map_err(map)?;
                }
                for s in &p.scripts {
                    script_stmt
                        .execute(params![page_id, s.url, s.sha256, s.third_party])
                        .map_err(map)?;
                }
                for f in &p.frames {
                    frame_stmt
                        .execute(params![page_id, f.url, f.third_party])
                        .map_err(map)?;
                }
            }
            let mut cookie_stmt = tx
                .prepare(
                    "INSERT INTO cookies (scan_id, name, domain, path, expires, http_only, secure,
                        same_site, third_party, set_by, first_seen_page)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(map)?;
            for c in &report.cookies {
                let k = &c.cookie;
                cookie_stmt
                    .execute(params![
                        scan_id,
                        k.name,
                        k.domain,
                        k.path,
                        k.expires,
                        k.http_only,
                        k.secure,
                        k.same_site,
                        k.third_party,
                        k.set_by.as_str(),
                        c.first_seen_page
                    ])
                    .map_err(map)?;
            }
            let mut finding_stmt = tx
                .prepare(
                    "INSERT INTO findings (scan_id, kind, severity, vendor, page, request_url,
                        evidence, rule) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(map)?;
            for f in &report.findings {
                finding_stmt
                    .execute(params![
                        scan_id,
                        f.kind.as_str(),
                        f.severity.as_str(),
                        f.vendor,
                        f.page,
                        f.request_url,
                        f.evidence,
                        f.rule
                    ])
                    .map_err(map)?;
            }
        }
        let json = serde_json::to_string(report).expect("a report always serializes");
        tx.execute(
            "UPDATE scans SET report_json = ?1 WHERE id = ?2",
            params![json, scan_id],
        )
        .map_err(map)?;
        tx.commit().map_err(map)?;
        Ok(scan_id)
    }

    /// Recent scans, newest first, optionally of one site.
    pub fn list_scans(&self, site: Option<&str>, limit: usize) -> Result<Vec<ScanRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, site, started_at, finished_at, pages, pages_errored, third_party_hosts,
                    cookies, findings, worst_severity
                 FROM scans WHERE (?1 IS NULL OR site = ?1) ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![site, limit as i64], |r| {
                Ok(ScanRow {
                    id: r.get(0)?,
                    site: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    pages: r.get(4)?,
                    pages_errored: r.get(5)?,
                    third_party_hosts: r.get(6)?,
                    cookies: r.get(7)?,
                    findings: r.get(8)?,
                    worst_severity: r.get(9)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// When each vendor was first seen on `site`: vendor id -> `finished_at` of the earliest
    /// stored scan with a request to it.
    pub fn vendors_first_seen(
        &self,
        site: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.vendor, min(s.finished_at) FROM requests r
                 JOIN pages p ON r.page_id = p.id JOIN scans s ON p.scan_id = s.id
                 WHERE s.site = ?1 AND r.vendor IS NOT NULL GROUP BY r.vendor",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![site], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The newest scan of `site` (or of any site), optionally only those older than `before`.
    pub fn latest_scan_id(
        &self,
        site: Option<&str>,
        before: Option<i64>,
    ) -> Result<i64, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT max(id) FROM scans WHERE (?1 IS NULL OR site = ?1) AND (?2 IS NULL OR id < ?2)",
                params![site, before],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        id.ok_or_else(|| StoreError::NoScans(site.unwrap_or("any site").to_string()))
    }

    /// Marks `baseline` as the approved state of its site (replacing any earlier one).
    pub fn approve_baseline(&self, baseline: &crate::diff::Baseline) -> Result<(), StoreError> {
        let json = serde_json::to_string(baseline).expect("a baseline always serializes");
        self.conn
            .execute(
                "INSERT INTO baselines (site, scan_id, approved_at, baseline_json) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (site) DO UPDATE SET scan_id = excluded.scan_id,
                    approved_at = excluded.approved_at, baseline_json = excluded.baseline_json",
                params![baseline.site, baseline.scan_id, baseline.approved_at, json],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The approved baseline of `site`.
    pub fn baseline(&self, site: &str) -> Result<crate::diff::Baseline, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT baseline_json FROM baselines WHERE site = ?1",
                params![site],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let json = json.ok_or_else(|| StoreError::NoBaseline(site.to_string()))?;
        serde_json::from_str(&json)
            .map(crate::diff::Baseline::normalized)
            .map_err(|source| StoreError::Corrupt {
                path: self.path.display().to_string(),
                id: 0,
                source,
            })
    }

    /// The full report of scan `id`.
    pub fn load_scan(&self, id: i64) -> Result<ScanReport, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT report_json FROM scans WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let json = json.ok_or(StoreError::NotFound(id))?;
        serde_json::from_str(&json).map_err(|source| StoreError::Corrupt {
            path: self.path.display().to_string(),
            id,
            source,
        })
    }
    /// The fingerprint of the drift last alerted for `site`.
    pub fn drift_fingerprint(&self, site: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT drift_fingerprint FROM alert_state WHERE site = ?1",
                params![site],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// Remembers (or with `None` forgets) the drift last alerted for `site`.
    pub fn set_drift_fingerprint(&self, site: &str, fp: Option<&str>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO alert_state (site, drift_fingerprint) VALUES (?1, ?2)
                 ON CONFLICT (site) DO UPDATE SET drift_fingerprint = excluded.drift_fingerprint",
                params![site, fp],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Counts one more consecutive failed scan of `site`; returns the count.
    pub fn count_scan_failure(&self, site: &str) -> Result<u32, StoreError> {
        self.conn
            .query_row(
                "INSERT INTO alert_state (site, consecutive_failures) VALUES (?1, 1)
                 ON CONFLICT (site) DO UPDATE SET consecutive_failures = consecutive_failures + 1
                 RETURNING consecutive_failures",
                params![site],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// A scan of `site` succeeded: the run of failures ends.
    pub fn reset_scan_failures(&self, site: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE alert_state SET consecutive_failures = 0 WHERE site = ?1",
                params![site],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records an alert about to be sent on `channel` (status `pending`); returns its id.
    pub fn insert_alert(
        &self,
        alert: &crate::alert::Alert,
        channel: &str,
    ) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO alerts (site, kind, channel, fingerprint, scan_id, severity, subject,
                    text_body, html_body, payload, created_at, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending')",
                params![
                    alert.site,
                    alert.kind,
                    channel,
                    alert.fingerprint,
                    alert.scan_id,
                    alert.severity.as_str(),
                    alert.subject,
                    alert.text,
                    alert.html,
                    alert.payload.to_string(),
                    crate::scan::now_rfc3339()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records the outcome of a delivery: `sent` without an error, else `failed`.
    pub fn finish_alert(
        &self,
        id: i64,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE alerts SET attempts = attempts + ?2, last_error = ?3,
                    status = CASE WHEN ?3 IS NULL THEN 'sent' ELSE 'failed' END,
                    sent_at = CASE WHEN ?3 IS NULL THEN ?4 ELSE NULL END
                 WHERE id = ?1",
                params![id, attempts, error, crate::scan::now_rfc3339()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Gives up on an alert that can no longer be sent (its channel was removed).
    pub fn abandon_alert(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE alerts SET status = 'abandoned', last_error = ?2 WHERE id = ?1",
                params![id, reason],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Alerts to re-send: `failed` ones, and `pending` ones a killed run left behind, oldest
    /// first, as (id, channel, alert).
    pub fn failed_alerts(
        &self,
        site: Option<&str>,
    ) -> Result<Vec<(i64, String, crate::alert::Alert)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, channel, kind, site, scan_id, severity, fingerprint, subject,
                    text_body, html_body, payload
                 FROM alerts WHERE status IN ('failed', 'pending') AND (?1 IS NULL OR site = ?1)
                 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![site], |r| {
                let severity: String = r.get(5)?;
                let payload: String = r.get(10)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    crate::alert::Alert {
                        kind: r.get(2)?,
                        site: r.get(3)?,
                        scan_id: r.get(4)?,
                        severity: serde_json::from_value(serde_json::Value::String(severity))
                            .unwrap_or(crate::model::Severity::High),
                        fingerprint: r.get(6)?,
                        subject: r.get(7)?,
                        text: r.get(8)?,
                        html: r.get(9)?,
                        payload: serde_json::from_str(&payload).unwrap_or_default(),
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Recent alerts, newest first.
    pub fn list_alerts(&self, limit: usize) -> Result<Vec<crate::alert::AlertRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, site, kind, channel, status, attempts, last_error, created_at, sent_at,
                    subject
                 FROM alerts ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(crate::alert::AlertRow {
                    id: r.get(0)?,
                    site: r.get(1)?,
                    kind: r.get(2)?,
                    channel: r.get(3)?,
                    status: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                    created_at: r.get(7)?,
                    sent_at: r.get(8)?,
                    subject: r.get(9)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Records one scheduled run of `pixelwatch watch`.
    pub fn record_watch_run(&self, run: &crate::watch::WatchRun) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO watch_runs (site, started_at, finished_at, scan_id, outcome,
                    drift_added, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    run.site,
                    run.started_at,
                    run.finished_at,
                    run.scan_id,
                    run.outcome,
                    run.drift_added as i64,
                    run.error
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Scheduled runs of `site` (or of every site), oldest first.
    pub fn watch_runs(
        &self,
        site: Option<&str>,
    ) -> Result<Vec<crate::watch::WatchRun>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT site, started_at, finished_at, scan_id, outcome, drift_added, error
                 FROM watch_runs WHERE (?1 IS NULL OR site = ?1) ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![site], |r| {
                Ok(crate::watch::WatchRun {
                    site: r.get(0)?,
                    started_at: r.get(1)?,
                    finished_at: r.get(2)?,
                    scan_id: r.get(3)?,
                    outcome: r.get(4)?,
                    drift_added: r.get::<_, i64>(5)? as usize,
                    error: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Deletes all but the newest `keep` scans of each site (a scan an approved baseline was
    /// made from is kept too); returns how many were deleted.
    pub fn prune(&self, keep: usize) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM scans WHERE id IN (
                    SELECT id FROM (
                        SELECT id, row_number() OVER (PARTITION BY site ORDER BY id DESC) AS n
                        FROM scans)
                    WHERE n > ?1)
                 AND id NOT IN (SELECT scan_id FROM baselines WHERE scan_id IS NOT NULL)",
                params![keep as i64],
            )
            .map_err(|e| self.err(e))
    }
}
