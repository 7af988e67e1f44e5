//! Turning protocol events into a page's record: requests (with redirects, bodies, initiators),
//! responses, Set-Cookie headers, frames, routes, WebSockets, crashes — and feeding the settle
//! rules what holds the page.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cdp::{Connection, Event};
use super::guard::Guard;
use super::protocol::{self, Event as Ev, RequestData, header};
use super::settle::{Hold, Settle};
use crate::model::{Phase, Request};

/// Longest request body kept in the report.
pub const MAX_POST_DATA: usize = 64 * 1024;
/// WebSocket frames recorded per page while probing (each is evidence, none leaves).
const MAX_PROBE_FRAMES: usize = 50;

/// (session id, request id).
pub(super) type Key = (String, String);

#[derive(Debug, Default)]
pub(super) struct ReqState {
    pub(super) request: Request,
    pub(super) session: String,
    pub(super) done: bool,
}

#[derive(Debug, Default)]
pub(super) struct PageState {
    pub(super) reqs: HashMap<Key, ReqState>,
    pub(super) order: Vec<Key>,
    /// Redirect hops and WebSocket frames held during the probe: complete records.
    pub(super) hops: Vec<Request>,
    /// Raw Set-Cookie header text by request.
    pub(super) set_cookie: Vec<(Key, String)>,
    /// Referer seen in extra info before the request itself.
    pub(super) early_referer: HashMap<Key, String>,
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
    /// URLs the main frame reached within the document (pushState / replaceState).
    pub(super) routes: Vec<String>,
    /// What holds the page, and when it is settled.
    pub(super) settle: Settle,
    /// Phase stamped on new requests: "load", "consent", "probe".
    pub(super) phase: Phase,
    /// Step of a walked flow or journey stamped on new requests.
    pub(super) step: Option<String>,
    /// The probe's guard while the tab probes (requests are paused and judged).
    pub(super) guard: Option<std::sync::Arc<Guard>>,
    /// The guard judges as for a scripted journey (canaries only), not the form probe.
    pub(super) journey: bool,
    /// Every WebSocket of this tab is offline (during a probe or a journey, or for good since
    /// a probe queued frames on an open socket).
    pub(super) sockets_offline: bool,
    /// Requests the probe stopped: "METHOD url (why)".
    pub(super) blocked: Vec<String>,
    /// WebSockets open now.
    pub(super) open_sockets: HashSet<Key>,
    /// The tab is leaving the page: an abort of a request that was answered is not an error.
    pub(super) leaving: bool,
    /// A navigation of the main frame started (a click or a submit that leaves the page).
    pub(super) main_navigating: bool,
    /// Where a submission let through by `--submit-forms` landed (a confirmation page).
    pub(super) landing: Option<Landing>,
    pub(super) probe_frames: usize,
    /// Why the form probe could not run (reported on the page).
    pub(super) probe_skipped: Option<&'static str>,
    /// WebSocket frames the page sent while sockets were offline (all of them, recorded or
    /// not): the browser holds them, and closing the tab would release them.
    pub(super) frames_held: usize,
}

/// A page reached by a submission: its URL, where its requests start, and what it showed.
#[derive(Debug, Default)]
pub(super) struct Landing {
    pub(super) url: String,
    pub(super) order_at: usize,
    pub(super) hops_at: usize,
    pub(super) status: Option<u16>,
    pub(super) dom: Option<super::tab::Visit>,
}

