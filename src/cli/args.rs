//! Command-line arguments (clap): what each command and flag means.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::ScanSettings;
use crate::store::DbTarget;

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
    /// Sites in the store (scanned by `worker`s on their schedule): add, list, show, set,
    /// remove, import from a config file.
    Sites {
        #[command(subcommand)]
        command: SitesCommand,
    },
    /// Fleet: queue each stored site's scans when they are due (PostgreSQL; any number may run,
    /// one is active).
    Scheduler(SchedulerArgs),
    /// Fleet: run queued scans, store them, alert on drift, serve /metrics (PostgreSQL).
    Worker(WorkerArgs),
    /// Fleet: the job queue.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Web dashboard over the store: every site's verdict and history; approve baselines, scan
    /// now, mute findings (sign-in required; see docs/dashboard.md).
    Dashboard(DashboardArgs),
    /// Dashboard accounts: add, list, remove, change a role.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

/// The store: `--db`.
#[derive(Debug, Clone, Args)]
pub struct DbArg {
    /// SQLite file or postgres:// URL [default: $PIXELWATCH_DB, else
    /// ~/.local/share/pixelwatch/pixelwatch.db].
    #[arg(long = "db", value_name = "PATH|URL")]
    pub db: Option<DbTarget>,
}

impl DbArg {
    /// The database named, else the default.
    pub fn target(&self) -> DbTarget {
        self.db.clone().unwrap_or_else(DbTarget::default_target)
    }
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
        #[command(flatten)]
        db: DbArg,
    },
    /// Write a site's approved baseline as a portable JSON file (for CI without a database).
    Export {
        file: PathBuf,
        #[arg(long)]
        site: Option<String>,
        #[command(flatten)]
        db: DbArg,
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
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Start URL, e.g. https://www.example-clinic.com/
    pub url: String,
    #[command(flatten)]
    pub settings: ScanSettings,
    #[command(flatten)]
    pub out: RunArgs,
}

/// How this run behaves and where its results go (not scan settings: a site never stores them).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Write the scan report (pixelwatch.scan/v1) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report (verdict, vendors and BAA status, findings by cause).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write an HTTP Archive (HAR 1.2) of every page with its requests and request bodies.
    #[arg(long, value_name = "FILE")]
    pub har: Option<PathBuf>,
    /// Save a PNG of each page with a finding in DIR (created if needed), named in the reports.
    #[arg(long, value_name = "DIR")]
    pub screenshots: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArg,
    /// Chromium or Chrome executable [default: $CHROME, then well-known paths].
    #[arg(long, value_name = "PATH")]
    pub browser: Option<PathBuf>,
    /// No progress bar and no summary; errors only (`check`: nothing on success, only the verdict
    /// line on failure).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub settings: ScanSettings,
    #[command(flatten)]
    pub out: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum ScansCommand {
    /// Recent scans, newest first.
    List {
        #[command(flatten)]
        db: DbArg,
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
        #[command(flatten)]
        db: DbArg,
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
    /// SQLite file or postgres:// URL [default: `db` in the config, then as for `scan`].
    #[arg(long = "db", value_name = "PATH|URL")]
    pub db: Option<DbTarget>,
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
    /// PostgreSQL: also delete queue jobs that ended more than this many days ago.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub jobs_older_than: u64,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Store a site with its cron schedule and scan settings.
    Add {
        /// Start URL, e.g. https://www.example-clinic.com/
        url: String,
        /// Cron expression (UTC): 5 fields, or 6 with seconds first, e.g. "0 3 * * *".
        #[arg(long, value_name = "CRON")]
        schedule: String,
        #[command(flatten)]
        settings: ScanSettings,
        #[command(flatten)]
        db: DbArg,
    },
    /// Every stored site.
    List {
        #[command(flatten)]
        db: DbArg,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// One stored site: its schedule, its settings and the settings a scan uses.
    Show {
        url: String,
        #[command(flatten)]
        db: DbArg,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a stored site: the flags given replace its values, the rest stay.
    Set {
        url: String,
        #[arg(long, value_name = "CRON")]
        schedule: Option<String>,
        /// Clear a setting (its config-file name, e.g. max_pages), so the default applies
        /// (repeatable).
        #[arg(long, value_name = "SETTING")]
        unset: Vec<String>,
        #[command(flatten)]
        settings: ScanSettings,
        #[command(flatten)]
        db: DbArg,
    },
    /// Remove a stored site (its scans, baseline and history stay; queued scans are dropped).
    Remove {
        url: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Add or update every [[site]] of a config file (the file is not needed afterwards).
    Import {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// How often the active scheduler looks for due scans, and a standby for a vacant lead.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub tick_ms: u64,
    /// Due times missed by longer than this (every scheduler was down) are skipped, not queued.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub catch_up: u64,
    /// Attempts per job before it is marked failed with its last error.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_attempts: u32,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Scans run at the same time, each with its own browser.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub concurrency: usize,
    /// Config file for alert channels ([email], [webhook], [retry]), `browser` and
    /// `alert_after_failures`; its [[site]] blocks are not read (use `sites import`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Chromium or Chrome executable [default: `browser` in the config, $CHROME, well-known paths].
    #[arg(long, value_name = "PATH")]
    pub browser: Option<PathBuf>,
    /// Serve Prometheus metrics on this address, e.g. 0.0.0.0:9187.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// A job's lease: a worker that stops renewing it for this long (killed, lost) loses the job
    /// to another worker.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub lease: u64,
    /// Wait before a failed job runs again (multiplied by the attempt number).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub retry_delay: u64,
    /// How often an idle worker polls the queue.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub poll_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Recent jobs, newest due first.
    List {
        #[command(flatten)]
        db: DbArg,
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<crate::store::jobs::JobState>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Queue a scan of stored sites now (besides their schedule).
    Add {
        /// Stored sites' start URLs.
        urls: Vec<String>,
        /// Every stored site.
        #[arg(long, conflicts_with = "urls")]
        all: bool,
        /// Attempts before the job is marked failed.
        #[arg(long, default_value_t = 3, value_name = "N")]
        max_attempts: u32,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Address to serve on. Plain HTTP: keep it on loopback, or put a TLS reverse proxy in front.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Trust this header, set by an authenticating reverse proxy, as the signed-in account's name
    /// (password sign-in is then off). Only the proxy may reach the dashboard.
    #[arg(long, value_name = "NAME")]
    pub auth_header: Option<String>,
    /// Watch config: schedules and scan settings of its [[site]] blocks for sites not stored in
    /// the database.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Chromium for "Scan now" on SQLite [default: `browser` in the config, $CHROME, well-known
    /// paths].
    #[arg(long, value_name = "PATH")]
    pub browser: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add an account. The password is read from standard input (prompted for, without echo, on
    /// a terminal), never from a flag.
    Add {
        name: String,
        /// viewer: looks; approver: also approves baselines, scans now, mutes findings.
        #[arg(long, value_enum, default_value = "viewer")]
        role: crate::store::accounts::Role,
        /// No password: the account signs in only through the proxy's --auth-header.
        #[arg(long)]
        no_password: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Every account (never a password hash).
    List {
        #[command(flatten)]
        db: DbArg,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Remove an account and end its sessions.
    Remove {
        name: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Change an account's role.
    Role {
        name: String,
        #[arg(value_enum)]
        role: crate::store::accounts::Role,
        #[command(flatten)]
        db: DbArg,
    },
}
