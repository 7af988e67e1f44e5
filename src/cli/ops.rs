//! Operations commands: `watch`, `alert test`, `prune`.

use super::*;

fn read_config(path: &std::path::Path) -> Result<crate::config::Config, i32> {
    crate::config::Config::read(path).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

pub(super) async fn watch_cmd(a: WatchArgs) -> i32 {
    let config = match read_config(&a.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let db =
        a.db.or_else(|| config.db.clone())
            .unwrap_or_else(store::default_db_path);
    let name = a.config.display().to_string();
    match crate::watch::run(config, &name, db, crate::watch::shutdown_signal()).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_usage() { EXIT_USAGE } else { EXIT_ERROR }
        }
    }
}

pub(super) async fn alert_cmd(cmd: AlertCommand) -> i32 {
    let AlertCommand::Test { config } = cmd;
    let c = match read_config(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let alerter = match crate::alert::Alerter::from_config(&c) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if alerter.is_empty() {
        eprintln!(
            "error: config '{}' has no [email] or [webhook] section",
            config.display()
        );
        return EXIT_USAGE;
    }
    let mut code = EXIT_OK;
    for o in alerter.send_all(&crate::alert::Alert::test()).await {
        match &o.error {
            None => println!("{}: test alert sent", o.channel),
            Some(e) => {
                println!("{}: FAILED after {} attempt(s): {e}", o.channel, o.attempts);
                code = EXIT_ERROR;
            }
        }
    }
    code
}

pub(super) fn prune_cmd(a: PruneArgs) -> i32 {
    if a.keep == 0 {
        eprintln!("error: --keep must be at least 1");
        return EXIT_USAGE;
    }
    let store = match open_store(a.db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match store.prune(a.keep) {
        Ok(n) => {
            println!(
                "deleted {n} scan(s); kept the newest {} of each site",
                a.keep
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}
