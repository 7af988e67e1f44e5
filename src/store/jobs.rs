//! The job queue (PostgreSQL only): scan site S with settings X, due at T.
//!
//! Invariants (the schema enforces the first two, see `migrations/postgres/0001_init.sql`):
//! - A due time of a site is queued once: unique (site, due_at).
//! - At most one job per site is running: a partial unique index; a claim that loses that race
//!   claims nothing and the worker polls again.
//! - A worker holds a running job only while its lease is unexpired and its token matches; every
//!   write of a running job checks both, so a worker that lost its lease (paused, cut off) can
//!   change nothing, and its scan is discarded when it tries to finish.
//! - A lease that expires (its worker was killed or lost) puts the job back in the queue, or marks
//!   it failed when it has used its attempts; attempts count claims.
//!
//! The statements here use PostgreSQL's `FOR UPDATE SKIP LOCKED`, `now()` and casts; they are
//! never run on SQLite ([`crate::store::Db::pg_client`] refuses a SQLite store).

use std::time::Duration;

use super::db::{Row, Tx, params};
use super::{Store, StoreError};
use crate::settings::ScanSettings;

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub site: String,
    pub settings: ScanSettings,
    pub due_at: String,
    /// This claim is attempt number `attempt` of `max_attempts`.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Proves this claim in every later write.
    pub lease_token: String,
}

/// One line of `jobs list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRow {
    pub id: i64,
    pub site: String,
    pub due_at: String,
    pub state: String,
    pub attempts: u32,
    pub max_attempts: u32,
    /// The worker that ran (or runs) its latest attempt.
    pub lease_owner: Option<String>,
    pub outcome: Option<String>,
    pub scan_id: Option<i64>,
    pub last_error: Option<String>,
    pub finished_at: Option<String>,
}

/// The queue as a dashboard sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Queued jobs that may run now.
    pub ready: i64,
    /// Seconds since the oldest ready job was due (0 when none is).
    pub oldest_due_age_secs: f64,
    pub running: i64,
}

/// How a failed attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Queued again, to run after the retry delay.
    Retry,
    /// Out of attempts: marked failed with its error.
    Final,
    /// The lease was lost: another worker owns the job now.
    LeaseLost,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Queues a scan of `site` due at `due_at` (RFC 3339); false when that due time is queued
/// already.
pub async fn enqueue_in(
    tx: &mut Tx,
    site: &str,
    due_at: &str,
    settings: &ScanSettings,
    max_attempts: u32,
) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "INSERT INTO jobs (site, due_at, run_after, settings_json, max_attempts)
             VALUES ($1, $2::text::timestamptz, $2::text::timestamptz, $3, $4)
             ON CONFLICT (site, due_at) DO NOTHING",
            params![site, due_at, settings.to_json(), max_attempts],
        )
        .await?;
    Ok(n == 1)
}

/// Marks a running job done (with its scan) if this claim still holds it; false when the lease
/// was lost (the caller then rolls back everything it wrote in `tx`).
pub async fn finish_in(
    tx: &mut Tx,
    job: &Job,
    outcome: &str,
    scan_id: Option<i64>,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "UPDATE jobs SET state = 'done', outcome = $3, scan_id = $4, last_error = $5,
                finished_at = now(), lease_token = NULL, lease_until = NULL
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
            params![job.id, &job.lease_token, outcome, scan_id, error],
        )
        .await?;
    Ok(n == 1)
}

/// Records a failed attempt: queued again after `retry_delay` times the attempt number, or
/// failed for good after the last attempt (or at once when `retry` is false: another attempt
/// would fail the same way).
pub async fn fail_in(
    tx: &mut Tx,
    job: &Job,
    error: &str,
    retry_delay: Duration,
    retry: bool,
) -> Result<Failed, StoreError> {
    let row = tx
        .query_opt(
            "UPDATE jobs SET
                state = CASE WHEN NOT $5 OR attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                outcome = CASE WHEN NOT $5 OR attempts >= max_attempts THEN 'failed' ELSE NULL END,
                run_after = now() + make_interval(secs => CAST($3 AS DOUBLE PRECISION) * attempts),
                finished_at = CASE WHEN NOT $5 OR attempts >= max_attempts THEN now() ELSE NULL END,
                last_error = $4, lease_token = NULL, lease_until = NULL
             WHERE id = $1 AND lease_token = $2 AND state = 'running'
             RETURNING state",
            params![job.id, &job.lease_token, secs(retry_delay), error, retry],
        )
        .await?;
    Ok(match row {
        None => Failed::LeaseLost,
        Some(r) if r.get::<String>(0)? == "failed" => Failed::Final,
        Some(_) => Failed::Retry,
    })
}

fn job_row(r: &Row) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: r.get(0)?,
        site: r.get(1)?,
        due_at: r.get(2)?,
        state: r.get(3)?,
        attempts: r.get(4)?,
        max_attempts: r.get(5)?,
        lease_owner: r.get(6)?,
        outcome: r.get(7)?,
        scan_id: r.get(8)?,
        last_error: r.get(9)?,
        finished_at: r.get(10)?,
    })
}

