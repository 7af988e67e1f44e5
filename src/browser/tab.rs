//! One browser tab that visits pages and records everything each page does.
//!
//! Order matters (each step was learned the hard way, see reference/chromium-offline.md):
//! the tab sits on `about:blank` with every listener attached before it navigates; iframes and
//! workers are auto-attached paused, get Network enabled, then resume, so their first request is
//! seen; dialogs are answered by a responder task that does not wait for the capture loop; every
//! CDP call is bounded; a page that never finishes is stopped with `Page.stopLoading`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::capture::{
    PageState, handle_event, set_cookie_names, sha256_hex, storage_origin, strip_fragment,
};
use super::cdp::{CdpError, Connection, Event};
use super::interact::Plan;
use crate::model::{Frame, Page, Script, StorageEntry};

const HOOK: &str = include_str!("hook.js");
pub(super) const BINDING: &str = "__pixelwatch";
/// Short bound for calls made while collecting; a crashed renderer must not stall the tab long.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for each collection loop of a page (frames, script bodies): a page whose main thread
/// stays busy cannot hold a tab for minutes through many bounded calls in a row.
const COLLECT_BUDGET: Duration = Duration::from_secs(15);

/// How long to wait on a page.
#[derive(Debug, Clone, Copy)]
pub struct VisitTiming {
    /// Bound for navigation plus the load event.
    pub page_timeout: Duration,
    /// The network must be quiet this long after load...
    pub settle_quiet: Duration,
    /// ...but never wait longer than this after load.
    pub settle_max: Duration,
}

/// What one visit produced, before the crawler judges scope and vendors.
#[derive(Debug, Default)]
pub struct Visit {
    pub page: Page,
    /// Links in the DOM after scripts ran (absolute URLs).
    pub links: Vec<String>,
    /// URLs reached with history.pushState / replaceState.
    pub routes: Vec<String>,
    /// (cookie name, domain or host) from Set-Cookie response headers.
    pub http_cookies: Vec<(String, String)>,
    /// (cookie name, domain or host) set by document.cookie / CookieStore.
    pub script_cookies: Vec<(String, String)>,
    /// The renderer crashed: the tab must be replaced.
    pub crashed: bool,
    /// The main document was not HTML (a download): nothing was rendered.
    pub not_html: bool,
}

/// A tab: one page target and the sessions of its children.
pub struct Tab {
    pub(super) conn: Arc<Connection>,
    target_id: String,
    pub(super) session: String,
    events: mpsc::UnboundedReceiver<Event>,
    /// The site whose submissions the responder holds back while probing.
    pub(super) hold_back: Arc<std::sync::Mutex<Option<String>>>,
}

impl Tab {
    /// Opens a new tab on about:blank with every listener attached.
    pub async fn open(conn: Arc<Connection>, user_agent: &str) -> Result<Tab, CdpError> {
        let created = conn
            .call("Target.createTarget", json!({"url": "about:blank"}), None)
            .await?;
        let target_id = created["targetId"].as_str().unwrap_or_default().to_string();
        let attached = conn
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
                None,
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        conn.subscribe(&session, raw_tx);
        let hold_back = Arc::new(std::sync::Mutex::new(None));
        let events = spawn_responder(conn.clone(), raw_rx, hold_back.clone());
        let tab = Tab {
            conn,
            target_id,
            session,
            events,
            hold_back,
        };
        tab.setup_session(&tab.session, "page", user_agent).await?;
        Ok(tab)
    }

    /// Enables what capture needs on a session (the page, or an auto-attached iframe).
    async fn setup_session(&self, session: &str, kind: &str, ua: &str) -> Result<(), CdpError> {
        setup_session(&self.conn, session, kind, ua).await
    }

    /// The target id of this tab.
    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    /// Closes the tab.
    pub async fn close(self) {
        self.conn.unsubscribe(&self.session);
        let _ = self
            .conn
            .call_with_timeout(
                "Target.closeTarget",
                json!({"targetId": self.target_id}),
                None,
                Duration::from_secs(3),
            )
            .await;
    }

