//! The scan's browser: launched on first use, restarted when it dies, shared by every tab.
//!
//! Besides tabs, the browser session itself watches two things no tab can: popups (closed as
//! soon as a page opens one) and service and shared workers, which live outside any tab. Those
//! are attached paused, get the user-agent override, and have every request paused and judged
//! by the probe's guard (a request carrying a typed canary never leaves); what they send is
//! recorded and handed to the next page that finishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::mpsc;

use super::capture::{host_of, post_data};
use super::cdp::{CdpError, Connection, EVENT_QUEUE};
use super::guard::{Guard, Verdict};
use super::launch::{Browser, LaunchError, LaunchOptions};
use super::protocol::{self, Event as Ev, header};
use super::stealth::Disguise;
use super::tab::Tab;
use crate::model::{Phase, Request};

/// What every tab of one browser shares.
pub(super) struct Context {
    pub(super) conn: Arc<Connection>,
    pub(super) disguise: Disguise,
    pub(super) guard: Arc<Guard>,
    /// Requests of service and shared workers not yet handed to a page.
    pub(super) worker_requests: Mutex<Vec<Request>>,
    /// A tab holds WebSocket frames queued during a probe: end the browser by SIGKILL.
    pub(super) quarantined: AtomicBool,
    pub(super) generation: u64,
    /// Browser sessions of shared workers, with their browser context. `Fetch` does not
    /// intercept their requests, so those of a context where a tab probes are taken offline
    /// while it does (the probe's own context, `sandbox.rs`: the scan's other pages share no
    /// worker with it, and theirs keep working).
    shared_workers: Mutex<Vec<SharedWorker>>,
    /// Tabs probing a form right now, per browser context id ("" when a tab's is unknown:
    /// then every shared worker counts as in it).
    probing: Mutex<HashMap<String, usize>>,
    /// Tabs of this browser not yet dropped (parked ones included).
    open_tabs: AtomicUsize,
    /// Replaced by a fresh browser: its tabs finish their page and go; it ends when only
    /// parked tabs are left.
    pub(super) retiring: AtomicBool,
}

/// A shared worker's browser session and the id of the browser context it runs in.
#[derive(Debug, Clone)]
struct SharedWorker {
    session: String,
    context: String,
}

/// Counts a tab as open on its browser until dropped (a field of [`Tab`]).
pub(super) struct OpenTab(Arc<Context>);

impl OpenTab {
    pub(super) fn new(ctx: &Arc<Context>) -> OpenTab {
        ctx.open_tabs.fetch_add(1, Ordering::SeqCst);
        OpenTab(ctx.clone())
    }
}

