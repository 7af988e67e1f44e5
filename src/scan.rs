//! A whole scan: N tabs pull URLs from the frontier, visit them, and the results become one
//! report. A renderer crash replaces the tab; a browser crash restarts the browser; the scan
//! always ends with a report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::sync::Notify;

use crate::analyze::context::LinkTexts;
use crate::browser::{
    CookieLedger, Guard, LaunchError, LaunchOptions, Plan, Pool, Tab, VisitTiming,
};
use crate::crawl::{self, Frontier, Limits, Pending, sitemap};
use crate::model::{CookieSeen, Finding, Page, SCAN_SCHEMA, ScanReport, Summary};
use crate::rules::RuleSet;
use crate::rules::consent::ConsentMode;
use crate::screenshots::Screenshots;

/// Tabs in parallel by default: a page is watched ~3 s for tags injected by timers, mostly
/// idle, so 12 tabs keep 2 cores busy (measured: scripts/bench-crawl.sh, README).
pub const DEFAULT_CONCURRENCY: usize = 12;

/// Everything that shapes one scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub start: String,
    pub max_pages: usize,
    pub max_depth: u32,
    pub max_per_pattern: usize,
    pub concurrency: usize,
    pub page_timeout: Duration,
    pub settle_quiet: Duration,
    pub settle_max: Duration,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub sitemaps: bool,
    pub browser: Option<PathBuf>,
    pub browser_args: Vec<String>,
    /// Whether to press consent banners' accept or reject button.
    pub consent: ConsentMode,
    /// Type canary values into forms (nothing typed leaves the browser).
    pub probe_forms: bool,
    /// A host of the scanned site (staging) that the probe's submissions may reach.
    pub submit_forms: Option<String>,
    /// Most steps of a multi-step flow (quiz, intake) the probe walks on a page; 0 walks none.
    pub funnel_steps: usize,
    /// Scripted journeys (TOML files) run after the crawl, each a page of the report.
    pub journeys: Vec<PathBuf>,
    /// A directory of the user's own vendor rules, added to the bundled ones.
    pub rules_dir: Option<PathBuf>,
    /// Adblock-syntax filter lists to catch trackers the rules do not know.
    pub filter_lists: Vec<PathBuf>,
    /// Where each page's picture goes as it is visited (`--screenshots`; an output of the run,
    /// never a stored setting).
    pub screenshots: Option<Arc<Screenshots>>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            start: String::new(),
            max_pages: 200,
            max_depth: 5,
            max_per_pattern: 25,
            concurrency: DEFAULT_CONCURRENCY,
            page_timeout: Duration::from_secs(30),
            settle_quiet: Duration::from_millis(500),
            settle_max: Duration::from_secs(5),
            include: Vec::new(),
            exclude: Vec::new(),
            sitemaps: true,
            browser: None,
            browser_args: Vec::new(),
            consent: ConsentMode::None,
            probe_forms: true,
            submit_forms: None,
            funnel_steps: 6,
            journeys: Vec::new(),
            rules_dir: None,
            filter_lists: Vec::new(),
            screenshots: None,
        }
    }
}

/// Why a scan could not run at all. (A page that fails is recorded, not an error.)
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("'{0}' is not an http(s) URL")]
    BadUrl(String),
    #[error("bad --{flag} pattern '{pattern}': {source}")]
    BadPattern {
        flag: &'static str,
        pattern: String,
        source: regex::Error,
    },
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error(
        "--submit-forms {0}: not a host of the scanned site {1}; submissions may only reach the \
         site under scan (its staging host)"
    )]
    SubmitHost(String, String),
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
    #[error(transparent)]
    Journey(#[from] crate::journey::JourneyError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

impl ScanError {
    /// Whether the error is the user's input (exit 3) rather than a run failure (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ScanError::BadUrl(_)
                | ScanError::BadPattern { .. }
                | ScanError::Zero(_)
                | ScanError::SubmitHost(..)
                | ScanError::Rules(_)
                | ScanError::Journey(_)
        ) || matches!(self, ScanError::Launch(LaunchError::BadPath { .. }))
    }
}

/// Progress callbacks for a terminal or a log.
pub trait Progress: Send + Sync {
    fn page_started(&self, _url: &str) {}
    fn page_finished(&self, _page: &Page, _done: usize, _queued: usize, _errors: usize) {}
    fn browser_restarted(&self, _reason: &str) {}
}

