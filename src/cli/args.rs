//! Command-line arguments (clap): what each command and flag means.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::rules::consent::ConsentMode;

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
    /// Browser tabs working in parallel. A tab spends most of a page waiting for late tags,
    /// not computing, so many tabs share 2 cores well (see the README's figures).
    #[arg(long, default_value_t = crate::scan::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Seconds a page may take to load before it is stopped and recorded as errored.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub page_timeout: u64,
    /// Milliseconds in which nothing new may happen before a page counts as settled (requests
    /// that can still complete and short timers are awaited first; heartbeats, sockets and
    /// streams are not).
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub settle_quiet: u64,
    /// Most milliseconds to watch a page after load (or after a click or submit) for late tags.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub settle_max: u64,
    /// Write the scan report (pixelwatch.scan/v1) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report (verdict, vendors and BAA status, findings by cause).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write an HTTP Archive (HAR 1.2) of every page with its requests and request bodies.
    #[arg(long, value_name = "FILE")]
    pub har: Option<PathBuf>,
    /// SQLite database for scan history [default: $PIXELWATCH_DB or ~/.local/share/pixelwatch/pixelwatch.db]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Chromium or Chrome executable [default: $CHROME, then well-known paths].
    #[arg(long, value_name = "PATH")]
    pub browser: Option<PathBuf>,
    /// Argument passed to Chromium verbatim (repeatable), e.g. --browser-arg=--proxy-server=...
    #[arg(long = "browser-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub browser_args: Vec<String>,
    /// No progress bar and no summary; errors only (`check`: nothing on success, only the verdict
    /// line on failure).
    #[arg(short, long)]
    pub quiet: bool,
    /// Consent banners: never click (none: everything that fires is pre-consent), or press the
    /// banner's accept or reject button.
    #[arg(long, value_enum, default_value_t = ConsentMode::None)]
    pub consent: ConsentMode,
    /// Do not type canary values into forms (the probe never lets a typed value leave the
    /// browser: every request carrying one is recorded and failed, whoever it is addressed to).
    #[arg(long)]
    pub no_probe_forms: bool,
    /// For staging sites only: let the form probe's submissions (typed canary values included)
    /// through to this host of the scanned site, so confirmation pages and their conversion
    /// pixels are scanned. Never the default; never another host.
    #[arg(long, value_name = "HOST")]
    pub submit_forms: Option<String>,
    /// Most steps of a multi-step flow (quiz, intake: option cards, radios, selects and "Next"
    /// buttons) the form probe walks on a page, choosing the most health-revealing option at
    /// each step; 0 walks none.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub funnel_steps: usize,
    /// A scripted journey (TOML: goto, click, type, select, wait_for, submit steps) to run after
    /// the crawl; repeatable. Findings name the journey and step. See docs/journeys.md.
    #[arg(long = "journey", value_name = "FILE")]
    pub journeys: Vec<PathBuf>,
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