impl Drop for OpenTab {
    fn drop(&mut self) {
        self.0.open_tabs.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Context {
    /// A tab of browser context `context` starts probing: that context's shared workers go
    /// offline (their requests fail, recorded).
    pub(super) async fn probe_started(&self, context: &str) {
        let first = {
            let mut probing = lock(&self.probing);
            let n = probing.entry(context.to_string()).or_default();
            *n += 1;
            *n == 1
        };
        if first {
            self.shared_workers_offline(context, true).await;
        }
    }

    /// A tab of browser context `context` stopped probing: when none of it is left, that
    /// context's shared workers come back online.
    pub(super) async fn probe_ended(&self, context: &str) {
        let last = {
            let mut probing = lock(&self.probing);
            let n = probing.entry(context.to_string()).or_default();
            *n = n.saturating_sub(1);
            let last = *n == 0;
            if last {
                probing.remove(context);
            }
            last
        };
        if last {
            self.shared_workers_offline(context, false).await;
        }
    }

    fn record_worker_request(&self, request: Request) {
        let mut list = lock(&self.worker_requests);
        if list.len() < 10_000 {
            list.push(request);
        }
    }

    /// Whether a tab of browser context `context` (or of an unknown one) is probing.
    fn probing_in(&self, context: &str) -> bool {
        let probing = lock(&self.probing);
        [context, ""]
            .iter()
            .any(|c| probing.get(*c).is_some_and(|n| *n > 0))
    }

    async fn shared_workers_offline(&self, context: &str, offline: bool) {
        let sessions: Vec<String> = lock(&self.shared_workers)
            .iter()
            .filter(|w| context.is_empty() || w.context == context)
            .map(|w| w.session.clone())
            .collect();
        tracing::debug!(n = sessions.len(), offline, "switching shared workers");
        for s in sessions {
            set_offline(&self.conn, &s, offline).await;
        }
    }

    pub(super) fn take_worker_requests(&self) -> Vec<Request> {
        std::mem::take(
            &mut *self
                .worker_requests
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}

struct Live {
    browser: Browser,
    ctx: Arc<Context>,
}

/// Tabs parked at most per browser. The next tab to hold queued frames replaces the browser
/// instead: a fresh one takes new tabs (with the old one's cookies), and the old one is killed
/// once its other tabs have finished their pages. No tab ever goes on with WebSockets offline.
const MAX_PARKED: usize = 4;

/// A browser being replaced, with the tabs parked on it.
struct Retiring {
    live: Live,
    parked: Vec<Tab>,
}

/// The browser of one scan.
pub struct Pool {
    current: tokio::sync::Mutex<(Option<Live>, u64)>,
    /// Tabs that hold WebSocket frames queued during a probe: never closed, never used again;
    /// they end with the browser (killed).
    parked: Mutex<Vec<Tab>>,
    /// Browsers replaced because they held [`MAX_PARKED`] tabs, until their last tab is done.
    retiring: Mutex<Vec<Retiring>>,
    /// A replacement browser is being launched.
    replacing: AtomicBool,
    /// Generations handed out (the first browser is 1).
    generations: AtomicU64,
    /// Browsers replaced to free parked tabs.
    replacements: AtomicU32,
    opts: LaunchOptions,
    guard: Arc<Guard>,
    restarts: AtomicU32,
    /// Protocol counters of browsers that were already replaced.
    past_decode_failures: AtomicU64,
    past_dropped_events: AtomicU64,
}

impl Pool {
    /// A pool that launches with `opts`; `guard` judges what may leave during form probes.
    pub fn new(opts: LaunchOptions, guard: Guard) -> Pool {
        Pool {
            current: tokio::sync::Mutex::new((None, 0)),
            parked: Mutex::new(Vec::new()),
            retiring: Mutex::new(Vec::new()),
            replacing: AtomicBool::new(false),
            generations: AtomicU64::new(0),
            replacements: AtomicU32::new(0),
            opts,
            guard: Arc::new(guard),
            restarts: AtomicU32::new(0),
            past_decode_failures: AtomicU64::new(0),
            past_dropped_events: AtomicU64::new(0),
        }
    }

    /// Starts the browser now (a scan fails fast, with the launcher's message, when it cannot).
    pub async fn start(&self) -> Result<(), LaunchError> {
        self.live().await.map(|_| ())
    }

    async fn live(&self) -> Result<Arc<Context>, LaunchError> {
        let mut cur = self.current.lock().await;
        if cur.0.is_none() {
            let live = self.launch().await?;
            cur.1 = live.ctx.generation;
            cur.0 = Some(live);
        }
        Ok(cur.0.as_ref().expect("browser just set").ctx.clone())
    }

    /// Launches a browser of the next generation and sets it up.
    async fn launch(&self) -> Result<Live, LaunchError> {
        let browser = Browser::launch(&self.opts).await?;
        let ctx = Arc::new(Context {
            conn: browser.connection(),
            disguise: Disguise::new(browser.version(), self.opts.global_privacy_control),
            guard: self.guard.clone(),
            worker_requests: Mutex::new(Vec::new()),
            quarantined: AtomicBool::new(false),
            generation: self.generations.fetch_add(1, Ordering::SeqCst) + 1,
            shared_workers: Mutex::new(Vec::new()),
            probing: Mutex::new(HashMap::new()),
            open_tabs: AtomicUsize::new(0),
            retiring: AtomicBool::new(false),
        });
        prepare(&ctx).await?;
        Ok(Live { browser, ctx })
    }

    /// Opens a tab on the live browser, launching it if needed.
    pub async fn open_tab(&self) -> Result<Tab, PoolError> {
        self.reap().await;
        let ctx = self.live().await.map_err(PoolError::Launch)?;
        let generation = ctx.generation;
        match Tab::open(ctx).await {
            Ok(t) => Ok(t),
            Err(e) => {
                // A browser that cannot open a tab is not usable.
                self.restart(generation).await;
                Err(PoolError::Tab(e))
            }
        }
    }

    /// Opens a tab in a browser context of its own, given the visitor's cookies and thrown
    /// away with the tab: a scripted journey types into it, so nothing it types reaches the
    /// jar or storage of later journeys (the crawl is over by then).
    pub async fn open_isolated_tab(&self) -> Result<Tab, PoolError> {
        self.reap().await;
        let ctx = self.live().await.map_err(PoolError::Launch)?;
        super::sandbox::open_isolated(&ctx)
            .await
            .map_err(PoolError::Tab)
    }

    /// Takes a tab that holds queued WebSocket frames (a form probe's copy of a page) out of
    /// service for good: never closed, it ends with the browser. When the browser already
    /// holds [`MAX_PARKED`] such tabs it is replaced: new tabs open in a fresh browser, and its
    /// own tabs leave it at their next page ([`Tab::retiring`]).
    pub async fn park(&self, tab: Tab) {
        let generation = tab.generation();
        let full = {
            // Checked and pushed under the lock a replacement takes the list under, so a tab
            // always waits with its own browser.
            let mut parked = lock(&self.parked);
            if tab.retiring() {
                drop(parked);
                // Its browser is already being replaced: the tab waits with it (or, if that
                // browser has ended, it is gone already and dropping the tab changes nothing).
                let mut retiring = lock(&self.retiring);
                if let Some(r) = retiring
                    .iter_mut()
                    .find(|r| r.live.ctx.generation == generation)
                {
                    r.parked.push(tab);
                }
                return;
            }
            parked.push(tab);
            parked.len() >= MAX_PARKED
        };
        if !full || self.replacing.swap(true, Ordering::SeqCst) {
            return;
        }
        // The replacement starts while the old browser still serves every other tab, so no
        // worker waits for a launch; the swap itself is two protocol calls.
        match self.launch().await {
            Ok(fresh) => self.replace(generation, fresh).await,
            Err(e) => tracing::warn!(error = %e, "no replacement browser; tabs stay parked"),
        }
        self.replacing.store(false, Ordering::SeqCst);
    }

    /// Makes `fresh` the live browser in place of generation `generation`, with its cookies;
    /// the old one retires.
    async fn replace(&self, generation: u64, fresh: Live) {
        let mut cur = self.current.lock().await;
        let old = match cur.0.take() {
            Some(old) if cur.1 == generation => old,
            other => {
                // Restarted after a crash meanwhile: that browser has no parked tabs to free.
                cur.0 = other;
                drop(cur);
                fresh.browser.close().await;
                return;
            }
        };
        if let Err(e) = copy_jar(&old.ctx.conn, &fresh.ctx.conn, None).await {
            tracing::warn!(error = %e, "the replaced browser's cookies could not be carried over");
        }
        cur.1 = fresh.ctx.generation;
        cur.0 = Some(fresh);
        drop(cur);
        {
            let mut parked = lock(&self.parked);
            old.ctx.retiring.store(true, Ordering::SeqCst);
            let parked = std::mem::take(&mut *parked);
            lock(&self.retiring).push(Retiring { live: old, parked });
        }
        self.replacements.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(generation, "browser replaced to free its parked tabs");
    }

    /// Ends replaced browsers whose tabs are all parked or gone.
    pub async fn reap(&self) {
        let done: Vec<Retiring> = {
            let mut retiring = lock(&self.retiring);
            let (done, keep) = std::mem::take(&mut *retiring).into_iter().partition(|r| {
                r.live.ctx.open_tabs.load(Ordering::SeqCst) <= r.parked.len()
                    || r.live.ctx.conn.is_closed()
            });
            *retiring = keep;
            done
        };
        for r in done {
            self.retire(r.live, r.parked).await;
        }
    }

    /// Browsers replaced so far to free parked tabs.
    pub fn replacements(&self) -> u32 {
        self.replacements.load(Ordering::Relaxed)
    }

    /// Replaces the browser of generation `generation` (if nobody did already).
    pub async fn restart(&self, generation: u64) {
        let mut cur = self.current.lock().await;
        if cur.1 != generation {
            return;
        }
        if let Some(old) = cur.0.take() {
            let parked = std::mem::take(&mut *lock(&self.parked));
            self.retire(old, parked).await;
        }
        self.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("browser crashed or stopped answering; restarting it");
    }

    /// Ends the browser.
    pub async fn shutdown(&self) {
        let retiring = std::mem::take(&mut *lock(&self.retiring));
        for r in retiring {
            self.retire(r.live, r.parked).await;
        }
        if let Some(old) = self.current.lock().await.0.take() {
            let parked = std::mem::take(&mut *lock(&self.parked));
            self.retire(old, parked).await;
        }
    }

    /// Ends `live`; `parked` (its parked tabs) go with it (dropping a Tab never closes its
    /// target).
    async fn retire(&self, live: Live, parked: Vec<Tab>) {
        let conn = &live.ctx.conn;
        self.past_decode_failures
            .fetch_add(conn.decode_failures(), Ordering::Relaxed);
        self.past_dropped_events
            .fetch_add(conn.dropped_events(), Ordering::Relaxed);
        if live.ctx.quarantined.load(Ordering::SeqCst) {
            live.browser.kill().await;
        } else {
            live.browser.close().await;
        }
        drop(parked);
    }

    /// Times the browser had to be restarted.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Protocol events that could not be decoded, over every browser of the scan.
    pub async fn decode_failures(&self) -> u64 {
        let live = self
            .current
            .lock()
            .await
            .0
            .as_ref()
            .map(|l| l.ctx.conn.decode_failures());
        self.past_decode_failures.load(Ordering::Relaxed) + live.unwrap_or(0)
    }

    /// Protocol events dropped by full queues, over every browser of the scan.
    pub async fn dropped_events(&self) -> u64 {
        let live = self
            .current
            .lock()
            .await
            .0
            .as_ref()
            .map(|l| l.ctx.conn.dropped_events());
        self.past_dropped_events.load(Ordering::Relaxed) + live.unwrap_or(0)
    }

    /// The running browser's pid (tests use it to crash the browser on purpose).
    pub async fn pid(&self) -> Option<u32> {
        self.current
            .lock()
            .await
            .0
            .as_ref()
            .and_then(|l| l.browser.pid())
    }
}

/// Why a tab could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the browser could not be started: {0}")]
    Launch(LaunchError),
    #[error("could not open a tab: {0}")]
    Tab(CdpError),
}

/// Copies the default cookie jar of `from`'s browser into `to`'s, into browser context
/// `context` (the default one when `None`): a replacement browser, the form probe's copy.
pub(super) async fn copy_jar(
    from: &Connection,
    to: &Connection,
    context: Option<&str>,
) -> Result<(), CdpError> {
    let jar = from.call("Storage.getCookies", json!({}), None).await?;
    let cookies = carry(&jar["cookies"]);
    if cookies.is_empty() {
        return Ok(());
    }
    let mut params = json!({"cookies": cookies});
    if let Some(id) = context {
        params["browserContextId"] = json!(id);
    }
    to.call("Storage.setCookies", params, None)
        .await
        .map(|_| ())
}

/// `Storage.getCookies` cookies as `Storage.setCookies` parameters (session cookies stay
/// session cookies).
fn carry(cookies: &serde_json::Value) -> Vec<serde_json::Value> {
    const PARAMS: &[&str] = &[
        "name",
        "value",
        "domain",
        "path",
        "secure",
        "httpOnly",
        "sameSite",
        "priority",
        "sourceScheme",
        "sourcePort",
        "partitionKey",
    ];
    let Some(list) = cookies.as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|c| {
            let mut p = serde_json::Map::new();
            for k in PARAMS {
                if let Some(v) = c.get(*k) {
                    p.insert((*k).to_string(), v.clone());
                }
            }
            if c["session"] != true
                && let Some(e) = c.get("expires")
            {
                p.insert("expires".into(), e.clone());
            }
            serde_json::Value::Object(p)
        })
        .collect()
}

/// Browser-level set-up: deny downloads (a scan records them, never opens them), close popups,
/// attach service and shared workers paused.
async fn prepare(ctx: &Arc<Context>) -> Result<(), CdpError> {
    let conn = &ctx.conn;
    conn.call(
        "Browser.setDownloadBehavior",
        json!({"behavior": "deny"}),
        None,
    )
    .await?;
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    conn.subscribe("", tx);
    conn.call("Target.setDiscoverTargets", json!({"discover": true}), None)
        .await?;
    conn.call(
        "Target.setAutoAttach",
        json!({"autoAttach": true, "waitForDebuggerOnStart": true, "flatten": true,
               "filter": [{"type": "service_worker"}, {"type": "shared_worker"},
                          {"exclude": true}]}),
        None,
    )
    .await?;
    tokio::spawn(browser_responder(ctx.clone(), rx));
    Ok(())
}

async fn browser_responder(ctx: Arc<Context>, mut rx: mpsc::Receiver<super::cdp::Event>) {
    // Worker sessions: (kind, browser context id).
    let mut workers: HashMap<String, (String, String)> = Default::default();
    while let Some(ev) = rx.recv().await {
        let parsed = match protocol::parse(&ev.method, &ev.params) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(_) => {
                ctx.conn.count_decode_failure(&ev.method);
                continue;
            }
        };
        let worker = ev
            .session_id
            .as_deref()
            .and_then(|s| workers.get(s))
            .cloned();
        match parsed {
            Ev::TargetCreated(info) => {
                let popup = info.kind == "page" && info.opener_id.is_some_and(|o| !o.is_empty());
                if popup {
                    tracing::debug!("closing a popup window");
                    let conn = ctx.conn.clone();
                    tokio::spawn(async move {
                        let _ = conn
                            .call(
                                "Target.closeTarget",
                                json!({"targetId": info.target_id}),
                                None,
                            )
                            .await;
                    });
                }
            }
            Ev::AttachedToTarget(e) if ev.session_id.is_none() => {
                let kind = e.target_info.kind;
                tracing::debug!(%kind, "attached to a target from the browser session");
                if kind != "service_worker" && kind != "shared_worker" {
                    continue;
                }
                let context = e.target_info.browser_context_id.unwrap_or_default();
                workers.insert(e.session_id.clone(), (kind.clone(), context.clone()));
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let s = Some(e.session_id.as_str());
                    let conn = &ctx.conn;
                    let ua = ctx.disguise.user_agent_override();
                    if let Err(err) = conn.call("Network.setUserAgentOverride", ua, s).await {
                        tracing::debug!(%kind, error = %err, "worker user agent not set");
                    }
                    if kind == "shared_worker" {
                        // Fetch does not see a shared worker's requests: offline while probing
                        // (network conditions need the Network domain on).
                        let _ = conn.call("Network.enable", json!({}), s).await;
                        lock(&ctx.shared_workers).push(SharedWorker {
                            session: e.session_id.clone(),
                            context: context.clone(),
                        });
                        if ctx.probing_in(&context) {
                            set_offline(conn, &e.session_id, true).await;
                        }
                    } else {
                        let fetch =
                            json!({"patterns": [{"urlPattern": "*", "requestStage": "Request"}]});
                        if let Err(err) = conn.call("Fetch.enable", fetch, s).await {
                            tracing::debug!(%kind, error = %err, "worker requests not interceptable");
                        }
                    }
                    let _ = conn
                        .call("Runtime.runIfWaitingForDebugger", json!({}), s)
                        .await;
                });
            }
            Ev::RequestWillBeSent(e)
                if worker.as_ref().is_some_and(|(k, _)| k == "shared_worker") =>
            {
                // A shared worker's request: recorded here; while a tab of its browser context
                // probes it fails offline.
                let context = worker.as_ref().map_or("", |(_, c)| c.as_str());
                let (post_data, truncated) = post_data(&e.request);
                let request = Request {
                    host: host_of(&e.request.url),
                    url: e.request.url.clone(),
                    method: e.request.method.clone(),
                    resource_type: e.resource_type.clone().unwrap_or_else(|| "Other".into()),
                    post_data,
                    post_data_truncated: truncated,
                    referer: header(&e.request.headers, "referer"),
                    target: "shared_worker".into(),
                    error: ctx.probing_in(context).then(|| {
                        "held back by the form probe: shared workers are offline during it".into()
                    }),
                    phase: Phase::Load,
                    ..Default::default()
                };
                ctx.record_worker_request(request);
            }
            Ev::RequestPaused(e) => {
                let session = ev.session_id.clone().unwrap_or_default();
                let kind = worker.map_or_else(|| "service_worker".into(), |(k, _)| k);
                let verdict = ctx.guard.judge_worker(&e);
                tracing::debug!(%kind, ?verdict, "a worker request paused");
                let (post_data, truncated) = post_data(&e.request);
                let request = Request {
                    host: host_of(&e.request.url),
                    url: e.request.url.clone(),
                    method: e.request.method.clone(),
                    resource_type: e.resource_type.clone(),
                    post_data,
                    post_data_truncated: truncated,
                    referer: header(&e.request.headers, "referer"),
                    target: kind,
                    error: match verdict {
                        Verdict::Block(why) => Some(format!("held back by the form probe: {why}")),
                        Verdict::Continue => None,
                    },
                    phase: Phase::Load,
                    ..Default::default()
                };
                {
                    let mut list = ctx
                        .worker_requests
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if list.len() < 10_000 {
                        list.push(request);
                    }
                }
                let (method, params) = match verdict {
                    Verdict::Block(_) => (
                        "Fetch.failRequest",
                        json!({"requestId": e.request_id, "errorReason": "BlockedByClient"}),
                    ),
                    Verdict::Continue => {
                        ("Fetch.continueRequest", json!({"requestId": e.request_id}))
                    }
                };
                let conn = ctx.conn.clone();
                tokio::spawn(async move {
                    let _ = conn.call(method, params, Some(&session)).await;
                });
            }
            Ev::DetachedFromTarget(e) => {
                workers.remove(&e.session_id);
                lock(&ctx.shared_workers).retain(|w| w.session != e.session_id);
            }
            _ => {}
        }
    }
}

/// Takes every request of a session offline (`true`) or back online.
async fn set_offline(conn: &Connection, session: &str, offline: bool) {
    let rules = if offline {
        json!([{"urlPattern": "", "offline": true, "latency": 0,
                "downloadThroughput": -1, "uploadThroughput": -1}])
    } else {
        json!([])
    };
    if let Err(e) = conn
        .call(
            "Network.emulateNetworkConditionsByRule",
            json!({"matchedNetworkConditions": rules}),
            Some(session),
        )
        .await
    {
        tracing::debug!(error = %e, offline, "a shared worker's network could not be switched");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
