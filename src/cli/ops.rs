//! Operations commands: `watch`, `alert test`, `prune`.

use super::*;

pub(super) async fn watch_cmd(a: WatchArgs) -> Result<Outcome, Error> {
    let config = crate::config::Config::read(&a.config)?;
    let db =
        a.db.or_else(|| config.db.clone())
            .unwrap_or_else(DbTarget::default_target);
    let name = a.config.display().to_string();
    crate::watch::run(config, &name, db, crate::watch::shutdown_signal()).await?;
    Ok(Outcome::Clean)
}

pub(super) async fn alert_cmd(cmd: AlertCommand) -> Result<Outcome, Error> {
    let AlertCommand::Test { config } = cmd;
    let c = crate::config::Config::read(&config)?;
    let alerter = crate::alert::Alerter::from_config(&c)?;
    if alerter.is_empty() {
        return Err(Error::Usage(format!(
            "config '{}' has no [email] or [webhook] section",
            config.display()
        )));
    }
    let mut failed = 0;
    for o in alerter.send_all(&crate::alert::Alert::test()).await {
        match &o.error {
            None => println!("{}: test alert sent", o.channel),
            Some(e) => {
                println!("{}: FAILED after {} attempt(s): {e}", o.channel, o.attempts);
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(Error::Run(format!("{failed} alert channel(s) failed")));
    }
    Ok(Outcome::Clean)
}

pub(super) async fn prune_cmd(a: PruneArgs) -> Result<Outcome, Error> {
    if a.keep == 0 {
        return Err(Error::Usage("--keep must be at least 1".into()));
    }
    let store = open_store(&a.db).await?;
    let n = store.prune(a.keep).await?;
    println!(
        "deleted {n} scan(s); kept the newest {} of each site",
        a.keep
    );
    if store.db().is_postgres() {
        let age = std::time::Duration::from_secs(a.jobs_older_than.saturating_mul(86_400));
        let jobs = store.prune_jobs(age).await?;
        println!(
            "deleted {jobs} queue job(s) that ended more than {} day(s) ago",
            a.jobs_older_than
        );
    }
    Ok(Outcome::Clean)
}