    /// Visits `url` and returns what happened. Never fails: problems are recorded on the page.
    pub async fn visit(&mut self, url: &str, timing: VisitTiming, plan: &Plan) -> Visit {
        // Anything still queued belongs to the previous page.
        while self.events.try_recv().is_ok() {}
        let consented = plan.consent_given.load(std::sync::atomic::Ordering::SeqCst);
        let mut st = PageState {
            phase: if consented { "consent" } else { "load" }.into(),
            ..Default::default()
        };
        let started = Instant::now();
        let deadline = started + timing.page_timeout;
        let mut error: Option<String> = None;

        let nav = self
            .conn
            .call_with_timeout(
                "Page.navigate",
                json!({"url": url}),
                Some(&self.session),
                timing.page_timeout,
            )
            .await;
        match nav {
            Ok(v) => {
                st.main_frame = v["frameId"].as_str().map(str::to_string);
                if let Some(e) = v["errorText"].as_str().filter(|e| !e.is_empty()) {
                    error = Some(format!("navigation failed: {e}"));
                }
            }
            Err(CdpError::Timeout { .. }) => {
                error = Some(format!(
                    "no response within {}s; stopped loading",
                    timing.page_timeout.as_secs()
                ));
                self.stop_loading().await;
            }
            Err(e) => {
                // The tab itself failed (closed by the page, detached): replace it.
                error = Some(format!("navigation failed: {e}"));
                st.tab_broken = true;
            }
        }
        self.pump(&mut st, Instant::now()).await;

        if error.is_none() {
            self.pump_until(&mut st, deadline, |s| s.load_fired || s.crashed)
                .await;
            if !st.load_fired && !st.crashed {
                error = Some(format!(
                    "page did not finish loading within {}s; stopped loading",
                    timing.page_timeout.as_secs()
                ));
                self.stop_loading().await;
            }
        }
        self.settle(&mut st, timing).await;
        let load_ms = started.elapsed().as_millis() as u64;

        let mut visit = Visit::default();
        let not_html = st
            .main_mime
            .as_deref()
            .is_some_and(|m| !m.contains("html") && !m.contains("xml"));
        // A download (non-HTML answer) aborts the navigation: that is not a page error.
        if not_html && error.as_deref().is_some_and(|e| e.contains("ERR_ABORTED")) {
            error = None;
        }
        if !st.crashed && error.is_none() && !not_html {
            self.collect_dom(&mut st, &mut visit).await;
            self.interact(&mut st, &mut visit, timing, plan).await;
        }
        if !st.crashed {
            visit.page.scripts.extend(self.hash_scripts(&st).await);
            visit.page.storage = self.collect_storage(&st).await;
            // Leave through about:blank so unload beacons are captured for this page.
            st.load_fired = false;
            let left = self
                .conn
                .call_with_timeout(
                    "Page.navigate",
                    json!({"url": "about:blank"}),
                    Some(&self.session),
                    COLLECT_TIMEOUT,
                )
                .await;
            if left.is_ok() {
                let until = Instant::now() + Duration::from_secs(2);
                self.pump_until(&mut st, until, |s| s.load_fired || s.crashed)
                    .await;
                let until = Instant::now() + Duration::from_millis(100);
                self.pump(&mut st, until).await;
            } else {
                // A tab that cannot even go to about:blank (the page closed it, or its renderer
                // is stuck) must not be reused for the next page.
                st.tab_broken = true;
            }
        }
        if st.crashed {
            error = Some("the renderer crashed (the tab was replaced)".to_string());
        }
        visit.crashed = st.crashed || st.tab_broken;
        visit.not_html = not_html;
        visit.page.url = url.to_string();
        visit.page.final_url = st.main_url.clone().unwrap_or_else(|| url.to_string());
        visit.page.status = st.main_status;
        visit.page.error = error;
        visit.page.load_ms = load_ms;
        visit.page.blocked_submissions = std::mem::take(&mut st.blocked);
        visit.page.frames = st
            .frames
            .iter()
            .map(|u| Frame {
                url: u.clone(),
                third_party: false,
            })
            .collect();
        visit.routes = std::mem::take(&mut st.routes);
        visit.script_cookies = std::mem::take(&mut st.script_cookies);
        visit.http_cookies = set_cookie_names(&st);
        let mut requests = std::mem::take(&mut st.hops);
        for key in &st.order {
            if let Some(r) = st.reqs.remove(key) {
                requests.push(r.request);
            }
        }
        visit.page.requests = requests;
        visit
    }

