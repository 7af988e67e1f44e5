//! HTTP handlers: the shared request checks (size, caller, signature and nonce, content type),
//! the browser script, health, readiness and metrics. Events and consent live in submodules.
//!
//! Error answers are `{"error", "field", "message"}`: the field and the rule that failed, never
//! a value from the request.

mod consent;
mod events;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Notify;

pub use consent::post_consent;
pub use events::post_events;

use super::config::RelayConfig;
use super::consent::{ConsentIndex, ConsentRules};
use super::metrics::Metrics;
use super::outbox::{Nonce, Outbox};
use super::sanitize::Sanitizer;

/// Header carrying the Unix-seconds timestamp of a signed request.
pub const TIMESTAMP_HEADER: &str = "x-pixelwatch-timestamp";
/// Header carrying `v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub const SIGNATURE_HEADER: &str = "x-pixelwatch-signature";

/// The browser script served at `/v1/pixel.js`.
pub const BROWSER_SCRIPT: &str = include_str!("pixel.js");

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// Config.
    pub cfg: Arc<RelayConfig>,
    /// Allowlist builder.
    pub sanitizer: Sanitizer,
    /// Consent index.
    pub consent: ConsentIndex,
    /// Configured consent values.
    pub consent_rules: ConsentRules,
    /// Outbox writer.
    pub outbox: Outbox,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Destination names, in config order.
    pub destinations: Vec<Arc<str>>,
    /// Wakes each destination's dispatcher (same order).
    pub wake: Vec<Arc<Notify>>,
    /// Whether each destination has an access token (same order).
    pub ready: Vec<bool>,
    /// HMAC key for back-end callers.
    pub hmac_secret: Option<Vec<u8>>,
    /// Header holding the client address, when behind a proxy.
    pub client_ip_header: Option<HeaderName>,
    /// Whether any destination takes the client address / user agent.
    pub wants_client: (bool, bool),
}

type St = State<Arc<AppState>>;

/// Sign a body the way back-end callers must: `v1=<hex>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// An error answer: status, machine code, the field and the rule that failed.
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    field: Option<String>,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    fn bad_input(code: &'static str, e: super::event::InputError) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            field: Some(e.field),
            message: e.problem,
        }
    }

    fn replayed() -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "replayed_request",
            Some(SIGNATURE_HEADER),
            "this signed request was already processed and changed nothing now; sign again with a fresh timestamp to send it again",
        )
    }

    fn storage(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            None,
            format!("{what} not stored; retry later"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut v = json!({"error": self.code, "message": self.message});
        if let Some(f) = self.field {
            v["field"] = json!(f);
        }
        (self.status, axum::Json(v)).into_response()
    }
}

/// Who is calling.
pub(crate) enum Caller {
    /// A page on an allowed origin (unsigned).
    Browser,
    /// A signed back-end caller; its signature is the request's nonce.
    Server(Nonce),
}

impl Caller {
    fn source(&self) -> &'static str {
        match self {
            Caller::Browser => "browser",
            Caller::Server(_) => "server",
        }
    }

    fn nonce(self) -> Option<Nonce> {
        match self {
            Caller::Browser => None,
            Caller::Server(n) => Some(n),
        }
    }
}

impl AppState {
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<String> {
        let o = headers.get(header::ORIGIN)?.to_str().ok()?;
        self.cfg
            .server
            .allowed_origins
            .iter()
            .any(|a| a.trim_end_matches('/') == o)
            .then(|| o.to_string())
    }

