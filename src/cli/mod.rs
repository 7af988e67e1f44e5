//! The `pixelwatch` command line: argument parsing and the commands, callable in-process.
//!
//! Every command returns `Result<Outcome, Error>`; [`finish`] prints an error and maps the result
//! to the exit code in one place ([`error`]): 0 clean / no drift; 1 run error; 2 policy violation
//! or drift found; 3 bad configuration or arguments.

mod args;
pub mod error;
mod gate;
use gate::{baseline, check, diff_cmd};
mod ops;
use ops::{alert_cmd, prune_cmd, watch_cmd};
mod fleet;
use fleet::{jobs_cmd, scheduler_cmd, sites_cmd, worker_cmd};
mod users;
use users::{cli_actor, dashboard_cmd, users_cmd};

pub use args::*;
pub use error::{Error, Exit, Outcome};

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::model::ScanReport;
use crate::report::{self, progress::Bar, terminal, untrusted};
use crate::rules::Engine;
use crate::scan::{self, ScanOptions};
use crate::screenshots::Screenshots;
use crate::store::{self, DbTarget, Store};

/// Parses `args`, runs the command and returns its exit code.
pub fn main_with_args<I, T>(args: I) -> ExitCode
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
                    Exit::Clean.into()
                }
                _ => Exit::Usage.into(),
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
            return finish(Err(Error::Run(format!(
                "cannot start the async runtime: {e}"
            ))));
        }
    };
    finish(runtime.block_on(run(cli)))
}

/// Prints a command's error (made safe for a terminal: messages can quote page-derived text)
/// and returns the exit code of its result.
pub fn finish(result: Result<Outcome, Error>) -> ExitCode {
    match result {
        Ok(o) => Exit::from(o).into(),
        Err(e) => {
            print_error(&e);
            e.exit().into()
        }
    }
}

fn print_error(e: &Error) {
    eprintln!("error: {}", untrusted::plain(&e.to_string()));
}

/// Logs on stderr; ANSI colours only when stderr is a terminal.
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
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<Outcome, Error> {
    match cli.command {
        Command::Scan(a) => {
            let engine = engine(a.settings.rules.as_ref())?;
            let opts = a.settings.to_options(&a.url, a.out.browser.clone());
            let scanned = scan_and_report(opts, &a.out, &engine).await?;
            scanned.into_outcome().map(|_| Outcome::Clean)
        }
        Command::Demo(a) => {
            let server = crate::demo::serve()
                .await
                .map_err(|e| Error::Run(format!("cannot start the demo site on loopback: {e}")))?;
            let demo = crate::demo::scan_options(&server);
            let mut opts = a.settings.apply(demo.clone());
            opts.browser = a.out.browser.clone();
            // The demo's own browser arguments map the tracker hosts; flags add to them.
            opts.browser_args = demo.browser_args;
            opts.browser_args
                .extend(a.settings.browser_args.clone().unwrap_or_default());
            let mut out = a.out;
            if out.json.is_none() {
                out.json = Some(PathBuf::from("pixelwatch-demo-report.json"));
            }
            if !out.quiet {
                println!(
                    "Serving the demo clinic {} on 127.0.0.1:{} (tracker hosts mapped locally)\n",
                    crate::demo::DEMO_URL,
                    server.port()
                );
            }
            let scanned = scan_and_report(opts, &out, &Engine::bundled()).await?;
            scanned.into_outcome().map(|_| Outcome::Clean)
        }
        Command::Scans { command } => scans(command).await,
        Command::Rules { command } => rules(command),
        Command::Check(a) => check(a).await,
        Command::Baseline { command } => baseline(command).await,
        Command::Diff(a) => diff_cmd(a).await,
        Command::Watch(a) => watch_cmd(a).await,
        Command::Alert { command } => alert_cmd(command).await,
        Command::Prune(a) => prune_cmd(a).await,
        Command::Sites { command } => sites_cmd(command).await,
        Command::Scheduler(a) => scheduler_cmd(a).await,
        Command::Worker(a) => worker_cmd(a).await,
        Command::Jobs { command } => jobs_cmd(command).await,
        Command::Dashboard(a) => dashboard_cmd(a).await,
        Command::Users { command } => users_cmd(command).await,
    }
}

/// The rules a scan judges with: bundled, plus `--rules DIR`.
fn engine(dir: Option<&PathBuf>) -> Result<Engine, Error> {
    Ok(match dir {
        Some(d) => Engine::with_dir(d)?,
        None => Engine::bundled(),
    })
}

/// A start URL or `--site` as normalised; a bare host name (`www.clinic.com`) is an error with
/// a suggestion.
fn site_url(raw: &str) -> Result<String, Error> {
    if let Some(u) = crate::crawl::normalize(raw) {
        return Ok(u.to_string());
    }
    let t = raw.trim();
    if !t.contains("://")
        && let Some(u) = crate::crawl::normalize(&format!("https://{t}"))
        && u.host_str().is_some_and(|h| h.contains('.'))
    {
        return Err(Error::Usage(format!(
            "'{t}' is not an http(s) URL; did you mean {u} ?"
        )));
    }
    Err(Error::Usage(format!("'{t}' is not an http(s) URL")))
}

/// A scan that ran: its report, and what went wrong after it ran (not stored, a file not
/// written, no page loaded).
struct Scanned {
    report: ScanReport,
    failures: Vec<Error>,
}

impl Scanned {
    /// The report, or the last failure (earlier ones printed).
    fn into_outcome(mut self) -> Result<ScanReport, Error> {
        match self.failures.pop() {
            None => Ok(self.report),
            Some(last) => {
                self.failures.iter().for_each(print_error);
                Err(last)
            }
        }
    }
}