impl Store {
    /// Claims the next ready job for `owner` with a lease of `lease`: the oldest due of a site
    /// that has no running job. `None` when nothing is ready (or another worker won the race for
    /// the same site).
    pub async fn claim_job(&self, owner: &str, lease: Duration) -> Result<Option<Job>, StoreError> {
        let token = hex::encode(rand::random::<[u8; 16]>());
        let claimed = self
            .db()
            .query_opt(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = $2,
                    lease_owner = $1, lease_until = now() + make_interval(secs => $3),
                    started_at = now()
                 WHERE id = (
                    SELECT j.id FROM jobs j
                    WHERE j.state = 'queued' AND j.run_after <= now()
                      AND NOT EXISTS (SELECT 1 FROM jobs r
                                      WHERE r.site = j.site AND r.state = 'running')
                    ORDER BY j.due_at, j.id
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED)
                 RETURNING id, site, settings_json, due_at, attempts, max_attempts",
                params![owner, &token, secs(lease)],
            )
            .await;
        let row = match claimed {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            // Another worker claimed a job of the same site at the same moment.
            Err(e) if e.is_unique_violation() => return Ok(None),
            Err(e) => return Err(e),
        };
        let json: String = row.get(2)?;
        Ok(Some(Job {
            id: row.get(0)?,
            site: row.get(1)?,
            settings: ScanSettings::from_json(&json)
                .map_err(|e| StoreError::Decode(format!("settings of job: {e}")))?,
            due_at: row.get(3)?,
            attempt: row.get(4)?,
            max_attempts: row.get(5)?,
            lease_token: token,
        }))
    }

    /// Extends a held lease; false when it was lost.
    pub async fn renew_lease(&self, job: &Job, lease: Duration) -> Result<bool, StoreError> {
        let n = self
            .db()
            .execute(
                "UPDATE jobs SET lease_until = now() + make_interval(secs => $3)
                 WHERE id = $1 AND lease_token = $2 AND state = 'running'",
                params![job.id, &job.lease_token, secs(lease)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives a held job back without counting the attempt (the worker is shutting down).
    pub async fn release_job(&self, job: &Job) -> Result<(), StoreError> {
        self.db()
            .execute(
                "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_token = NULL,
                    lease_until = NULL
                 WHERE id = $1 AND lease_token = $2 AND state = 'running'",
                params![job.id, &job.lease_token],
            )
            .await?;
        Ok(())
    }

    /// Puts jobs whose lease expired back in the queue (or marks them failed when they have used
    /// their attempts); returns (site, new state) of each.
    pub async fn reap_expired_leases(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .db()
            .query(
                "UPDATE jobs SET
                    state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                    outcome = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE NULL END,
                    finished_at = CASE WHEN attempts >= max_attempts THEN now() ELSE NULL END,
                    last_error = 'lease expired: the worker running it stopped (killed or lost)',
                    lease_token = NULL, lease_until = NULL
                 WHERE state = 'running' AND lease_until < now()
                 RETURNING site, state",
                &[],
            )
            .await?;
        rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect()
    }

    /// Ready and running jobs, and how late the oldest ready one is.
    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let r = self
            .db()
            .query_opt(
                "SELECT count(*) FILTER (WHERE state = 'queued' AND run_after <= now()),
                    CAST(COALESCE(extract(epoch FROM now() - min(due_at)
                        FILTER (WHERE state = 'queued' AND run_after <= now())), 0)
                        AS DOUBLE PRECISION),
                    count(*) FILTER (WHERE state = 'running')
                 FROM jobs WHERE state IN ('queued', 'running')",
                &[],
            )
            .await?
            .ok_or_else(|| StoreError::Decode("an aggregate returned no row".into()))?;
        Ok(QueueStats {
            ready: r.get(0)?,
            oldest_due_age_secs: r.get(1)?,
            running: r.get(2)?,
        })
    }

    /// Jobs, newest due first, optionally in one state.
    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobRow>, StoreError> {
        self.db()
            .query(
                "SELECT id, site, due_at, state, attempts, max_attempts, lease_owner, outcome,
                    scan_id, last_error, finished_at
                 FROM jobs WHERE ($1::text IS NULL OR state = $1)
                 ORDER BY due_at DESC, id DESC LIMIT $2",
                params![state.map(JobState::as_str), limit],
            )
            .await?
            .iter()
            .map(job_row)
            .collect()
    }

    /// Queues a scan of a stored site due now (besides its schedule).
    pub async fn enqueue_now(
        &self,
        site: &super::SiteRow,
        max_attempts: u32,
    ) -> Result<bool, StoreError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut tx = self.db().begin().await?;
        let queued = enqueue_in(&mut tx, &site.url, &now, &site.settings, max_attempts).await?;
        tx.commit().await?;
        Ok(queued)
    }

    /// Deletes jobs that ended (done or failed) longer than `age` ago; returns how many.
    pub async fn prune_jobs(&self, age: Duration) -> Result<u64, StoreError> {
        self.db()
            .execute(
                "DELETE FROM jobs WHERE state IN ('done', 'failed')
                    AND finished_at < now() - make_interval(secs => $1)",
                params![secs(age)],
            )
            .await
    }

    /// Drops the queued (not yet running) jobs of a site; returns how many.
    pub async fn drop_queued_jobs(&self, site: &str) -> Result<u64, StoreError> {
        self.db()
            .execute(
                "DELETE FROM jobs WHERE site = $1 AND state = 'queued'",
                params![site],
            )
            .await
    }
}
