//! The `pixelwatch` command line: argument parsing and the commands, callable in-process.
//!
//! Exit codes (a contract, see README): 0 clean / no drift; 1 run error; 2 policy violation or
//! drift found; 3 bad configuration or arguments.

mod args;
mod gate;
use gate::{baseline, check, diff_cmd};
mod ops;
use ops::{alert_cmd, prune_cmd, watch_cmd};

pub use args::*;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::model::ScanReport;
use crate::report::{self, progress::Bar, terminal};
use crate::rules::Engine;
use crate::scan::{self, ScanOptions};
use crate::store::{self, Store};

/// Exit code: clean, no drift.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run failed.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: policy violation or drift found.
pub const EXIT_VIOLATION: i32 = 2;
/// Exit code: bad configuration or arguments.
pub const EXIT_USAGE: i32 = 3;

/// Parses `args` and runs the command; returns the exit code.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_USAGE,
            };
        }
    };
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_ERROR;
        }
    };
    runtime.block_on(run(cli))
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = std::env::var("PIXELWATCH_LOG").unwrap_or_else(|_| default.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Scan(a) => match scan_and_report(site_scan_options(&a), &a.common).await {
            Ok((_, code)) => code,
            Err(code) => code,
        },
        Command::Demo(a) => {
            let server = match crate::demo::serve().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: cannot start the demo site on loopback: {e}");
                    return EXIT_ERROR;
                }
            };
            let mut opts = crate::demo::scan_options(&server);
            let base = scan_options(&a.common);
            opts.browser = base.browser;
            opts.browser_args.extend(base.browser_args);
            opts.page_timeout = base.page_timeout;
            opts.consent = base.consent;
            opts.probe_forms = base.probe_forms;
            let mut common = a.common;
            if common.json.is_none() {
                common.json = Some(PathBuf::from("pixelwatch-demo-report.json"));
            }
            if !common.quiet {
                println!(
                    "Serving the demo clinic {} on 127.0.0.1:{} (tracker hosts mapped locally)\n",
                    crate::demo::DEMO_URL,
                    server.port()
                );
            }
            match scan_and_report(opts, &common).await {
                Ok((_, code)) => code,
                Err(code) => code,
            }
        }
        Command::Scans { command } => scans(command),
        Command::Rules { command } => rules(command),
        Command::Check(a) => check(a).await,
        Command::Baseline { command } => baseline(command),
        Command::Diff(a) => diff_cmd(a),
        Command::Watch(a) => watch_cmd(a).await,
        Command::Alert { command } => alert_cmd(command).await,
        Command::Prune(a) => prune_cmd(a),
    }
}

fn site_scan_options(a: &ScanArgs) -> ScanOptions {
    ScanOptions {
        start: a.url.clone(),
        max_pages: a.max_pages,
        max_depth: a.max_depth,
        max_per_pattern: a.max_per_pattern,
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        sitemaps: !a.no_sitemap,
        rules_dir: a.rules.clone(),
        filter_lists: a.filter_lists.clone(),
        ..scan_options(&a.common)
    }
}

fn scan_options(c: &CommonScanArgs) -> ScanOptions {
    ScanOptions {
        concurrency: c.concurrency,
        page_timeout: Duration::from_secs(c.page_timeout),
        settle_quiet: Duration::from_millis(c.settle_quiet),
        settle_max: Duration::from_millis(c.settle_max),
        browser: c.browser.clone(),
        browser_args: c.browser_args.clone(),
        consent: c.consent,
        probe_forms: !c.no_probe_forms,
        ..Default::default()
    }
}