/// Scans, stores, writes every requested file and prints the summary.
async fn scan_and_report(
    mut opts: ScanOptions,
    common: &RunArgs,
    engine: &Engine,
) -> Result<Scanned, Error> {
    site_url(&opts.start)?;
    let mut failures = Vec::new();
    if let Some(dir) = &common.screenshots {
        let shots = Screenshots::create(dir).map_err(|e| Error::Run(e.to_string()))?;
        opts.screenshots = Some(Arc::new(shots));
    }
    // Open the database first: a locked or unwritable database is reported before a long scan.
    let db_path = common.db.target();
    let store = match Store::open(&db_path).await {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("error: {}", untrusted::plain(&e.to_string()));
            eprintln!("       the scan runs anyway; its report is written to a file");
            None
        }
    };
    let bar = Arc::new(Bar::new(common.quiet));
    let result = scan::run(&opts, bar.clone()).await;
    bar.finish();
    let mut report = result?;
    let mut screenshots_kept = None;
    if let Some(shots) = &opts.screenshots {
        screenshots_kept = Some((shots.keep_pages_with_findings(&mut report), shots.dir()));
        if let Some(why) = shots.failure() {
            failures.push(Error::Run(why));
        }
    }
    let mut saved = false;
    if let Some(s) = store.as_ref() {
        match s.save_scan(&mut report).await {
            Ok(_) => saved = true,
            Err(e) => failures.push(Error::Run(format!("the scan could not be stored: {e}"))),
        }
    } else {
        failures.push(Error::Run(format!(
            "the scan could not be stored in '{db_path}'"
        )));
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
            Ok(()) if !saved => eprintln!("the report was saved to {}", p.display()),
            Ok(()) => {}
            Err(e) => failures.push(e.into()),
        }
    }
    if let Some(p) = &common.html {
        let (history, first_seen) = match store.as_ref() {
            Some(s) => history(s, &report.site).await,
            None => Default::default(),
        };
        let mutes = match store.as_ref() {
            Some(s) => s.active_mutes(&report.site).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let shots_href = screenshots_kept.map(|(_, dir)| report::html::href_to(dir, p));
        let cx = report::html::Context {
            history: &history,
            first_seen: &first_seen,
            mutes: &mutes,
            screenshots: shots_href.as_deref(),
            ..report::html::Context::new(&report, engine)
        };
        if let Err(e) = report::write_file(p, report::html::render(&cx).as_bytes()) {
            failures.push(e.into());
        }
    }
    if let Some(p) = &common.har
        && let Err(e) = report::har::write(&report, p)
    {
        failures.push(e.into());
    }
    if !common.quiet {
        print!("{}", terminal::summary(&report, engine));
        if let Some(p) = &json_path {
            println!("\nJSON report: {}", p.display());
        }
        if saved {
            println!("Stored in {db_path} as scan #{}", report.id.unwrap_or(0));
        }
        if let Some((kept, dir)) = screenshots_kept {
            println!(
                "Screenshots of the {kept} page{} with a finding: {}",
                if kept == 1 { "" } else { "s" },
                dir.display()
            );
        }
    }
    if let Some(reason) = report.unscannable() {
        failures.push(Error::Run(reason));
    }
    Ok(Scanned { report, failures })
}

/// The site's scans for the history chart (oldest first) and when each vendor was first seen;
/// empty when the database cannot tell.
async fn history(
    store: &Store,
    site: &str,
) -> (
    Vec<store::ScanRow>,
    std::collections::BTreeMap<String, String>,
) {
    let mut rows = store.list_scans(Some(site), 30).await.unwrap_or_default();
    rows.reverse();
    let first_seen = store.vendors_first_seen(site).await.unwrap_or_default();
    (rows, first_seen)
}

async fn open_store(db: &DbArg) -> Result<Store, Error> {
    Ok(Store::open(db.target()).await?)
}

async fn scans(cmd: ScansCommand) -> Result<Outcome, Error> {
    match cmd {
        ScansCommand::List {
            db,
            site,
            limit,
            json,
        } => {
            let site = site.map(|s| site_url(&s)).transpose()?;
            let store = open_store(&db).await?;
            let rows = store.list_scans(site.as_deref(), limit).await?;
            if json {
                for r in rows {
                    println!("{}", serde_json::to_string(&r).expect("serializable"));
                }
            } else {
                print!("{}", terminal::scan_table(&rows));
            }
            Ok(Outcome::Clean)
        }
        ScansCommand::Show { id, db, json } => {
            let store = open_store(&db).await?;
            let r = store.load_scan(id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("serializable")
                );
            } else {
                print!("{}", terminal::summary(&r, &Engine::bundled()));
            }
            Ok(Outcome::Clean)
        }
    }
}

fn rules(cmd: RulesCommand) -> Result<Outcome, Error> {
    match cmd {
        RulesCommand::Check { dir } => {
            let e = engine(dir.as_ref())?;
            println!("rules OK: {} vendors", e.vendors().len());
            Ok(Outcome::Clean)
        }
        RulesCommand::Explain { url, rules } => {
            let engine = engine(rules.as_ref())?;
            if url::Url::parse(&url).is_err() {
                return Err(Error::Usage(format!("'{url}' is not a URL")));
            }
            let shown = untrusted::terminal(&url);
            match engine.match_url(&url) {
                Some(m) => {
                    let v = m.vendor;
                    println!("{shown}");
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
                None => println!("{shown}\n  no vendor rule matches"),
            }
            Ok(Outcome::Clean)
        }
    }
}
