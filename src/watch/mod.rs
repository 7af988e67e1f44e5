//! Scheduled watching: scan each configured site on its cron schedule, diff against its approved
//! baseline, alert on new drift and on a site that keeps failing, keep all history in the store.
//!
//! Each site has its own task that sleeps until the next occurrence of its schedule; a semaphore
//! bounds how many scans (each with its own browser) run at once. A run that overruns its next
//! occurrence skips it (the next one is computed after the run). One site failing never stops
//! the others. Shutdown (SIGTERM/SIGINT) stops the sleeps and interrupts running scans (their
//! browsers are killed); what was stored stays stored.

pub mod runs;

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

use crate::alert::{Alerter, DriftAlert, judge};
use crate::config::{Config, SiteConfig, parse_schedule};
use crate::scan::{self, Silent};
use crate::store::{DbTarget, Store, StoreError};
pub use runs::WatchRun;

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
        match self {
            WatchError::NoSites(_) | WatchError::Alert(_) => true,
            WatchError::Store(e) => e.is_usage(),
        }
    }
}

struct Shared {
    config: Config,
    store: Store,
    alerter: Alerter,
    permits: Semaphore,
}

/// Watches until `shutdown` resolves. `config_name` names the file in errors.
pub async fn run(
    config: Config,
    config_name: &str,
    db: DbTarget,
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
    let store = Store::open(&db).await?;
    let shared = Arc::new(Shared {
        permits: Semaphore::new(config.max_concurrent_scans),
        config,
        store,
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
        db = %db,
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

/// One scheduled run of one site: re-send its failed alerts, scan, then store the scan, its drift
/// and the alert decision in one transaction, deliver, record the run.
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
    let channels = alerter.channel_names();
    let threshold = config.alert_after_failures;
    let recorded = match scan::run(&opts, Arc::new(Silent)).await {
        Err(e) => {
            let error = e.to_string();
            run.error = Some(error.clone());
            async {
                let mut tx = store.db().begin().await?;
                let d =
                    judge::record_failed_run(&mut tx, &key, &error, &channels, threshold).await?;
                tx.commit().await?;
                Ok(d)
            }
            .await
        }
        Ok(mut report) => {
            let judged = async {
                let mut tx = store.db().begin().await?;
                let j = judge::record_scan(&mut tx, &mut report, &channels, threshold).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(j)
            }
            .await;
            match judged {
                Ok(j) => {
                    run.scan_id = Some(j.scan_id);
                    run.drift_added = j.drift_added;
                    run.error = j.failure;
                    Ok(j.decision)
                }
                Err(e) => {
                    run.error = Some(format!("the scan could not be stored: {e}"));
                    Err(e)
                }
            }
        }
    };
    match recorded {
        Ok(decision) => match alerter.after(store, decision).await {
            Ok(DriftAlert::Sent(outcomes)) => {
                tracing::info!(site = %key, added = run.drift_added, channels = outcomes.len(), "alerted")
            }
            Ok(DriftAlert::AlreadyAlerted) => {
                tracing::info!(site = %key, added = run.drift_added, "drift unchanged since the last alert")
            }
            Ok(DriftAlert::NothingNew) => tracing::info!(site = %key, "no new drift"),
            Err(e) => tracing::error!(site = %key, error = %e, "cannot record the alert"),
        },
        Err(e) => tracing::error!(site = %key, error = %e, "cannot record the run"),
    }
    if let Some(error) = &run.error {
        tracing::warn!(site = %key, error = %error, "scheduled scan failed");
        run.outcome = "failed".into();
    }
    run.finished_at = scan::now_rfc3339();
    if let Err(e) = store.record_watch_run(&run).await {
        tracing::error!(site = %key, error = %e, "cannot record the run");
    }
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
