//! Scheduled watching: scan each configured site on its cron schedule, diff against its approved
//! baseline, alert on new drift and on a site that keeps failing, keep all history in SQLite.
//!
//! Each site has its own task that sleeps until the next occurrence of its schedule; a semaphore
//! bounds how many scans (each with its own browser) run at once. A run that overruns its next
//! occurrence skips it (the next one is computed after the run). One site failing never stops
//! the others. Shutdown (SIGTERM/SIGINT) stops the sleeps and interrupts running scans (their
//! browsers are killed); what was stored stays stored.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, watch};

use crate::alert::{Alerter, DriftAlert};
use crate::config::{Config, SiteConfig, parse_schedule};
use crate::diff::{BASELINE_SCHEMA, Baseline, Inventory};
use crate::scan::{self, Silent};
use crate::store::{Store, StoreError};

/// One scheduled run of `pixelwatch watch`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WatchRun {
    pub site: String,
    pub started_at: String,
    pub finished_at: String,
    pub scan_id: Option<i64>,
    /// "ok" or "failed".
    pub outcome: String,
    pub drift_added: usize,
    pub error: Option<String>,
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("config '{0}' names no [[site]] to watch")]
    NoSites(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Alert(#[from] crate::alert::AlertError),
}

impl WatchError {
    /// Whether the error is the user's configuration (exit 3) rather than a run failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, WatchError::NoSites(_) | WatchError::Alert(_))
    }
}

struct Shared {
    config: Config,
    store: Mutex<Store>,
    alerter: Alerter,
    permits: Semaphore,
}