    /// Navigates to `url` and waits for its load event (bounded); the page stays open.
    pub async fn open_url(&mut self, url: &str, limit: Duration) -> bool {
        self.load(url, limit).await.is_some_and(|st| st.load_fired)
    }

    /// Navigates to `url` and records events until its load event or `limit`. `None` when the
    /// navigation itself failed.
    async fn load(&mut self, url: &str, limit: Duration) -> Option<PageState> {
        while self.events.try_recv().is_ok() {}
        let nav = self
            .conn
            .call_with_timeout(
                "Page.navigate",
                json!({"url": url}),
                Some(&self.session),
                limit,
            )
            .await
            .ok()?;
        if nav["errorText"].as_str().is_some_and(|e| !e.is_empty()) {
            return None;
        }
        let mut st = PageState {
            main_frame: nav["frameId"].as_str().map(str::to_string),
            ..Default::default()
        };
        let until = Instant::now() + limit;
        self.pump_until(&mut st, until, |s| s.load_fired || s.crashed)
            .await;
        Some(st)
    }

    /// Evaluates `expression` in the page's main world and returns its value.
    pub async fn evaluate(&self, expression: &str) -> Result<serde_json::Value, CdpError> {
        let res = self
            .conn
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
                Some(&self.session),
            )
            .await?;
        Ok(res["result"]["value"].clone())
    }

    /// Loads `url` as a document and returns its status and body text (robots.txt, sitemaps).
    pub async fn fetch_text(&mut self, url: &str) -> Option<(u16, String)> {
        let st = self.load(url, Duration::from_secs(15)).await?;
        let status = st.main_status?;
        let key = st
            .order
            .iter()
            .rev()
            .find(|k| {
                k.0 == self.session
                    && st
                        .reqs
                        .get(*k)
                        .is_some_and(|r| r.request.resource_type == "Document")
            })?
            .clone();
        let bytes = self.response_body(&self.session, &key.1).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Some((status, text))
    }

    /// Adaptive settle: late pixels fire after load (or after a click); wait for a quiet
    /// network, bounded by `settle_max`.
    pub(super) async fn settle(&mut self, st: &mut PageState, timing: VisitTiming) {
        let settle_end = Instant::now() + timing.settle_max;
        st.last_activity = Some(Instant::now());
        loop {
            if st.crashed {
                break;
            }
            let now = Instant::now();
            if now >= settle_end {
                break;
            }
            let quiet_since = st.last_activity.unwrap_or(now);
            if st.inflight() == 0 && now.duration_since(quiet_since) >= timing.settle_quiet {
                break;
            }
            let step = (now + Duration::from_millis(50)).min(settle_end);
            self.pump(st, step).await;
        }
    }

    async fn stop_loading(&self) {
        let _ = self
            .conn
            .call_with_timeout(
                "Page.stopLoading",
                json!({}),
                Some(&self.session),
                COLLECT_TIMEOUT,
            )
            .await;
    }

    /// Handles queued events until `until`.
    pub(super) async fn pump(&mut self, st: &mut PageState, until: Instant) {
        loop {
            let now = Instant::now();
            let wait = until.saturating_duration_since(now);
            match tokio::time::timeout(wait, self.events.recv()).await {
                Ok(Some(ev)) => handle_event(&self.conn, &self.session, st, ev),
                Ok(None) => {
                    // The browser went away: treat as a crash of this tab.
                    st.crashed = true;
                    return;
                }
                Err(_) => return,
            }
            if Instant::now() >= until {
                // Drain what is already queued without waiting.
                while let Ok(ev) = self.events.try_recv() {
                    handle_event(&self.conn, &self.session, st, ev);
                }
                return;
            }
        }
    }

    async fn pump_until(
        &mut self,
        st: &mut PageState,
        until: Instant,
        done: impl Fn(&PageState) -> bool,
    ) {
        while !done(st) && Instant::now() < until {
            let step = (Instant::now() + Duration::from_millis(50)).min(until);
            self.pump(st, step).await;
        }
    }

    /// Links, title and inline scripts of every frame, read from an isolated world so page
    /// scripts cannot tamper with the reader.
    async fn collect_dom(&self, st: &mut PageState, visit: &mut Visit) {
        const READER: &str = r#"(() => {
            const out = {links: [], inline: [], title: document.title || null, forms: document.forms.length};
            if (window === window.top) {
              for (const a of document.querySelectorAll('a[href], area[href]')) {
                if (out.links.length >= 5000) break;
                try { out.links.push(String(a.href)); } catch (e) {}
              }
            }
            let total = 0;
            for (const s of document.querySelectorAll('script:not([src])')) {
              const t = s.textContent || '';
              if (!t.trim()) continue;
              const ty = (s.type || '').toLowerCase();
              if (ty && !/(java|ecma)script|module/.test(ty)) continue;
              total += t.length;
              if (total > 8000000) break;
              out.inline.push(t);
            }
            return out;
        })()"#;
        let frames = self.frame_tree(&self.session).await;
        let mut inline_hashes = BTreeSet::new();
        let budget = Instant::now() + COLLECT_BUDGET;
        for (i, (frame_id, _url)) in frames.iter().enumerate().take(30) {
            if Instant::now() > budget {
                break;
            }
            let Some(value) = self.eval_in_frame(frame_id, READER).await else {
                continue;
            };
            let v = &value;
            tracing::debug!(
                frame = i,
                links = v["links"].as_array().map(Vec::len).unwrap_or(0),
                "dom read"
            );
            if i == 0 {
                visit.page.title = v["title"].as_str().map(str::to_string);
                visit.page.forms = v["forms"].as_u64().unwrap_or(0) as usize;
                visit.links = v["links"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|l| l.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            for s in v["inline"].as_array().into_iter().flatten() {
                if let Some(src) = s.as_str() {
                    inline_hashes.insert(sha256_hex(src.as_bytes()));
                }
            }
        }
        // Frames that exist now but navigated before listeners saw them (about:srcdoc excluded).
        for (_, url) in frames.iter().skip(1) {
            if url.starts_with("http") {
                st.frames.insert(strip_fragment(url));
            }
        }
        visit
            .page
            .scripts
            .extend(inline_hashes.into_iter().map(|h| Script {
                url: None,
                sha256: Some(h),
                third_party: false,
            }));
    }

    /// Evaluates `expression` in an isolated world of `frame_id` (page scripts cannot tamper
    /// with it; the DOM is shared) and returns its value.
    pub(super) async fn eval_in_frame(&self, frame_id: &str, expression: &str) -> Option<Value> {
        let world = self
            .conn
            .call_with_timeout(
                "Page.createIsolatedWorld",
                json!({"frameId": frame_id, "worldName": "pixelwatch"}),
                Some(&self.session),
                COLLECT_TIMEOUT,
            )
            .await
            .ok()?;
        let ctx = world["executionContextId"].as_i64()?;
        let res = self
            .conn
            .call_with_timeout(
                "Runtime.evaluate",
                json!({"expression": expression, "contextId": ctx, "returnByValue": true,
                       "userGesture": true}),
                Some(&self.session),
                COLLECT_TIMEOUT,
            )
            .await
            .ok()?;
        Some(res["result"]["value"].clone())
    }

    /// (frame id, url) for every frame of a session's tree, main frame first.
    async fn frame_tree(&self, session: &str) -> Vec<(String, String)> {
        let Ok(tree) = self
            .conn
            .call_with_timeout(
                "Page.getFrameTree",
                json!({}),
                Some(session),
                COLLECT_TIMEOUT,
            )
            .await
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut stack = vec![&tree["frameTree"]];
        while let Some(node) = stack.pop() {
            if let Some(id) = node["frame"]["id"].as_str() {
                let url = node["frame"]["url"].as_str().unwrap_or_default();
                out.push((id.to_string(), url.to_string()));
            }
            if let Some(children) = node["childFrames"].as_array() {
                stack.extend(children.iter().rev());
            }
        }
        out
    }

    /// The body of a finished response, decoded from base64 when CDP sent it so.
    async fn response_body(&self, session: &str, request_id: &str) -> Option<Vec<u8>> {
        let body = self
            .conn
            .call_with_timeout(
                "Network.getResponseBody",
                json!({"requestId": request_id}),
                Some(session),
                COLLECT_TIMEOUT,
            )
            .await
            .ok()?;
        let text = body["body"].as_str().unwrap_or_default();
        if body["base64Encoded"].as_bool() == Some(true) {
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        } else {
            Some(text.as_bytes().to_vec())
        }
    }

    /// sha256 of every script the page loaded over the network.
    async fn hash_scripts(&self, st: &PageState) -> Vec<Script> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let budget = Instant::now() + COLLECT_BUDGET;
        for key in st.order.iter() {
            if Instant::now() > budget {
                break;
            }
            let Some(r) = st.reqs.get(key) else { continue };
            if r.request.resource_type != "Script" || !seen.insert(r.request.url.clone()) {
                continue;
            }
            if out.len() >= 300 {
                break;
            }
            let ok = r.done && r.request.error.is_none();
            let sha256 = if ok {
                self.response_body(&r.session, &key.1)
                    .await
                    .map(|b| sha256_hex(&b))
            } else {
                None
            };
            out.push(Script {
                url: Some(r.request.url.clone()),
                sha256,
                third_party: false,
            });
        }
        out
    }

    /// Keys (never values) of local and session storage for every frame's storage key.
    async fn collect_storage(&self, st: &PageState) -> Vec<StorageEntry> {
        let mut sessions = vec![self.session.clone()];
        sessions.extend(
            st.sessions
                .iter()
                .filter(|(_, kind)| kind.as_str() == "iframe")
                .map(|(s, _)| s.clone()),
        );
        let mut keys = BTreeSet::new();
        let mut out = BTreeSet::new();
        for session in &sessions {
            for (frame_id, url) in self.frame_tree(session).await {
                if !url.starts_with("http") {
                    continue;
                }
                let Ok(k) = self
                    .conn
                    .call_with_timeout(
                        "Storage.getStorageKey",
                        json!({"frameId": frame_id}),
                        Some(session),
                        COLLECT_TIMEOUT,
                    )
                    .await
                else {
                    continue;
                };
                let Some(storage_key) = k["storageKey"].as_str() else {
                    continue;
                };
                if !keys.insert((session.clone(), storage_key.to_string())) {
                    continue;
                }
                for (is_local, kind) in [(true, "local"), (false, "session")] {
                    let Ok(items) = self
                        .conn
                        .call_with_timeout(
                            "DOMStorage.getDOMStorageItems",
                            json!({"storageId": {"storageKey": storage_key, "isLocalStorage": is_local}}),
                            Some(session),
                            COLLECT_TIMEOUT,
                        )
                        .await
                    else {
                        continue;
                    };
                    for entry in items["entries"].as_array().into_iter().flatten() {
                        let Some(key) = entry[0].as_str() else {
                            continue;
                        };
                        out.insert(StorageEntry {
                            origin: storage_origin(storage_key),
                            kind: kind.to_string(),
                            key: key.to_string(),
                            third_party: false,
                            storage_key: storage_key.to_string(),
                            value_len: entry[1].as_str().map(str::len).unwrap_or(0),
                        });
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

/// Enables capture on one session; iframes get the same hooks as the page.
async fn setup_session(
    conn: &Connection,
    session: &str,
    kind: &str,
    ua: &str,
) -> Result<(), CdpError> {
    let s = Some(session);
    let network = json!({
        "maxPostDataSize": 1 << 20,
        "maxTotalBufferSize": 100 << 20,
        "maxResourceBufferSize": 20 << 20,
    });
    conn.call("Network.enable", network, s).await?;
    conn.call(
        "Network.setCacheDisabled",
        json!({"cacheDisabled": true}),
        s,
    )
    .await?;
    if !ua.is_empty() {
        conn.call("Network.setUserAgentOverride", json!({"userAgent": ua}), s)
            .await?;
    }
    if kind == "page" || kind == "iframe" {
        conn.call("Page.enable", json!({}), s).await?;
        conn.call("Runtime.enable", json!({}), s).await?;
        conn.call("Runtime.addBinding", json!({"name": BINDING}), s)
            .await?;
        conn.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": HOOK}),
            s,
        )
        .await?;
        conn.call("DOMStorage.enable", json!({}), s).await?;
        if kind == "page" {
            conn.call("Inspector.enable", json!({}), s).await?;
            // Every tab behaves as the focused one (focus/visibility-gated pixels fire).
            conn.call(
                "Emulation.setFocusEmulationEnabled",
                json!({"enabled": true}),
                s,
            )
            .await?;
        }
        conn.call(
            "Target.setAutoAttach",
            json!({"autoAttach": true, "waitForDebuggerOnStart": true, "flatten": true}),
            s,
        )
        .await?;
    }
    Ok(())
}

/// Answers what cannot wait for the capture loop (dialogs, new child targets) and forwards
/// every event to the tab.
fn spawn_responder(
    conn: Arc<Connection>,
    mut raw: mpsc::UnboundedReceiver<Event>,
    hold_back: Arc<std::sync::Mutex<Option<String>>>,
) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = raw.recv().await {
            match ev.method.as_str() {
                "Page.javascriptDialogOpening" => {
                    let conn = conn.clone();
                    let session = ev.session_id.clone();
                    tokio::spawn(async move {
                        tracing::debug!("auto-dismissing a JavaScript dialog");
                        let _ = conn
                            .call(
                                "Page.handleJavaScriptDialog",
                                json!({"accept": true}),
                                session.as_deref(),
                            )
                            .await;
                    });
                }
                "Target.attachedToTarget" => {
                    let conn = conn.clone();
                    let child = ev.params["sessionId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let kind = ev.params["targetInfo"]["type"]
                        .as_str()
                        .unwrap_or("other")
                        .to_string();
                    tokio::spawn(async move {
                        if let Err(e) = setup_session(&conn, &child, &kind, "").await {
                            tracing::debug!(%kind, error = %e, "child target setup incomplete");
                        }
                        let _ = conn
                            .call("Runtime.runIfWaitingForDebugger", json!({}), Some(&child))
                            .await;
                    });
                }
                "Fetch.requestPaused" => {
                    let p = &ev.params;
                    let site = hold_back.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let block = super::capture::holds_back(
                        site.as_deref(),
                        p["request"]["url"].as_str().unwrap_or_default(),
                        p["request"]["method"].as_str().unwrap_or("GET"),
                        p["resourceType"].as_str().unwrap_or_default(),
                    );
                    let (method, params) = if block {
                        tracing::debug!("holding back a first-party form submission");
                        (
                            "Fetch.failRequest",
                            json!({"requestId": p["requestId"], "errorReason": "BlockedByClient"}),
                        )
                    } else {
                        (
                            "Fetch.continueRequest",
                            json!({"requestId": p["requestId"]}),
                        )
                    };
                    let conn = conn.clone();
                    let session = ev.session_id.clone();
                    tokio::spawn(async move {
                        let _ = conn.call(method, params, session.as_deref()).await;
                    });
                }
                _ => {}
            }
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    rx
}