/// Folds one protocol event into the page state.
pub(super) fn handle_event(conn: &Connection, main_session: &str, st: &mut PageState, ev: Event) {
    let session = ev.session_id.clone().unwrap_or_default();
    let parsed = match protocol::parse(&ev.method, &ev.params) {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(_) => return conn.count_decode_failure(&ev.method),
    };
    let now = Instant::now();
    match parsed {
        Ev::RequestWillBeSent(e) => on_request(st, &session, e, now),
        Ev::WebSocketCreated(e) => {
            let key = (session.clone(), e.request_id);
            st.settle.request(key.clone(), &e.url, Hold::Never, now);
            let error = match (st.sockets_offline, st.guard.is_some()) {
                (true, true) => Some("blocked: WebSockets are offline during the form probe".into()),
                (true, false) => Some(
                    "blocked: WebSockets stay offline in this tab since a form probe queued frames \
                     on an open socket (any change to the rule would release them)"
                        .to_string(),
                ),
                _ => None,
            };
            if error.is_none() {
                st.open_sockets.insert(key.clone());
            } else if st.guard.is_some() {
                st.blocked.push(format!(
                    "WebSocket {} (opened during the form probe)",
                    e.url
                ));
            }
            st.order.push(key.clone());
            st.reqs.insert(
                key,
                ReqState {
                    request: Request {
                        host: host_of(&e.url),
                        url: e.url,
                        method: "GET".into(),
                        resource_type: "WebSocket".into(),
                        initiator: initiator_url(&e.initiator),
                        target: target_kind(st, &session),
                        phase: st.phase,
                        step: st.step.clone(),
                        error,
                        ..Default::default()
                    },
                    session: session.clone(),
                    done: true,
                },
            );
        }
        Ev::WebSocketClosed(e) => {
            st.open_sockets.remove(&(session, e.request_id));
        }
        Ev::WebSocketFrameSent(e) => {
            // Frames sent while sockets are offline are held in the browser: evidence only.
            if !st.sockets_offline {
                return;
            }
            st.frames_held += 1;
            if st.probe_frames >= MAX_PROBE_FRAMES {
                return;
            }
            let key = (session.clone(), e.request_id);
            let Some(socket) = st.reqs.get(&key) else {
                return;
            };
            st.probe_frames += 1;
            let mut payload = e.response.payload_data.into_bytes();
            let truncated = payload.len() > MAX_POST_DATA;
            payload.truncate(MAX_POST_DATA);
            let frame = Request {
                method: "SEND".into(),
                post_data: Some(String::from_utf8_lossy(&payload).into_owned()),
                post_data_truncated: truncated,
                phase: st.phase,
                step: st.step.clone(),
                error: Some(
                    "held: WebSockets are offline during the form probe; this frame never left \
                     the browser"
                        .into(),
                ),
                ..socket.request.clone()
            };
            st.hops.push(frame);
        }
        Ev::RequestExtraInfo(e) => {
            if let Some(referer) = header(&e.headers, "referer") {
                let key = (session, e.request_id);
                match st.reqs.get_mut(&key) {
                    Some(r) if r.request.referer.is_none() => r.request.referer = Some(referer),
                    Some(_) => {}
                    None => {
                        st.early_referer.insert(key, referer);
                    }
                }
            }
        }
        Ev::ResponseReceived(e) => {
            let status = e.response.status();
            let is_main = e.resource_type.as_deref() == Some("Document")
                && e.frame_id.is_some()
                && e.frame_id.as_deref() == st.main_frame.as_deref();
            if is_main {
                st.main_status = status;
                st.main_mime = e.response.mime_type.clone();
            }
            let key = (session, e.request_id);
            if let Some(r) = st.reqs.get_mut(&key) {
                r.request.status = status;
            }
            st.settle.response(&key, now);
        }
        Ev::ResponseExtraInfo(e) => {
            if let Some(sc) = header(&e.headers, "set-cookie") {
                st.set_cookie.push(((session, e.request_id), sc));
            }
        }
        Ev::LoadingFinished(e) => {
            let key = (session, e.request_id);
            if let Some(r) = st.reqs.get_mut(&key) {
                r.done = true;
            }
            st.settle.done(&key);
        }
        Ev::LoadingFailed(e) => {
            let key = (session, e.request_id);
            let leaving = st.leaving;
            if let Some(r) = st.reqs.get_mut(&key) {
                r.done = true;
                let text = e.error_text.as_deref().unwrap_or("failed");
                let aborted = text.contains("ERR_ABORTED");
                r.request.error = match (leaving && aborted, r.request.status) {
                    // Answered before we left: leaving cancels nothing that was sent.
                    (true, Some(_)) => r.request.error.take(),
                    (true, None) => Some("no response before the scanner left the page".into()),
                    _ => Some(match e.blocked_reason.as_deref() {
                        Some(b) => format!("{text} (blocked: {b})"),
                        None => text.to_string(),
                    }),
                };
            }
            st.settle.done(&key);
        }
        Ev::LoadEventFired if session == main_session => st.load_fired = true,
        Ev::RequestPaused(e) => {
            if let Some(why) = e.pixelwatch_blocked {
                st.blocked
                    .push(format!("{} {} ({why})", e.request.method, e.request.url));
            }
        }
        Ev::FrameNavigated(e) => {
            let frame = e.frame;
            if frame.parent_id.is_some() || session != main_session {
                if frame.url.starts_with("http") {
                    st.frames.insert(strip_fragment(&frame.url));
                }
            } else if frame.url.starts_with("http") {
                let submitted = st
                    .guard
                    .as_ref()
                    .is_some_and(|g| g.submits_to(&host_of(&frame.url)))
                    && st.landing.is_none()
                    && st
                        .main_url
                        .as_deref()
                        .is_some_and(|prev| strip_fragment(prev) != strip_fragment(&frame.url));
                if submitted {
                    st.landing = Some(Landing {
                        url: frame.url.clone(),
                        order_at: st.order.len(),
                        hops_at: st.hops.len(),
                        ..Default::default()
                    });
                }
                st.main_url = Some(frame.url);
                if st.main_frame.is_none() {
                    st.main_frame = Some(frame.id);
                }
            }
        }
        Ev::NavigatedWithinDocument(e) => {
            let main = st.main_frame.as_deref().is_none_or(|f| f == e.frame_id);
            if session == main_session && main && e.url.starts_with("http") {
                st.routes.push(e.url);
            }
        }
        Ev::TargetCrashed if session == main_session => st.crashed = true,
        Ev::InspectorDetached if session == main_session => st.tab_broken = true,
        Ev::AttachedToTarget(e) => {
            st.sessions.insert(e.session_id, e.target_info.kind);
        }
        _ => {}
    }
}

