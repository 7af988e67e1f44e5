//! `pixelwatch worker`: runs queued scans, each with its own browser.
//!
//! Invariants:
//! - A job is scanned only while this worker holds its lease; the lease is renewed every third
//!   of its length, and a renewal that finds it lost stops the scan (another worker has the job).
//! - A finished scan is stored together with its drift, its alert decision and the job's `done`
//!   in one transaction that checks the lease, or not at all; alerts go out after the commit,
//!   each claimed first, so no alert is sent twice by the fleet.
//! - Nothing accepted is dropped while the database is away: storing a finished scan is retried
//!   with backoff until it commits, or until the lease turns out lost (the job then runs again).
//! - A scan that could not run (the browser did not start, ...) is retried after a delay; after
//!   its last attempt the job is failed with its error and counts as a failure of its site.
//! - On shutdown, running scans stop and their jobs go back to the queue without using an attempt.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::metrics::WorkerMetrics;
use super::{FleetError, pause, process_name};
use crate::alert::history::Decision;
use crate::alert::{Alerter, DriftAlert, judge};
use crate::model::ScanReport;
use crate::scan;
use crate::store::jobs::{self, Failed, Job};
use crate::store::{Store, StoreError};

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs run at the same time.
    pub concurrency: usize,
    pub lease: Duration,
    /// Wait before a failed job runs again (times the attempt number).
    pub retry_delay: Duration,
    /// How often an idle slot polls the queue.
    pub poll: Duration,
    pub browser: Option<PathBuf>,
    /// A `site_down` alert after this many failed scans in a row.
    pub alert_after_failures: u32,
    /// How often undelivered alerts of the whole fleet are re-sent.
    pub resend_every: Duration,
}

struct Ctx {
    store: Store,
    alerter: Alerter,
    opts: WorkerOptions,
    metrics: WorkerMetrics,
    owner: String,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    store: Store,
    alerter: Alerter,
    opts: WorkerOptions,
    metrics: WorkerMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), FleetError> {
    let ctx = Arc::new(Ctx {
        owner: process_name(),
        store,
        alerter,
        opts,
        metrics,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..ctx.opts.concurrency.max(1) {
        tasks.spawn(slot(ctx.clone(), stop_rx.clone()));
    }
    tasks.spawn(upkeep(ctx.clone(), stop_rx));
    tracing::info!(db = %ctx.store.shown(), owner = %ctx.owner, concurrency = ctx.opts.concurrency, "working");
    shutdown.await;
    tracing::info!("shutting down: giving running jobs back to the queue");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One scan at a time: claim, scan, finish; poll when nothing is due.
async fn slot(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match ctx.store.claim_job(&ctx.owner, ctx.opts.lease).await {
            Ok(Some(job)) => {
                run_job(&ctx, job, &mut stop).await;
                continue;
            }
            Ok(None) => ctx.opts.poll,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim a job; retrying");
                ctx.opts.poll.max(Duration::from_secs(1))
            }
        };
        if pause(wait, &mut stop).await {
            return;
        }
    }
}

/// Renews the lease until it is lost (then returns).
async fn hold_lease(ctx: &Ctx, job: &Job) {
    loop {
        tokio::time::sleep(ctx.opts.lease / 3).await;
        match ctx.store.renew_lease(job, ctx.opts.lease).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(job = job.id, error = %e, "cannot renew the lease; retrying"),
        }
    }
}

async fn run_job(ctx: &Ctx, job: Job, stop: &mut watch::Receiver<bool>) {
    tracing::info!(job = job.id, site = %job.site, due = %job.due_at, attempt = job.attempt, of = job.max_attempts, "scanning");
    let opts = job.settings.to_options(&job.site, ctx.opts.browser.clone());
    let progress: Arc<dyn scan::Progress> = Arc::new(ctx.metrics.clone());
    let scanned = tokio::select! {
        r = scan::run(&opts, progress) => r,
        () = hold_lease(ctx, &job) => {
            tracing::warn!(job = job.id, site = %job.site, "lease lost: another worker has the job; dropping this scan");
            ctx.metrics.scan_ended("lease_lost");
            return;
        }
        _ = stop.changed() => {
            if let Err(e) = ctx.store.release_job(&job).await {
                tracing::warn!(job = job.id, error = %e, "cannot give the job back; it runs again when its lease expires");
            }
            ctx.metrics.scan_ended("released");
            return;
        }
    };
    match scanned {
        Ok(mut report) => {
            tokio::select! {
                () = finish(ctx, &job, &mut report, stop) => {}
                () = hold_lease(ctx, &job) => {
                    tracing::warn!(job = job.id, "lease lost while storing the scan; the job runs again");
                    ctx.metrics.scan_ended("lease_lost");
                }
            }
        }
        // A setting the scan refuses (a bad --submit-forms host, a rules directory missing on
        // this worker) fails the same way every time: no retries.
        Err(e) => fail(ctx, &job, &e.to_string(), !e.is_usage()).await,
    }
}