/// Progress that reports nothing.
pub struct Silent;
impl Progress for Silent {}

struct Shared {
    frontier: Option<Frontier>,
    pages: Vec<Page>,
    in_flight: usize,
    errors: usize,
    /// Every cookie of the scan and the page that set it.
    cookies: CookieLedger,
    /// What the site's links call each page.
    link_texts: LinkTexts,
}

/// Hooks for tests: learn the browser's pid while a scan runs.
pub type PidHook = Arc<dyn Fn(u32) + Send + Sync>;

/// Runs a scan to the end and returns its report.
pub async fn run(opts: &ScanOptions, progress: Arc<dyn Progress>) -> Result<ScanReport, ScanError> {
    run_with_hook(opts, progress, None).await
}

/// [`run`], calling `pid_hook` with the browser's pid whenever a page starts.
pub async fn run_with_hook(
    opts: &ScanOptions,
    progress: Arc<dyn Progress>,
    pid_hook: Option<PidHook>,
) -> Result<ScanReport, ScanError> {
    let started_at = now_rfc3339();
    let t0 = Instant::now();
    let start =
        crawl::normalize(&opts.start).ok_or_else(|| ScanError::BadUrl(opts.start.clone()))?;
    if opts.concurrency == 0 {
        return Err(ScanError::Zero("concurrency"));
    }
    if opts.max_pages == 0 {
        return Err(ScanError::Zero("max-pages"));
    }
    if opts.page_timeout.is_zero() {
        return Err(ScanError::Zero("page-timeout"));
    }
    let compile = |flag: &'static str, pats: &[String]| -> Result<Vec<Regex>, ScanError> {
        pats.iter()
            .map(|p| {
                Regex::new(p).map_err(|source| ScanError::BadPattern {
                    flag,
                    pattern: p.clone(),
                    source,
                })
            })
            .collect()
    };
    let rules = RuleSet::load(opts.rules_dir.as_deref(), &opts.filter_lists)?;
    let journeys = opts
        .journeys
        .iter()
        .map(|p| crate::journey::Journey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let include = compile("include", &opts.include)?;
    let exclude = compile("exclude", &opts.exclude)?;
    let frontier = Frontier::new(
        &start,
        Limits {
            max_pages: opts.max_pages,
            max_depth: opts.max_depth,
            max_per_pattern: opts.max_per_pattern,
        },
        include,
        exclude,
    );
    let site = frontier.site().to_string();
    let canaries = opts.probe_forms.then(crate::analyze::canary::canaries);
    let submit_to = match &opts.submit_forms {
        Some(h) => {
            let host = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if host.is_empty() || host.contains('/') || !crawl::same_site(&site, &host) {
                return Err(ScanError::SubmitHost(h.clone(), start.to_string()));
            }
            Some(host)
        }
        None => None,
    };
    let guard = Guard::new(
        &site,
        crate::analyze::canary::Needles::new(canaries.as_deref().unwrap_or_default()),
        submit_to,
    );
    let pool = Arc::new(Pool::new(
        LaunchOptions {
            executable: opts.browser.clone(),
            extra_args: opts.browser_args.clone(),
            global_privacy_control: opts.consent == ConsentMode::Gpc,
        },
        guard,
    ));
    // Fail fast, with the launcher's message, if the browser cannot start at all.
    pool.start().await?;
    let shared = Arc::new(Mutex::new(Shared {
        frontier: Some(frontier),
        pages: Vec::new(),
        in_flight: 0,
        errors: 0,
        cookies: CookieLedger::new(&site),
        link_texts: LinkTexts::default(),
    }));
    if opts.sitemaps {
        let found = discover_sitemaps(&pool, &start).await;
        let mut s = lock(&shared);
        let f = s.frontier.as_mut().expect("frontier");
        for u in found {
            f.offer(&u, 1, "sitemap");
        }
    }

    let (consent_buttons, consent_generic) = rules.consent.buttons(opts.consent);
    let plan = Arc::new(Plan {
        consent: opts.consent,
        consent_buttons,
        consent_generic,
        consent_given: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        canaries,
        funnel_steps: opts.funnel_steps,
        site: site.clone(),
        screenshots: opts.screenshots.is_some(),
    });
    let notify = Arc::new(Notify::new());
    let timing = VisitTiming {
        page_timeout: opts.page_timeout,
        settle_quiet: opts.settle_quiet,
        settle_max: opts.settle_max,
    };
    let mut workers = Vec::new();
    for _ in 0..opts.concurrency {
        let w = Worker {
            pool: pool.clone(),
            shared: shared.clone(),
            notify: notify.clone(),
            progress: progress.clone(),
            timing,
            plan: plan.clone(),
            pid_hook: pid_hook.clone(),
            screenshots: opts.screenshots.clone(),
        };
        workers.push(tokio::spawn(w.run()));
    }
    for w in workers {
        if let Err(e) = w.await {
            tracing::error!(error = %e, "a scan worker panicked");
        }
    }
    // Scripted journeys, after the crawl: each in a fresh tab, each a page of the report.
    for j in &journeys {
        progress.page_started(j.start().unwrap_or_default());
        let page = run_journey(
            &pool,
            &shared,
            j,
            &plan,
            timing,
            opts.screenshots.as_deref(),
        )
        .await;
        let mut s = lock(&shared);
        if page.error.is_some() {
            s.errors += 1;
        }
        s.pages.push(page);
    }
    let decode_failures = pool.decode_failures().await;
    let dropped_events = pool.dropped_events().await;
    pool.shutdown().await;

    let mut s = lock(&shared);
    let (skipped, skipped_total, external_links) = s.frontier.take().expect("frontier").finish();
    let mut pages = std::mem::take(&mut s.pages);
    let cookies = std::mem::take(&mut s.cookies).finish();
    s.link_texts.apply(&mut pages);
    drop(s);
    crate::analyze::classify::classify(&mut pages, &site, &rules.vendors);
    crate::analyze::context::classify_pages(&mut pages, rules.lexicon, &rules.page_roles);
    let canaries = plan.canaries.clone().unwrap_or_default();
    let mut findings = crate::analyze::findings(
        &pages,
        &rules.vendors,
        rules.filters.as_ref(),
        opts.consent,
        &canaries,
    );
    findings.extend(crate::analyze::context_leaks(
        &pages,
        &rules.vendors,
        &rules.page_roles,
    ));
    findings.extend(crate::analyze::cookie_findings(
        &cookies,
        &pages,
        &rules.vendors,
        opts.consent,
    ));
    findings.sort_by(|a, b| {
        (a.severity, &a.kind, &a.vendor, &a.page).cmp(&(b.severity, &b.kind, &b.vendor, &b.page))
    });
    let summary = summarize(
        &pages,
        &cookies,
        skipped_total,
        &findings,
        Health {
            cdp_decode_failures: decode_failures,
            cdp_events_dropped: dropped_events,
            browser_restarts: pool.restarts(),
            browser_replacements: pool.replacements(),
        },
        t0.elapsed(),
    );
    Ok(ScanReport {
        schema: SCAN_SCHEMA.to_string(),
        id: None,
        site: start.to_string(),
        started_at,
        finished_at: now_rfc3339(),
        consent_mode: opts.consent.as_str().to_string(),
        pages,
        skipped,
        external_links,
        cookies,
        canaries,
        findings,
        summary,
    })
}