/// Scans, stores, writes and prints. `Ok((report, exit code so far))` when a report exists,
/// `Err(exit code)` when the scan could not run.
async fn scan_and_report(
    opts: ScanOptions,
    common: &CommonScanArgs,
) -> Result<(ScanReport, i32), i32> {
    // Open the database first: a locked or unwritable database is reported before a long scan.
    let db_path = common.db.clone().unwrap_or_else(store::default_db_path);
    let mut store = match Store::open(&db_path) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("       the scan runs anyway; its report is written to a file");
            None
        }
    };
    let bar = Arc::new(Bar::new(common.quiet));
    let result = scan::run(&opts, bar.clone()).await;
    bar.finish();
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(if e.is_usage() { EXIT_USAGE } else { EXIT_ERROR });
        }
    };
    let mut code = EXIT_OK;
    let mut saved = false;
    if let Some(s) = store.as_mut() {
        match s.save_scan(&mut report) {
            Ok(_) => saved = true,
            Err(e) => {
                eprintln!("error: the scan could not be stored: {e}");
                code = EXIT_ERROR;
            }
        }
    } else {
        code = EXIT_ERROR;
    }
    let json_path = match (&common.json, saved) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => Some(PathBuf::from(format!(
            "pixelwatch-scan-{}.json",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ))),
        (None, true) => None,
    };
    if let Some(p) = &json_path {
        match report::write_json(&report, p) {
            Ok(()) => {
                if !saved {
                    eprintln!("the report was saved to {}", p.display());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                code = EXIT_ERROR;
            }
        }
    }
    if let Some(p) = &common.html
        && let Err(e) = std::fs::write(p, report::html::render(&report, None))
    {
        eprintln!("error: cannot write '{}': {e}", p.display());
        code = EXIT_ERROR;
    }
    if !common.quiet {
        print!("{}", terminal::summary(&report));
        if let Some(p) = &json_path {
            println!("\nJSON report: {}", p.display());
        }
        if saved {
            println!(
                "Stored in {} as scan #{}",
                db_path.display(),
                report.id.unwrap_or(0)
            );
        }
    }
    if let Some(reason) = report.unscannable() {
        eprintln!("error: {reason}");
        code = EXIT_ERROR;
    }
    Ok((report, code))
}

fn open_store(db: Option<PathBuf>) -> Result<Store, i32> {
    let path = db.unwrap_or_else(store::default_db_path);
    Store::open(&path).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_ERROR
    })
}

fn scans(cmd: ScansCommand) -> i32 {
    match cmd {
        ScansCommand::List {
            db,
            site,
            limit,
            json,
        } => {
            let store = match open_store(db) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let site = site.map(|s| {
                crate::crawl::normalize(&s)
                    .map(|u| u.to_string())
                    .unwrap_or(s)
            });
            match store.list_scans(site.as_deref(), limit) {
                Ok(rows) if json => {
                    for r in rows {
                        println!("{}", serde_json::to_string(&r).expect("serializable"));
                    }
                    EXIT_OK
                }
                Ok(rows) => {
                    print!("{}", terminal::scan_table(&rows));
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_ERROR
                }
            }
        }
        ScansCommand::Show { id, db, json } => {
            let store = match open_store(db) {
                Ok(s) => s,
                Err(code) => return code,
            };
            match store.load_scan(id) {
                Ok(r) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&r).expect("serializable")
                    );
                    EXIT_OK
                }
                Ok(r) => {
                    print!("{}", terminal::summary(&r));
                    EXIT_OK
                }
                Err(e @ store::StoreError::NotFound(_)) => {
                    eprintln!("error: {e}");
                    EXIT_USAGE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_ERROR
                }
            }
        }
    }
}

fn rules(cmd: RulesCommand) -> i32 {
    let load = |dir: Option<&PathBuf>| match dir {
        Some(d) => Engine::with_dir(d),
        None => Ok(Engine::bundled()),
    };
    match cmd {
        RulesCommand::Check { dir } => match load(dir.as_ref()) {
            Ok(e) => {
                println!("rules OK: {} vendors", e.vendors().len());
                EXIT_OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
        },
        RulesCommand::Explain { url, rules } => {
            let engine = match load(rules.as_ref()) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_USAGE;
                }
            };
            if url::Url::parse(&url).is_err() {
                eprintln!("error: '{url}' is not a URL");
                return EXIT_USAGE;
            }
            match engine.match_url(&url) {
                Some(m) => {
                    let v = m.vendor;
                    println!("{url}");
                    println!("  vendor:   {} ({})", v.name, v.id);
                    println!("  category: {}", v.category);
                    println!("  severity: {}", v.severity.as_str());
                    println!(
                        "  BAA:      {} (checked {})",
                        if v.baa { "offered" } else { "not offered" },
                        v.baa_checked
                    );
                    println!(
                        "  matched:  host pattern '{}' of rule {}",
                        m.pattern, v.rule
                    );
                }
                None => println!("{url}\n  no vendor rule matches"),
            }
            EXIT_OK
        }
    }
}