/// Stores the scan, its drift, the alert decision and `done` in one transaction (retried while
/// the database is unreachable), then delivers the alert.
async fn finish(ctx: &Ctx, job: &Job, report: &mut ScanReport, stop: &mut watch::Receiver<bool>) {
    let mut wait = Duration::from_millis(500);
    loop {
        match finish_once(ctx, job, report).await {
            Ok(Some((outcome, decision))) => {
                tracing::info!(job = job.id, site = %job.site, scan = report.id, outcome, "scan stored");
                ctx.metrics.scan_ended(outcome);
                deliver(ctx, decision).await;
                return;
            }
            Ok(None) => {
                tracing::warn!(job = job.id, site = %job.site, "lease lost before the scan was stored; the job runs again");
                ctx.metrics.scan_ended("lease_lost");
                return;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(job = job.id, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot store the scan yet; retrying");
                if pause(wait, stop).await {
                    ctx.metrics.scan_ended("released");
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "cannot store the scan");
                fail(
                    ctx,
                    job,
                    &format!("the scan could not be stored: {e}"),
                    true,
                )
                .await;
                return;
            }
        }
    }
}

async fn finish_once(
    ctx: &Ctx,
    job: &Job,
    report: &mut ScanReport,
) -> Result<Option<(&'static str, Decision)>, StoreError> {
    let mut tx = ctx.store.db().begin().await?;
    let channels = ctx.alerter.channel_names();
    let judged =
        judge::record_scan(&mut tx, report, &channels, ctx.opts.alert_after_failures).await?;
    let outcome = if judged.failure.is_some() {
        "unscannable"
    } else {
        "ok"
    };
    let held = jobs::finish_in(
        &mut tx,
        job,
        outcome,
        Some(judged.scan_id),
        judged.failure.as_deref(),
    )
    .await?;
    if !held {
        return Ok(None); // dropping `tx` rolls the scan back
    }
    tx.commit().await?;
    Ok(Some((outcome, judged.decision)))
}

/// Records a failed attempt: retried later (when `retry` allows), or failed for good (a failure
/// of the site).
async fn fail(ctx: &Ctx, job: &Job, error: &str, retry: bool) {
    let channels = ctx.alerter.channel_names();
    let recorded = async {
        let mut tx = ctx.store.db().begin().await?;
        let failed = jobs::fail_in(&mut tx, job, error, ctx.opts.retry_delay, retry).await?;
        let decision = match failed {
            Failed::Final => {
                judge::record_failed_run(
                    &mut tx,
                    &job.site,
                    error,
                    &channels,
                    ctx.opts.alert_after_failures,
                )
                .await?
            }
            _ => Decision::NothingNew,
        };
        tx.commit().await?;
        Ok::<_, StoreError>((failed, decision))
    }
    .await;
    match recorded {
        Ok((Failed::Retry, _)) => {
            tracing::warn!(job = job.id, site = %job.site, attempt = job.attempt, error, "scan failed; it runs again later");
            ctx.metrics.scan_ended("retry");
        }
        Ok((Failed::Final, decision)) => {
            tracing::error!(job = job.id, site = %job.site, attempts = job.attempt, error, "scan failed for good");
            ctx.metrics.scan_ended("failed");
            deliver(ctx, decision).await;
        }
        Ok((Failed::LeaseLost, _)) => ctx.metrics.scan_ended("lease_lost"),
        Err(e) => {
            tracing::error!(job = job.id, error = %e, "cannot record the failed scan; the job runs again when its lease expires");
            ctx.metrics.scan_ended("retry");
        }
    }
}

async fn deliver(ctx: &Ctx, decision: Decision) {
    match ctx.alerter.after(&ctx.store, decision).await {
        Ok(DriftAlert::Sent(outcomes)) => {
            for o in outcomes {
                ctx.metrics.alert_sent(o.channel, o.error.is_none());
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot deliver the alert now; it is re-sent by the next sweep")
        }
    }
}

/// Expired leases back to the queue, queue figures for /metrics, and re-sends of undelivered
/// alerts.
async fn upkeep(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let every = (ctx.opts.lease / 2).clamp(Duration::from_secs(1), Duration::from_secs(15));
    let mut last_resend: Option<tokio::time::Instant> = None;
    loop {
        match ctx.store.reap_expired_leases().await {
            Ok(reaped) => {
                for (site, state) in reaped {
                    tracing::warn!(site = %site, now = %state, "a job's lease expired (its worker stopped)");
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot look for expired leases"),
        }
        match ctx.store.queue_stats().await {
            Ok(q) => ctx.metrics.set_queue(&q),
            Err(e) => tracing::debug!(error = %e, "cannot read the queue"),
        }
        ctx.metrics.tick();
        if last_resend.is_none_or(|t| t.elapsed() >= ctx.opts.resend_every) {
            last_resend = Some(tokio::time::Instant::now());
            match ctx.alerter.resend_failed(&ctx.store, None).await {
                Ok(outcomes) => {
                    for o in outcomes {
                        ctx.metrics.alert_sent(o.channel, o.error.is_none());
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot re-send alerts now"),
            }
        }
        if pause(every, &mut stop).await {
            return;
        }
    }
}
