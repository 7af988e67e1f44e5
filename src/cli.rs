//! The `pixelwatch` command line: argument parsing and the commands, callable in-process.
//!
//! Exit codes (a contract, see README): 0 clean / no drift; 1 run error; 2 policy violation or
//! drift found; 3 bad configuration or arguments.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::diff::Baseline;
use crate::model::ScanReport;
use crate::policy::Policy;
use crate::report::{self, ci, progress::Bar, terminal};
use crate::rules::Engine;
use crate::rules::consent::ConsentMode;
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

#[derive(Debug, Parser)]
#[command(
    name = "pixelwatch",
    version,
    about = "Find tracking pixels and health-data leaks on a website, in a real headless Chromium."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug). PIXELWATCH_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan a site: visit every page in headless Chromium and record what it sends where.
    Scan(ScanArgs),
    /// Scan the bundled demo clinic (no internet, no database server needed).
    Demo(DemoArgs),
    /// Stored scan history.
    Scans {
        #[command(subcommand)]
        command: ScansCommand,
    },
    /// Vendor rules: validate, explain a match.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// CI gate: scan, then exit 2 if the policy is violated or (with a baseline) anything drifted.
    Check(CheckArgs),
    /// Approved baselines: the state drift is measured against.
    Baseline {
        #[command(subcommand)]
        command: BaselineCommand,
    },
    /// Drift of a stored scan against the approved baseline (exit 2 when something drifted).
    Diff(DiffArgs),
    /// Scan every site of a config file on its cron schedule and alert on drift (runs until
    /// SIGTERM/SIGINT).
    Watch(WatchArgs),
    /// Alert channels (email, webhook) of a config file.
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Delete old scans: keep the newest N of each site (and each approved baseline's scan).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub scan: ScanArgs,
    /// Policy file (TOML); default: no advertising vendor, no phi_leak, no no_consent.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Baseline file (from `baseline export`): fail on drift too.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write JUnit XML.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write SARIF 2.1.0 (GitHub code scanning).
    #[arg(long, value_name = "FILE")]
    pub sarif: Option<PathBuf>,
    /// Write Markdown (job summary, PR comment).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Approve a scan (default: the newest of the site) as the site's baseline.
    Approve {
        /// The site's start URL.
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        scan: Option<i64>,
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Write a site's approved baseline as a portable JSON file (for CI without a database).
    Export {
        file: PathBuf,
        #[arg(long)]
        site: Option<String>,
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The site (default: the site of the scan).
    #[arg(long)]
    pub site: Option<String>,
    /// The scan to judge (default: the newest).
    #[arg(long)]
    pub scan: Option<i64>,
    /// Compare with this scan instead of the approved baseline.
    #[arg(long)]
    pub against: Option<i64>,
    /// Compare with a baseline file instead of the approved baseline.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the drift as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report of the scan with its drift highlighted.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Start URL, e.g. https://www.example-clinic.com/
    pub url: String,
    #[command(flatten)]
    pub common: CommonScanArgs,
    /// Most pages to visit.
    #[arg(long, default_value_t = 200)]
    pub max_pages: usize,
    /// Most link hops from the start URL.
    #[arg(long, default_value_t = 5)]
    pub max_depth: u32,
    /// Most pages sharing one path pattern (guards infinite calendars, ?page=N+1).
    #[arg(long, default_value_t = 25)]
    pub max_per_pattern: usize,
    /// Only visit URLs matching this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,
    /// Never visit URLs matching this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// Do not read robots.txt Sitemap lines and sitemap.xml.
    #[arg(long)]
    pub no_sitemap: bool,
    /// Your own vendor rules directory (*.toml), added to the bundled rules.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Adblock-syntax filter list (e.g. EasyPrivacy) to catch unknown trackers (repeatable).
    #[arg(long = "filter-list", value_name = "FILE")]
    pub filter_lists: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CommonScanArgs {
    /// Browser tabs working in parallel.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds a page may take to load before it is stopped and recorded as errored.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub page_timeout: u64,
    /// Milliseconds of network quiet after load that end a page's settle.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub settle_quiet: u64,
    /// Most milliseconds to wait for late pixels after load.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub settle_max: u64,
    /// Write the scan report (pixelwatch.scan/v1) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// SQLite database for scan history [default: $PIXELWATCH_DB or ~/.local/share/pixelwatch/pixelwatch.db]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Chromium or Chrome executable [default: $CHROME, then well-known paths].
    #[arg(long, value_name = "PATH")]
    pub browser: Option<PathBuf>,
    /// Argument passed to Chromium verbatim (repeatable), e.g. --browser-arg=--proxy-server=...
    #[arg(long = "browser-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub browser_args: Vec<String>,
    /// No progress bar and no summary; errors only.
    #[arg(short, long)]
    pub quiet: bool,
    /// Consent banners: never click (none: everything that fires is pre-consent), or press the
    /// banner's accept or reject button.
    #[arg(long, value_enum, default_value_t = ConsentMode::None)]
    pub consent: ConsentMode,
    /// Do not type canary values into forms (the probe never lets a form submission reach the site).
    #[arg(long)]
    pub no_probe_forms: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub common: CommonScanArgs,
}

#[derive(Debug, Subcommand)]
pub enum ScansCommand {
    /// Recent scans, newest first.
    List {
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// Only scans of this start URL.
        #[arg(long)]
        site: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// One scan: summary, or the full report with --json.
    Show {
        id: i64,
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// Print the full pixelwatch.scan/v1 report.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate the bundled rules and, if given, a directory of your own.
    Check { dir: Option<PathBuf> },
    /// Which vendor rule matches a request URL, and why.
    Explain {
        url: String,
        /// Your own rules directory, on top of the bundled rules.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

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
    if let Some(reason) = unscannable(&report) {
        eprintln!("error: {reason}");
        code = EXIT_ERROR;
    }
    Ok((report, code))
}

/// A scan where not one page loaded is a run error, with the start page's reason.
fn unscannable(report: &ScanReport) -> Option<String> {
    if report.pages.iter().any(|p| p.error.is_none()) {
        return None;
    }
    let start = report.pages.first()?;
    Some(format!(
        "no page of {} could be loaded: {}",
        report.site,
        start.error.as_deref().unwrap_or("unknown error")
    ))
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

async fn check(a: CheckArgs) -> i32 {
    // Read the inputs first: a broken policy or baseline fails before a long scan.
    let policy = match &a.policy {
        Some(p) => match Policy::read(p) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
        None => Policy::default(),
    };
    let baseline = match &a.baseline {
        Some(p) => match Baseline::read(p) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
        None => None,
    };
    let (report, code) = match scan_and_report(site_scan_options(&a.scan), &a.scan.common).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if code != EXIT_OK {
        return code;
    }
    let drift = baseline.as_ref().map(|b| crate::diff::diff(b, &report));
    let engine = match &a.scan.rules {
        Some(dir) => Engine::with_dir(dir).unwrap_or_else(|_| Engine::bundled()),
        None => Engine::bundled(),
    };
    let violations = policy.evaluate(&report, drift.as_ref(), &engine);
    let writes: [(&Option<PathBuf>, String); 3] = [
        (&a.junit, ci::junit(&report, &violations)),
        (
            &a.sarif,
            serde_json::to_string_pretty(&ci::sarif(&report, &violations)).expect("serializable"),
        ),
        (
            &a.markdown,
            ci::markdown(&report, &violations, drift.as_ref()),
        ),
    ];
    for (path, text) in writes {
        if let Some(p) = path
            && let Err(e) = std::fs::write(p, text)
        {
            eprintln!("error: cannot write '{}': {e}", p.display());
            return EXIT_ERROR;
        }
    }
    if let Some(d) = &drift {
        print!("\n{}", crate::diff::render(d));
    }
    if violations.is_empty() {
        println!("\ncheck passed: no policy violations");
        EXIT_OK
    } else {
        println!("\ncheck FAILED: {} policy violation(s)", violations.len());
        for v in &violations {
            println!(
                "  [{}] {}: {} (on {} page{})",
                v.severity.as_str().to_uppercase(),
                v.rule,
                v.message,
                v.pages_total,
                if v.pages_total == 1 { "" } else { "s" }
            );
        }
        EXIT_VIOLATION
    }
}

fn normalize_site(s: String) -> String {
    crate::crawl::normalize(&s)
        .map(|u| u.to_string())
        .unwrap_or(s)
}

fn baseline(cmd: BaselineCommand) -> i32 {
    let fail = |e: &dyn std::fmt::Display, code| {
        eprintln!("error: {e}");
        code
    };
    match cmd {
        BaselineCommand::Approve { site, scan, db } => {
            let store = match open_store(db) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let site = site.map(normalize_site);
            let id = match scan {
                Some(id) => id,
                None => match store.latest_scan_id(site.as_deref(), None) {
                    Ok(id) => id,
                    Err(e) => return fail(&e, EXIT_USAGE),
                },
            };
            let report = match store.load_scan(id) {
                Ok(r) => r,
                Err(e) => return fail(&e, EXIT_USAGE),
            };
            if let Some(s) = &site
                && *s != report.site
            {
                return fail(
                    &format!("scan {id} is of {}, not {s}", report.site),
                    EXIT_USAGE,
                );
            }
            let b = Baseline::from_scan(&report);
            if let Err(e) = store.approve_baseline(&b) {
                return fail(&e, EXIT_ERROR);
            }
            println!("approved scan #{id} as the baseline of {}", report.site);
            EXIT_OK
        }
        BaselineCommand::Export { file, site, db } => {
            let store = match open_store(db) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let site = match site.map(normalize_site) {
                Some(s) => s,
                None => match store
                    .latest_scan_id(None, None)
                    .and_then(|id| store.load_scan(id))
                {
                    Ok(r) => r.site,
                    Err(e) => return fail(&e, EXIT_USAGE),
                },
            };
            match store.baseline(&site).map(|b| b.write(&file)) {
                Ok(Ok(())) => {
                    println!("wrote the baseline of {site} to {}", file.display());
                    EXIT_OK
                }
                Ok(Err(e)) => fail(&e, EXIT_ERROR),
                Err(e) => fail(&e, EXIT_USAGE),
            }
        }
    }
}

fn diff_cmd(a: DiffArgs) -> i32 {
    let fail = |e: &dyn std::fmt::Display, code| {
        eprintln!("error: {e}");
        code
    };
    let store = match open_store(a.db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let site = a.site.map(normalize_site);
    let id = match a.scan {
        Some(id) => id,
        None => match store.latest_scan_id(site.as_deref(), None) {
            Ok(id) => id,
            Err(e) => return fail(&e, EXIT_USAGE),
        },
    };
    let report = match store.load_scan(id) {
        Ok(r) => r,
        Err(e) => return fail(&e, EXIT_USAGE),
    };
    let base = if let Some(path) = &a.baseline {
        Baseline::read(path).map_err(|e| fail(&e, EXIT_USAGE))
    } else if let Some(against) = a.against {
        store
            .load_scan(against)
            .map(|r| Baseline::from_scan(&r))
            .map_err(|e| fail(&e, EXIT_USAGE))
    } else {
        store
            .baseline(&report.site)
            .map_err(|e| fail(&e, EXIT_USAGE))
    };
    let base = match base {
        Ok(b) => b,
        Err(code) => return code,
    };
    let drift = crate::diff::diff(&base, &report);
    if let Some(p) = &a.json {
        let json = serde_json::to_vec_pretty(&drift).expect("serializable");
        if let Err(e) = std::fs::write(p, json) {
            return fail(&format!("cannot write '{}': {e}", p.display()), EXIT_ERROR);
        }
    }
    print!("{}", crate::diff::render(&drift));
    if drift.is_empty() {
        EXIT_OK
    } else {
        EXIT_VIOLATION
    }
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch config (TOML): sites, schedules, alert channels. See docs/watch.md.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// SQLite database [default: `db` in the config, then as for `scan`].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Send a test message on every channel of the config (exit 1 if any fails).
    Test {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Scans to keep per site, newest first.
    #[arg(long, value_name = "N")]
    pub keep: usize,
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

fn read_config(path: &std::path::Path) -> Result<crate::config::Config, i32> {
    crate::config::Config::read(path).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

async fn watch_cmd(a: WatchArgs) -> i32 {
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

async fn alert_cmd(cmd: AlertCommand) -> i32 {
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

fn prune_cmd(a: PruneArgs) -> i32 {
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