    /// Authenticate: a valid signature makes a server caller; an allowed Origin a browser one.
    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<Caller, ApiError> {
        let unauthorized = |code, field: &str, message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, code, Some(field), message)
        };
        if let Some(sig) = headers.get(SIGNATURE_HEADER) {
            let Some(secret) = &self.hmac_secret else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "signature_not_configured",
                    None,
                    "signed requests are not enabled on this relay (no HMAC secret)",
                ));
            };
            let ts = headers
                .get(TIMESTAMP_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| {
                    unauthorized(
                        "bad_signature",
                        TIMESTAMP_HEADER,
                        "missing or non-integer timestamp header",
                    )
                })?;
            let now = chrono::Utc::now().timestamp();
            let window = self.cfg.auth.replay_window_secs;
            if (now - ts).unsigned_abs() > window {
                return Err(unauthorized(
                    "stale_signature",
                    TIMESTAMP_HEADER,
                    "timestamp outside the replay window",
                ));
            }
            let sig_bytes = sig
                .to_str()
                .ok()
                .and_then(|s| s.strip_prefix("v1="))
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| {
                    unauthorized(
                        "bad_signature",
                        SIGNATURE_HEADER,
                        "signature must be v1=<hex HMAC-SHA256>",
                    )
                })?;
            mac(secret, ts, body)
                .verify_slice(&sig_bytes)
                .map_err(|_| {
                    unauthorized(
                        "bad_signature",
                        SIGNATURE_HEADER,
                        "signature does not match the body and timestamp",
                    )
                })?;
            // The signature covers timestamp and body, so it names this request exactly: it is
            // the nonce, kept until the timestamp falls out of the window.
            return Ok(Caller::Server(Nonce {
                hash: hex::encode(sha2::Sha256::digest(&sig_bytes)),
                expires_ms: (ts + window as i64 + 1) * 1000,
            }));
        }
        match self.allowed_origin(headers) {
            Some(_) => Ok(Caller::Browser),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                Some("Origin"),
                "browser requests must come from a configured origin; back-end callers must sign",
            )),
        }
    }

    /// Client address and user agent of a browser caller, read only when a destination takes
    /// them.
    fn request_facts(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> super::sanitize::RequestFacts {
        let mut facts = super::sanitize::RequestFacts::default();
        if !matches!(caller, Caller::Browser) {
            return facts;
        }
        if self.wants_client.0 {
            facts.client_ip = match &self.client_ip_header {
                Some(h) => headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.trim().parse::<IpAddr>().ok()),
                None => peer.map(|p| p.ip()),
            };
        }
        if self.wants_client.1 {
            facts.user_agent = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        facts
    }
}

/// Bodies are JSON: `application/json` from anyone, `text/plain` (what `sendBeacon` sends
/// without a preflight) from browsers only; a `charset` parameter must be UTF-8.
fn check_content_type(headers: &HeaderMap, caller: &Caller) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            Some("Content-Type"),
            why,
        )
    };
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(refuse(
            "missing; send application/json (browsers may use text/plain)",
        ));
    };
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let ok = k.trim().eq_ignore_ascii_case("charset")
            && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8");
        if !ok {
            return Err(refuse("the only parameter accepted is charset=utf-8"));
        }
    }
    match (media.as_str(), caller) {
        ("application/json", _) => Ok(()),
        ("text/plain", Caller::Browser) => Ok(()),
        ("text/plain", Caller::Server(_)) => Err(refuse(
            "signed callers must send application/json (text/plain is for browser beacons)",
        )),
        _ => Err(refuse(
            "must be application/json (browsers may use text/plain)",
        )),
    }
}

fn with_cors(mut r: Response, caller: &Option<String>) -> Response {
    if let Some(o) = caller
        && let Ok(v) = HeaderValue::from_str(o)
    {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    r
}

/// Read the body with the configured cap (also when there is no Content-Length).
async fn read_body(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
    let max = st.cfg.server.max_body_bytes;
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            Some("body"),
            format!("request body exceeds {max} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > max
    {
        return Err(too_big());
    }
    axum::body::to_bytes(body, max).await.map_err(|_| too_big())
}

/// Size, caller, content type: the checks every POST passes before its body is parsed.
async fn admit(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(axum::body::Bytes, Caller), ApiError> {
    let body = read_body(st, headers, body).await?;
    let caller = st.authenticate(headers, &body)?;
    check_content_type(headers, &caller)?;
    Ok((body, caller))
}

fn gpc(headers: &HeaderMap) -> bool {
    headers
        .get("sec-gpc")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1")
}

/// `OPTIONS` preflight for the browser endpoints.
pub async fn preflight(State(st): St, headers: HeaderMap) -> Response {
    match st.allowed_origin(&headers) {
        Some(o) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            with_cors(r, &Some(o))
        }
        None => ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            Some("Origin"),
            "origin not allowed",
        )
        .into_response(),
    }
}

/// `GET /v1/pixel.js`
pub async fn script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        BROWSER_SCRIPT,
    )
        .into_response()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database takes writes and every destination has an access token.
pub async fn readyz(State(st): St) -> Response {
    let db = st.outbox.ping().await;
    let all = st.ready.iter().all(|r| *r);
    let per: serde_json::Map<String, serde_json::Value> = st
        .destinations
        .iter()
        .zip(&st.ready)
        .map(|(d, r)| (d.to_string(), json!(r)))
        .collect();
    let body = json!({
        "database_writable": db.is_ok(),
        "destination_configured": all,
        "destinations": per,
    });
    let status = if db.is_ok() && all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`
pub async fn metrics(State(st): St) -> Response {
    let depth = st.outbox.depth().await.ok();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(depth.as_deref()),
    )
        .into_response()
}

use sha2::Digest as _;
