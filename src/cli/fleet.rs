//! Fleet commands: `sites add|list|show|set|remove|import`, `scheduler`, `worker`, `jobs`.

use super::*;
use crate::config::{Config, parse_schedule};
use crate::fleet::{self, metrics::WorkerMetrics, require_postgres};
use crate::settings::ScanSettings;
use crate::store::sites::Upsert;
use std::time::Duration;

fn checked(settings: &ScanSettings) -> Result<(), Error> {
    settings
        .check()
        .map_err(|e| Error::Usage(format!("scan settings: {e}")))
}

fn schedule(expr: &str) -> Result<(), Error> {
    parse_schedule(expr).map(|_| ()).map_err(Error::Usage)
}

/// Settings as TOML lines, each made safe for a terminal (a setting can quote a page's text).
fn print_toml(settings: &ScanSettings) {
    for line in toml::to_string(settings)
        .expect("settings serialize as TOML")
        .lines()
    {
        println!("{}", untrusted::terminal(line));
    }
}

pub(super) async fn sites_cmd(cmd: SitesCommand) -> Result<Outcome, Error> {
    match cmd {
        SitesCommand::Add {
            url,
            schedule: cron,
            settings,
            db,
        } => {
            let url = site_url(&url)?;
            schedule(&cron)?;
            checked(&settings)?;
            open_store(&db)
                .await?
                .add_site(&url, &cron, &settings)
                .await?;
            println!("added {} (schedule \"{cron}\")", untrusted::terminal(&url));
        }
        SitesCommand::List { db, json } => {
            let sites = open_store(&db).await?.sites().await?;
            if json {
                for s in &sites {
                    println!("{}", serde_json::to_string(s).expect("serializable"));
                }
            } else if sites.is_empty() {
                println!(
                    "no sites stored; add one with `pixelwatch sites add URL --schedule CRON`"
                );
            } else {
                println!("{:<48} {:<18} SETTINGS", "SITE", "SCHEDULE");
                for s in &sites {
                    println!(
                        "{:<48} {:<18} {}",
                        untrusted::terminal(&s.url),
                        s.schedule,
                        untrusted::terminal(&s.settings.to_json())
                    );
                }
            }
        }
        SitesCommand::Show { url, db, json } => {
            let url = site_url(&url)?;
            let s = open_store(&db).await?.site(&url).await?;
            let effective = s.settings.effective();
            if json {
                let v = serde_json::json!({
                    "site": s, "effective": effective,
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).expect("serializable")
                );
            } else {
                println!("site:      {}", untrusted::terminal(&s.url));
                println!("schedule:  {} (UTC)", s.schedule);
                println!("added:     {}", s.created_at);
                println!("changed:   {}", s.updated_at);
                if let Some(t) = &s.enqueued_until {
                    println!("queued up to: {t}");
                }
                println!("\n# set for this site");
                print_toml(&s.settings);
                println!("\n# what a scan uses (defaults filled in)");
                print_toml(&effective);
            }
        }
        SitesCommand::Set {
            url,
            schedule: cron,
            unset,
            settings,
            db,
        } => {
            let url = site_url(&url)?;
            if let Some(c) = &cron {
                schedule(c)?;
            }
            let store = open_store(&db).await?;
            let row = store.site(&url).await?;
            let mut merged = row.settings;
            for key in &unset {
                merged.unset(key).map_err(Error::Usage)?;
            }
            let merged = merged.merge(settings);
            checked(&merged)?;
            let cron = cron.unwrap_or(row.schedule);
            store.update_site(&url, &cron, &merged).await?;
            println!(
                "updated {} (schedule \"{cron}\"): {}",
                untrusted::terminal(&url),
                untrusted::terminal(&merged.to_json())
            );
        }
        SitesCommand::Remove { url, db } => {
            let url = site_url(&url)?;
            let store = open_store(&db).await?;
            if !store.remove_site(&url).await? {
                return Err(crate::store::StoreError::NoSite(url).into());
            }
            let dropped = if store.db().is_postgres() {
                store.drop_queued_jobs(&url).await?
            } else {
                0
            };
            println!(
                "removed {} ({dropped} queued scan(s) dropped; its scans and baseline stay)",
                untrusted::terminal(&url)
            );
        }
        SitesCommand::Import { config, db } => {
            let c = Config::read(&config)?;
            if c.sites.is_empty() {
                return Err(Error::Usage(format!(
                    "config '{}' names no [[site]] to import",
                    config.display()
                )));
            }
            let store = open_store(&db).await?;
            let (mut added, mut updated, mut same) = (0, 0, 0);
            for s in &c.sites {
                match store
                    .upsert_site(&s.site_key(), &s.schedule, &s.settings)
                    .await?
                {
                    Upsert::Added => added += 1,
                    Upsert::Updated => updated += 1,
                    Upsert::Unchanged => same += 1,
                }
            }
            println!(
                "imported {} site(s) from {}: {added} added, {updated} updated, {same} unchanged",
                c.sites.len(),
                config.display()
            );
        }
    }
    Ok(Outcome::Clean)
}

