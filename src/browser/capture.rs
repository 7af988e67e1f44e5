//! Turning protocol events into a page's record: requests (with redirects, bodies, initiators),
//! responses, Set-Cookie headers, frames, crashes and hook reports.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cdp::{Connection, Event};
use super::tab::BINDING;
use crate::model::Request;

/// Longest request body kept in the report.
pub const MAX_POST_DATA: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(super) struct ReqState {
    pub(super) request: Request,
    pub(super) session: String,
    pub(super) done: bool,
}

#[derive(Debug, Default)]
pub(super) struct PageState {
    pub(super) reqs: HashMap<(String, String), ReqState>,
    pub(super) order: Vec<(String, String)>,
    pub(super) hops: Vec<Request>,
    /// requestId -> raw Set-Cookie header text.
    pub(super) set_cookie: Vec<(String, String, String)>,
    /// requestId -> Referer seen in extra info before the request itself.
    pub(super) early_referer: HashMap<(String, String), String>,
    /// session id -> target type ("iframe", "worker", ...).
    pub(super) sessions: HashMap<String, String>,
    pub(super) frames: BTreeSet<String>,
    pub(super) main_frame: Option<String>,
    pub(super) main_url: Option<String>,
    pub(super) main_status: Option<u16>,
    pub(super) main_mime: Option<String>,
    pub(super) load_fired: bool,
    pub(super) crashed: bool,
    /// The tab failed in a way that makes it unfit for the next page (closed, detached).
    pub(super) tab_broken: bool,
    pub(super) routes: Vec<String>,
    pub(super) script_cookies: Vec<(String, String)>,
    pub(super) last_activity: Option<Instant>,
    /// Phase stamped on new requests: "load", "consent", "probe".
    pub(super) phase: String,
    /// While probing: the site whose own submissions are held back.
    pub(super) hold_back_site: Option<String>,
    /// First-party submissions held back by the probe.
    pub(super) blocked: Vec<String>,
}

impl PageState {
    pub(super) fn inflight(&self) -> usize {
        self.reqs.values().filter(|r| !r.done).count()
    }
}