fn on_request(st: &mut PageState, session: &str, e: protocol::RequestWillBeSent, now: Instant) {
    let url = e.request.url.as_str();
    if !(url.starts_with("http:") || url.starts_with("https:")) {
        return; // data:, blob:, about: never leave the browser
    }
    let key = (session.to_string(), e.request_id.clone());
    let mut chain = Vec::new();
    if let Some(prev) = st.reqs.remove(&key) {
        // A redirect: the previous hop is complete with the redirect's status.
        let mut hop = prev.request;
        hop.status = e.redirect_response.as_ref().and_then(|r| r.status());
        chain = std::mem::take(&mut hop.redirect_chain);
        chain.push(hop.url.clone());
        st.hops.push(hop);
        st.order.retain(|k| k != &key);
    }
    let (post_data, truncated) = post_data(&e.request);
    let referer = header(&e.request.headers, "referer").or_else(|| st.early_referer.remove(&key));
    let resource_type = e.resource_type.unwrap_or_else(|| "Other".into());
    if resource_type == "Document"
        && e.frame_id.is_some()
        && e.frame_id.as_deref() == st.main_frame.as_deref()
    {
        st.main_navigating = true;
    }
    let method = if e.request.method.is_empty() {
        "GET".to_string()
    } else {
        e.request.method.clone()
    };
    st.settle
        .request(key.clone(), url, Hold::of(&resource_type, &method), now);
    let request = Request {
        url: url.to_string(),
        host: host_of(url),
        method,
        resource_type,
        initiator: initiator_url(&e.initiator),
        status: None,
        third_party: false,
        post_data,
        post_data_truncated: truncated,
        vendor: None,
        referer,
        frame_url: e.document_url,
        target: target_kind(st, session),
        redirect_chain: chain,
        error: None,
        phase: st.phase,
        step: st.step.clone(),
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
pub(super) fn post_data(request: &RequestData) -> (Option<String>, bool) {
    let mut bytes = Vec::new();
    for e in &request.post_data_entries {
        if let Some(b) = &e.bytes {
            bytes.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .unwrap_or_default(),
            );
        }
    }
    if bytes.is_empty()
        && let Some(text) = &request.post_data
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
        let req = |v: serde_json::Value| -> RequestData { serde_json::from_value(v).unwrap() };
        let (text, truncated) = post_data(&req(json!({"postDataEntries": [{"bytes": b64}]})));
        assert_eq!(text.unwrap().len(), MAX_POST_DATA);
        assert!(truncated);
        let (text, truncated) = post_data(&req(json!({"postData": "x=1"})));
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