struct Worker {
    pool: Arc<Pool>,
    shared: Arc<Mutex<Shared>>,
    notify: Arc<Notify>,
    progress: Arc<dyn Progress>,
    timing: VisitTiming,
    plan: Arc<Plan>,
    pid_hook: Option<PidHook>,
    screenshots: Option<Arc<Screenshots>>,
}

impl Worker {
    async fn run(self) {
        let mut tab: Option<Tab> = None;
        loop {
            let job = {
                let mut s = lock(&self.shared);
                let next = s.frontier.as_mut().and_then(Frontier::next_page);
                match next {
                    Some(p) => {
                        s.in_flight += 1;
                        Some(p)
                    }
                    None if s.in_flight == 0 => break,
                    None => None,
                }
            };
            let Some(job) = job else {
                // Others may still find links: wait for one of them to finish a page.
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), self.notify.notified()).await;
                continue;
            };
            self.progress.page_started(&job.url);
            let (page, visit_links, landing) = self.visit(&mut tab, &job).await;
            let mut s = lock(&self.shared);
            if page.error.is_some() {
                s.errors += 1;
            }
            if let Some(f) = s.frontier.as_mut() {
                for (url, via) in visit_links {
                    f.offer(&url, job.depth + 1, via);
                }
            }
            s.pages.push(page);
            if let Some(l) = landing {
                // A confirmation page reached by a submission (`--submit-forms`).
                s.pages.push(l);
            }
            s.in_flight -= 1;
            let queued = s.frontier.as_ref().map(Frontier::queued).unwrap_or(0);
            let (done, errors) = (s.pages.len(), s.errors);
            let last = s.pages.last().expect("just pushed").clone();
            drop(s);
            self.progress.page_finished(&last, done, queued, errors);
            self.notify.notify_waiters();
        }
        if let Some(t) = tab {
            t.close().await;
        }
        self.notify.notify_waiters();
    }

    /// Visits one page, handling tab and browser failure. Returns the page and the links found.
    async fn visit(
        &self,
        tab: &mut Option<Tab>,
        job: &Pending,
    ) -> (Page, Vec<(String, &'static str)>, Option<Page>) {
        let failed = |error: String| {
            let page = Page {
                url: job.url.clone(),
                final_url: job.url.clone(),
                error: Some(error),
                depth: job.depth,
                found_via: job.via.to_string(),
                ..Default::default()
            };
            (page, Vec::new(), None)
        };
        if tab.as_ref().is_some_and(Tab::browser_gone) {
            *tab = None;
        } else if tab.as_ref().is_some_and(Tab::retiring)
            && let Some(t) = tab.take()
        {
            // Its browser was replaced to free parked tabs: go on in the new one.
            t.close().await;
        }
        if tab.is_none() {
            match self.pool.open_tab().await {
                Ok(t) => *tab = Some(t),
                Err(e) => return failed(e.to_string()),
            }
        }
        if let Some(hook) = &self.pid_hook
            && let Some(pid) = self.pool.pid().await
        {
            hook(pid);
        }
        let t = tab.as_mut().expect("tab just opened");
        let generation = t.generation();
        let mut visit = t.visit(&job.url, self.timing, &self.plan).await;
        if let Some(probed) = visit.parked.take()
            && !visit.browser_died
        {
            // The form probe's tab holds WebSocket frames queued during the probe.
            self.pool.park(probed).await;
        }
        let mut page = std::mem::take(&mut visit.page);
        page.depth = job.depth;
        page.found_via = job.via.to_string();
        page.screenshot = save_screenshot(self.screenshots.as_deref(), &page, visit.screenshot);
        if visit.browser_died {
            page.error = Some("the browser crashed during this page (it was restarted)".into());
            *tab = None;
            self.pool.restart(generation).await;
            self.progress
                .browser_restarted("the browser crashed or stopped answering");
        } else if visit.crashed
            && let Some(t) = tab.take()
        {
            t.close().await;
        }
        if visit.not_html && page.error.is_none() {
            page.error = Some("not an HTML page (download); recorded, not rendered".into());
        }
        {
            let mut s = lock(&self.shared);
            page.cookies = s.cookies.record(&page.url, &visit.cookies);
            s.link_texts.add(&visit.link_texts);
        }
        let mut links: Vec<(String, &'static str)> = visit
            .links
            .into_iter()
            .map(|l| (l, "link"))
            .chain(visit.routes.into_iter().map(|r| (r, "pushstate")))
            .collect();
        // A redirect to another same-site URL: that URL counts as seen.
        if page.final_url != page.url {
            links.push((page.final_url.clone(), "redirect"));
        }
        let landing = visit.landing.map(|l| {
            let mut l = *l;
            lock(&self.shared).link_texts.add(&l.link_texts);
            links.extend(l.links.drain(..).map(|u| (u, "link")));
            Page {
                depth: job.depth + 1,
                ..l.page
            }
        });
        (page, links, landing)
    }
}

/// Runs one journey in a tab and browser context of its own (what it types stays there); a
/// browser that fails is named on the page.
async fn run_journey(
    pool: &Pool,
    shared: &Mutex<Shared>,
    journey: &crate::journey::Journey,
    plan: &Plan,
    timing: VisitTiming,
    screenshots: Option<&Screenshots>,
) -> Page {
    let start = journey.start().unwrap_or_default().to_string();
    let mut tab = match pool.open_isolated_tab().await {
        Ok(t) => t,
        Err(e) => {
            return Page {
                url: start.clone(),
                final_url: start,
                found_via: "journey".into(),
                error: Some(format!("journey '{}': {e}", journey.name)),
                ..Default::default()
            };
        }
    };
    let canaries = plan.canaries.clone().unwrap_or_default();
    let generation = tab.generation();
    let mut visit = tab
        .run_journey(journey, &canaries, timing, plan.screenshots)
        .await;
    if visit.browser_died {
        pool.restart(generation).await;
    } else {
        tab.close().await;
    }
    let mut page = std::mem::take(&mut visit.page);
    page.screenshot = save_screenshot(screenshots, &page, visit.screenshot);
    let mut s = lock(shared);
    page.cookies = s.cookies.record(&page.url, &visit.cookies);
    s.link_texts.add(&visit.link_texts);
    page
}

/// Writes the picture a visit took, if screenshots were asked for; its file name.
fn save_screenshot(
    screenshots: Option<&Screenshots>,
    page: &Page,
    png: Option<Vec<u8>>,
) -> Option<String> {
    screenshots?.save(&page.url, &png?)
}

/// How the browser fared during a scan.
struct Health {
    cdp_decode_failures: u64,
    cdp_events_dropped: u64,
    browser_restarts: u32,
    browser_replacements: u32,
}

fn summarize(
    pages: &[Page],
    cookies: &[CookieSeen],
    skipped: usize,
    findings: &[Finding],
    health: Health,
    took: Duration,
) -> Summary {
    let mut third_party_hosts = BTreeMap::new();
    let mut vendors = BTreeMap::new();
    let mut requests = 0;
    let mut third_party_requests = 0;
    let mut storage = std::collections::BTreeSet::new();
    let mut scripts = std::collections::BTreeSet::new();
    let mut frames = std::collections::BTreeSet::new();
    let mut settle_reasons = BTreeMap::new();
    for p in pages {
        *settle_reasons
            .entry(p.settle_reason.as_str().to_string())
            .or_insert(0) += 1;
        for r in &p.requests {
            requests += 1;
            if r.third_party {
                third_party_requests += 1;
                *third_party_hosts.entry(r.host.clone()).or_insert(0) += 1;
            }
            if let Some(v) = &r.vendor {
                *vendors.entry(v.clone()).or_insert(0) += 1;
            }
        }
        for s in &p.storage {
            storage.insert((&s.origin, &s.kind, &s.key));
        }
        for s in &p.scripts {
            scripts.insert((&s.url, &s.sha256));
        }
        for f in &p.frames {
            frames.insert(&f.url);
        }
    }
    Summary {
        pages: pages.len(),
        pages_errored: pages.iter().filter(|p| p.error.is_some()).count(),
        probes_skipped: pages.iter().filter(|p| p.probe_skipped.is_some()).count(),
        requests,
        third_party_requests,
        third_party_hosts,
        vendors,
        cookies: cookies.len(),
        third_party_cookies: cookies.iter().filter(|c| c.cookie.third_party).count(),
        storage_entries: storage.len(),
        scripts: scripts.len(),
        frames: frames.len(),
        skipped,
        findings: findings.len(),
        cdp_decode_failures: health.cdp_decode_failures,
        cdp_events_dropped: health.cdp_events_dropped,
        settle_reasons,
        browser_restarts: health.browser_restarts,
        browser_replacements: health.browser_replacements,
        duration_ms: took.as_millis() as u64,
    }
}

/// robots.txt Sitemap lines, /sitemap.xml, and sitemap indexes (bounded), fetched by the
/// browser so proxies and host mappings apply exactly as for pages.
async fn discover_sitemaps(pool: &Pool, start: &url::Url) -> Vec<String> {
    let Ok(mut tab) = pool.open_tab().await else {
        return Vec::new();
    };
    let origin = start.origin().ascii_serialization();
    let mut queue: Vec<String> = Vec::new();
    if let Some((200, robots)) = tab.fetch_text(&format!("{origin}/robots.txt")).await {
        queue.extend(sitemap::robots_sitemaps(&robots));
    }
    let default = format!("{origin}/sitemap.xml");
    if !queue.contains(&default) {
        queue.push(default);
    }
    let mut pages = Vec::new();
    let mut fetched = 0;
    while let Some(url) = queue.pop() {
        if fetched >= 50 || pages.len() >= 50_000 {
            break;
        }
        fetched += 1;
        let Some((200, text)) = tab.fetch_text(&url).await else {
            continue;
        };
        match sitemap::parse_sitemap(&text) {
            Some(sitemap::SitemapDoc::Pages(urls)) => pages.extend(urls),
            Some(sitemap::SitemapDoc::Index(more)) => queue.extend(more),
            None => tracing::debug!(%url, "not a sitemap"),
        }
    }
    tab.close().await;
    tracing::debug!(count = pages.len(), "URLs from sitemaps");
    pages
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