/// Folds one protocol event into the page state.
pub(super) fn handle_event(conn: &Connection, main_session: &str, st: &mut PageState, ev: Event) {
    let session = ev.session_id.clone().unwrap_or_default();
    let p = &ev.params;
    match ev.method.as_str() {
        "Network.requestWillBeSent" => on_request(conn, st, &session, p),
        "Network.webSocketCreated" => {
            let Some(id) = p["requestId"].as_str() else {
                return conn.count_decode_failure(&ev.method);
            };
            let url = p["url"].as_str().unwrap_or_default().to_string();
            let key = (session.clone(), id.to_string());
            st.order.push(key.clone());
            st.reqs.insert(
                key,
                ReqState {
                    request: Request {
                        host: host_of(&url),
                        url,
                        method: "GET".into(),
                        resource_type: "WebSocket".into(),
                        initiator: initiator_url(&p["initiator"]),
                        target: target_kind(st, &session),
                        ..Default::default()
                    },
                    session: session.clone(),
                    done: true,
                },
            );
        }
        "Network.requestWillBeSentExtraInfo" => {
            let Some(id) = p["requestId"].as_str() else {
                return conn.count_decode_failure(&ev.method);
            };
            if let Some(referer) = header(&p["headers"], "referer") {
                let key = (session.clone(), id.to_string());
                match st.reqs.get_mut(&key) {
                    Some(r) if r.request.referer.is_none() => r.request.referer = Some(referer),
                    Some(_) => {}
                    None => {
                        st.early_referer.insert(key, referer);
                    }
                }
            }
        }
        "Network.responseReceived" => {
            let Some(id) = p["requestId"].as_str() else {
                return conn.count_decode_failure(&ev.method);
            };
            let status = p["response"]["status"].as_u64().map(|s| s as u16);
            let is_main = p["type"].as_str() == Some("Document")
                && p["frameId"].as_str().is_some()
                && p["frameId"].as_str() == st.main_frame.as_deref();
            if is_main {
                st.main_status = status;
                st.main_mime = p["response"]["mimeType"].as_str().map(str::to_string);
            }
            if let Some(r) = st.reqs.get_mut(&(session, id.to_string())) {
                r.request.status = status;
            }
            st.last_activity = Some(Instant::now());
        }
        "Network.responseReceivedExtraInfo" => {
            let Some(id) = p["requestId"].as_str() else {
                return conn.count_decode_failure(&ev.method);
            };
            if let Some(sc) = header(&p["headers"], "set-cookie") {
                st.set_cookie.push((session, id.to_string(), sc));
            }
        }
        "Network.loadingFinished" | "Network.loadingFailed" => {
            let Some(id) = p["requestId"].as_str() else {
                return conn.count_decode_failure(&ev.method);
            };
            if let Some(r) = st.reqs.get_mut(&(session, id.to_string())) {
                r.done = true;
                if ev.method == "Network.loadingFailed" {
                    let text = p["errorText"].as_str().unwrap_or("failed");
                    let reason = p["blockedReason"].as_str();
                    r.request.error = Some(match reason {
                        Some(b) => format!("{text} (blocked: {b})"),
                        None => text.to_string(),
                    });
                }
            }
            st.last_activity = Some(Instant::now());
        }
        "Page.loadEventFired" if session == main_session => st.load_fired = true,
        "Fetch.requestPaused" => {
            let url = p["request"]["url"].as_str().unwrap_or_default();
            let method = p["request"]["method"].as_str().unwrap_or("GET");
            let kind = p["resourceType"].as_str().unwrap_or_default();
            if holds_back(st.hold_back_site.as_deref(), url, method, kind) {
                st.blocked.push(format!("{method} {url}"));
            }
        }
        "Page.frameNavigated" => {
            let frame = &p["frame"];
            let url = frame["url"].as_str().unwrap_or_default();
            if frame["parentId"].as_str().is_some() || session != main_session {
                if url.starts_with("http") {
                    st.frames.insert(strip_fragment(url));
                }
            } else if url.starts_with("http") {
                st.main_url = Some(url.to_string());
                if st.main_frame.is_none() {
                    st.main_frame = frame["id"].as_str().map(str::to_string);
                }
            }
        }
        "Inspector.targetCrashed" if session == main_session => st.crashed = true,
        "Inspector.detached" if session == main_session => st.tab_broken = true,
        "Target.attachedToTarget" => {
            let child = p["sessionId"].as_str().unwrap_or_default().to_string();
            let kind = p["targetInfo"]["type"].as_str().unwrap_or("other");
            st.sessions.insert(child, kind.to_string());
        }
        "Runtime.bindingCalled" if p["name"].as_str() == Some(BINDING) => {
            let payload: Value =
                serde_json::from_str(p["payload"].as_str().unwrap_or("{}")).unwrap_or_default();
            match payload["t"].as_str() {
                Some("route") => {
                    if let Some(u) = payload["url"].as_str() {
                        st.routes.push(u.to_string());
                    }
                }
                Some("cookie") => {
                    let name = payload["name"].as_str().unwrap_or_default().to_string();
                    let domain = payload["domain"]
                        .as_str()
                        .filter(|d| !d.is_empty())
                        .or(payload["host"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    if !name.is_empty() {
                        st.script_cookies.push((name, domain));
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

fn on_request(conn: &Connection, st: &mut PageState, session: &str, p: &Value) {
    let (Some(id), Some(url)) = (p["requestId"].as_str(), p["request"]["url"].as_str()) else {
        return conn.count_decode_failure("Network.requestWillBeSent");
    };
    if !(url.starts_with("http:") || url.starts_with("https:")) {
        return; // data:, blob:, about: never leave the browser
    }
    st.last_activity = Some(Instant::now());
    let key = (session.to_string(), id.to_string());
    let mut chain = Vec::new();
    if let Some(prev) = st.reqs.remove(&key) {
        // A redirect: the previous hop is complete with the redirect's status.
        let mut hop = prev.request;
        hop.status = p["redirectResponse"]["status"].as_u64().map(|s| s as u16);
        chain = std::mem::take(&mut hop.redirect_chain);
        chain.push(hop.url.clone());
        st.hops.push(hop);
        st.order.retain(|k| k != &key);
    }
    let (post_data, truncated) = post_data(&p["request"]);
    let referer =
        header(&p["request"]["headers"], "referer").or_else(|| st.early_referer.remove(&key));
    let request = Request {
        url: url.to_string(),
        host: host_of(url),
        method: p["request"]["method"].as_str().unwrap_or("GET").to_string(),
        resource_type: p["type"].as_str().unwrap_or("Other").to_string(),
        initiator: initiator_url(&p["initiator"]),
        status: None,
        third_party: false,
        post_data,
        post_data_truncated: truncated,
        vendor: None,
        referer,
        frame_url: p["documentURL"].as_str().map(str::to_string),
        target: target_kind(st, session),
        redirect_chain: chain,
        error: None,
        phase: st.phase.clone(),
    };
    st.order.push(key.clone());
    st.reqs.insert(
        key,
        ReqState {
            request,
            session: session.to_string(),
            done: false,
        },
    );
}

pub(super) fn target_kind(st: &PageState, session: &str) -> String {
    st.sessions
        .get(session)
        .cloned()
        .unwrap_or_else(|| "page".to_string())
}

/// The request body: `postDataEntries` (base64 bytes) or the older `postData` text.
pub(super) fn post_data(request: &Value) -> (Option<String>, bool) {
    let mut bytes = Vec::new();
    if let Some(entries) = request["postDataEntries"].as_array() {
        for e in entries {
            if let Some(b) = e["bytes"].as_str() {
                bytes.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .unwrap_or_default(),
                );
            }
        }
    }
    if bytes.is_empty()
        && let Some(text) = request["postData"].as_str()
    {
        bytes = text.as_bytes().to_vec();
    }
    if bytes.is_empty() {
        return (None, false);
    }
    let truncated = bytes.len() > MAX_POST_DATA;
    bytes.truncate(MAX_POST_DATA);
    (
        Some(String::from_utf8_lossy(&bytes).into_owned()),
        truncated,
    )
}

/// URL of the script or document that caused a request.
pub(super) fn initiator_url(init: &Value) -> Option<String> {
    if let Some(u) = init["url"].as_str().filter(|u| !u.is_empty()) {
        return Some(u.to_string());
    }
    let mut stack = &init["stack"];
    while !stack.is_null() {
        for f in stack["callFrames"].as_array().into_iter().flatten() {
            if let Some(u) = f["url"].as_str().filter(|u| !u.is_empty()) {
                return Some(u.to_string());
            }
        }
        stack = &stack["parent"];
    }
    None
}

/// Whether the form probe holds a request back: the site's own form submissions (a navigation,
/// or any non-GET) never reach it, so no fake appointment or inquiry is ever created.
pub fn holds_back(site: Option<&str>, url: &str, method: &str, resource_type: &str) -> bool {
    let Some(site) = site else { return false };
    let host = host_of(url);
    crate::crawl::same_site(site, &host) && (method != "GET" || resource_type == "Document")
}

/// Case-insensitive header lookup in a CDP headers object.
pub(super) fn header(headers: &Value, name: &str) -> Option<String> {
    headers.as_object().and_then(|h| {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str().map(str::to_string))
    })
}

/// (name, domain) of each cookie set by a Set-Cookie header on this page.
pub(super) fn set_cookie_names(st: &PageState) -> Vec<(String, String)> {
    let mut urls: HashMap<(&str, &str), &str> = HashMap::new();
    for (key, r) in &st.reqs {
        urls.insert((key.0.as_str(), key.1.as_str()), r.request.url.as_str());
    }
    let mut out = Vec::new();
    for (session, id, text) in &st.set_cookie {
        let host = urls
            .get(&(session.as_str(), id.as_str()))
            .map(|u| host_of(u))
            .unwrap_or_default();
        for line in text.lines() {
            let mut parts = line.split(';');
            let name = parts
                .next()
                .and_then(|kv| kv.split('=').next())
                .unwrap_or_default()
                .trim();
            if name.is_empty() {
                continue;
            }
            let domain = parts
                .filter_map(|a| {
                    let (k, v) = a.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("domain").then(|| v.trim())
                })
                .next()
                .unwrap_or(&host);
            out.push((name.to_string(), domain.to_string()));
        }
    }
    out
}

/// "https://a.com/^0https://b.com" -> "https://a.com"
pub(super) fn storage_origin(storage_key: &str) -> String {
    storage_key
        .split('^')
        .next()
        .unwrap_or(storage_key)
        .trim_end_matches('/')
        .to_string()
}

pub fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

pub(super) fn strip_fragment(url: &str) -> String {
    url.split('#').next().unwrap_or(url).to_string()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn post_data_decodes_entries_and_caps() {
        let body = "a".repeat(MAX_POST_DATA + 10);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&body);
        let (text, truncated) = post_data(&json!({"postDataEntries": [{"bytes": b64}]}));
        assert_eq!(text.unwrap().len(), MAX_POST_DATA);
        assert!(truncated);
        let (text, truncated) = post_data(&json!({"postData": "x=1"}));
        assert_eq!(text.as_deref(), Some("x=1"));
        assert!(!truncated);
    }

    #[test]
    fn initiator_walks_async_stacks() {
        let init = json!({"type": "script", "stack": {"callFrames": [],
            "parent": {"callFrames": [{"url": "https://t.example/px.js"}]}}});
        assert_eq!(
            initiator_url(&init).as_deref(),
            Some("https://t.example/px.js")
        );
    }

    #[test]
    fn storage_origin_strips_partition() {
        assert_eq!(
            storage_origin("https://book.example/^0https://clinic.test"),
            "https://book.example"
        );
        assert_eq!(
            storage_origin("https://clinic.test/"),
            "https://clinic.test"
        );
    }
}