pub(super) async fn scheduler_cmd(a: SchedulerArgs) -> Result<Outcome, Error> {
    let target = a.db.target();
    require_postgres(&target, "scheduler")?;
    if a.max_attempts == 0 {
        return Err(Error::Usage("--max-attempts must be at least 1".into()));
    }
    let store = Store::open(&target).await?;
    let opts = fleet::scheduler::SchedulerOptions {
        tick: Duration::from_millis(a.tick_ms.max(10)),
        catch_up: Duration::from_secs(a.catch_up),
        max_attempts: a.max_attempts,
    };
    fleet::scheduler::run(store, opts, crate::watch::shutdown_signal()).await?;
    Ok(Outcome::Clean)
}

pub(super) async fn worker_cmd(a: WorkerArgs) -> Result<Outcome, Error> {
    let target = a.db.target();
    require_postgres(&target, "worker")?;
    if a.concurrency == 0 || a.lease == 0 {
        return Err(Error::Usage(
            "--concurrency and --lease must be at least 1".into(),
        ));
    }
    let config = match &a.config {
        Some(p) => {
            let c = Config::read(p)?;
            if !c.sites.is_empty() {
                tracing::warn!(config = %p.display(), "the worker does not read [[site]] blocks; store them with `pixelwatch sites import --config FILE`");
            }
            c
        }
        None => Config::parse("", "(no config)")?,
    };
    let alerter = crate::alert::Alerter::from_config(&config)?;
    if alerter.is_empty() {
        tracing::warn!(
            "no [email] or [webhook] configured (--config): drift is recorded in the store but not sent"
        );
    }
    let shutdown = crate::watch::shutdown_signal();
    let store = Store::open(&target).await?;
    let (metrics, registry) = WorkerMetrics::registered();
    let _server = match a.metrics_addr {
        Some(addr) => {
            let (bound, task) = crate::metrics::serve(addr, Arc::new(registry))
                .await
                .map_err(|source| fleet::FleetError::Metrics { addr, source })?;
            tracing::info!(%bound, "serving /metrics");
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    let opts = fleet::worker::WorkerOptions {
        concurrency: a.concurrency,
        lease: Duration::from_secs(a.lease),
        retry_delay: Duration::from_secs(a.retry_delay),
        poll: Duration::from_millis(a.poll_ms.max(10)),
        browser: a.browser.or(config.browser.clone()),
        alert_after_failures: config.alert_after_failures,
        resend_every: Duration::from_secs(30),
    };
    fleet::worker::run(store, alerter, opts, metrics, shutdown).await?;
    Ok(Outcome::Clean)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn jobs_cmd(cmd: JobsCommand) -> Result<Outcome, Error> {
    match cmd {
        JobsCommand::List {
            db,
            state,
            limit,
            json,
        } => {
            let target = db.target();
            require_postgres(&target, "jobs list")?;
            let jobs = Store::open(&target).await?.list_jobs(state, limit).await?;
            if json {
                for j in &jobs {
                    println!("{}", serde_json::to_string(j).expect("serializable"));
                }
            } else {
                println!(
                    "{:>6} {:<8} {:<25} {:>8} {:<12} SITE",
                    "ID", "STATE", "DUE", "ATTEMPTS", "OUTCOME"
                );
                for j in &jobs {
                    println!(
                        "{:>6} {:<8} {:<25} {:>8} {:<12} {}{}",
                        j.id,
                        j.state,
                        j.due_at,
                        format!("{}/{}", j.attempts, j.max_attempts),
                        j.outcome.as_deref().unwrap_or("-"),
                        untrusted::terminal(&j.site),
                        j.last_error
                            .as_deref()
                            .map(|e| format!("  ({})", untrusted::terminal(e)))
                            .unwrap_or_default()
                    );
                }
            }
        }
        JobsCommand::Add {
            urls,
            all,
            max_attempts,
            db,
        } => {
            let target = db.target();
            require_postgres(&target, "jobs add")?;
            if !all && urls.is_empty() {
                return Err(Error::Usage("name stored sites, or --all".into()));
            }
            let wanted = urls
                .iter()
                .map(|u| site_url(u))
                .collect::<Result<Vec<_>, _>>()?;
            let store = Store::open(&target).await?;
            let sites = match all {
                true => store.sites().await?,
                false => {
                    let mut v = Vec::new();
                    for u in &wanted {
                        v.push(store.site(u).await?);
                    }
                    v
                }
            };
            let mut queued = 0;
            for s in &sites {
                queued += store.enqueue_now(s, max_attempts.max(1)).await? as usize;
            }
            println!("queued {queued} scan(s)");
        }
    }
    Ok(Outcome::Clean)
}