/// Watches until `shutdown` resolves. `config_name` names the file in errors.
pub async fn run(
    config: Config,
    config_name: &str,
    db: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WatchError> {
    if config.sites.is_empty() {
        return Err(WatchError::NoSites(config_name.to_string()));
    }
    let alerter = Alerter::from_config(&config)?;
    if alerter.is_empty() {
        tracing::warn!(
            "no [email] or [webhook] configured: drift is recorded in the database but not sent"
        );
    }
    let store = Store::open(&db)?;
    let shared = Arc::new(Shared {
        permits: Semaphore::new(config.max_concurrent_scans),
        config,
        store: Mutex::new(store),
        alerter,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // Alerts a previous run could not deliver (of any site, configured or not).
    let (resend, mut stop) = (shared.clone(), stop_rx.clone());
    tasks.spawn(async move {
        tokio::select! {
            r = resend.alerter.resend_failed(&resend.store, None) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "cannot re-send failed alerts");
                }
            }
            _ = stop.changed() => {}
        }
    });
    for i in 0..shared.config.sites.len() {
        tasks.spawn(site_loop(shared.clone(), i, stop_rx.clone()));
    }
    tracing::info!(
        sites = shared.config.sites.len(),
        db = %db.display(),
        "watching"
    );
    shutdown.await;
    tracing::info!("shutting down: interrupting running scans");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn site_loop(shared: Arc<Shared>, index: usize, mut stop: watch::Receiver<bool>) {
    let site = &shared.config.sites[index];
    let cron = match parse_schedule(&site.schedule) {
        Ok(c) => c,
        Err(e) => {
            // Checked when the config was read; kept as a guard.
            tracing::error!(site = %site.url, error = %e, "not watching this site");
            return;
        }
    };
    loop {
        let now = chrono::Utc::now();
        let Ok(next) = cron.find_next_occurrence(&now, false) else {
            tracing::error!(site = %site.url, schedule = %site.schedule, "the schedule has no next occurrence");
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::debug!(site = %site.url, next = %next.to_rfc3339(), "next scan");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let permit = tokio::select! {
            p = shared.permits.acquire() => p,
            _ = stop.changed() => return,
        };
        let Ok(_permit) = permit else { return };
        tokio::select! {
            _ = run_once(&shared, site) => {}
            _ = stop.changed() => {
                tracing::info!(site = %site.url, "scan interrupted by shutdown");
                return;
            }
        }
    }
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// One scheduled run of one site: re-send its failed alerts, scan, store, diff, alert, record.
async fn run_once(shared: &Shared, site: &SiteConfig) {
    let (config, store, alerter) = (&shared.config, &shared.store, &shared.alerter);
    let key = site.site_key();
    let started_at = scan::now_rfc3339();
    if let Err(e) = alerter.resend_failed(store, Some(&key)).await {
        tracing::error!(site = %key, error = %e, "cannot re-send failed alerts");
    }
    let opts = site.scan_options(config.browser.as_ref());
    let mut run = WatchRun {
        site: key.clone(),
        started_at,
        finished_at: String::new(),
        scan_id: None,
        outcome: "ok".into(),
        drift_added: 0,
        error: None,
    };
    let failure = match scan::run(&opts, Arc::new(Silent)).await {
        Err(e) => Some(e.to_string()),
        Ok(mut report) => {
            let saved = lock(store).save_scan(&mut report);
            match saved {
                Err(e) => Some(format!("the scan could not be stored: {e}")),
                Ok(id) => {
                    run.scan_id = Some(id);
                    if let Some(reason) = report.unscannable() {
                        Some(reason)
                    } else {
                        if let Err(e) = lock(store).reset_scan_failures(&key) {
                            tracing::error!(site = %key, error = %e, "cannot record the scan");
                        }
                        run.drift_added = judge(store, alerter, &report).await;
                        None
                    }
                }
            }
        }
    };
    if let Some(error) = failure {
        tracing::warn!(site = %key, error = %error, "scheduled scan failed");
        if let Err(e) = alerter
            .on_scan_failure(store, &key, &error, config.alert_after_failures)
            .await
        {
            tracing::error!(site = %key, error = %e, "cannot record the failure");
        }
        run.outcome = "failed".into();
        run.error = Some(error);
    }
    run.finished_at = scan::now_rfc3339();
    if let Err(e) = lock(store).record_watch_run(&run) {
        tracing::error!(site = %key, error = %e, "cannot record the run");
    }
}

/// Diffs a stored scan against the approved baseline (or, without one, an empty one) and alerts;
/// returns how many items were added.
async fn judge(
    store: &Mutex<Store>,
    alerter: &Alerter,
    report: &crate::model::ScanReport,
) -> usize {
    let baseline = match lock(store).baseline(&report.site) {
        Ok(b) => Some(b),
        Err(StoreError::NoBaseline(_)) => {
            tracing::warn!(site = %report.site, "no approved baseline: everything found counts as new; approve one with `pixelwatch baseline approve`");
            None
        }
        Err(e) => {
            tracing::error!(site = %report.site, error = %e, "cannot read the baseline");
            return 0;
        }
    };
    let empty = Baseline {
        schema: BASELINE_SCHEMA.into(),
        site: report.site.clone(),
        scan_id: None,
        approved_at: String::new(),
        inventory: Inventory::default(),
    };
    let drift = crate::diff::diff(baseline.as_ref().unwrap_or(&empty), report);
    match alerter
        .on_drift(store, &drift, report, baseline.as_ref())
        .await
    {
        Ok(DriftAlert::Sent(outcomes)) => {
            tracing::info!(site = %report.site, added = drift.added.len(), channels = outcomes.len(), "drift alerted")
        }
        Ok(DriftAlert::AlreadyAlerted) => {
            tracing::info!(site = %report.site, added = drift.added.len(), "drift unchanged since the last alert")
        }
        Ok(DriftAlert::NothingNew) => tracing::info!(site = %report.site, "no new drift"),
        Err(e) => tracing::error!(site = %report.site, error = %e, "cannot record the alert"),
    }
    drift.added.len()
}

/// Resolves when the process receives SIGTERM or SIGINT. The handlers are installed when this
/// is called (not when first polled), so a signal during start-up is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
