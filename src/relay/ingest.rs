//! HTTP handlers: event ingest, consent, the browser script, health, readiness and metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;

use super::config::RelayConfig;
use super::consent::{
    ADVERTISING, ConsentIndex, ConsentRequest, Gate, NewConsent, subject_key, token_key,
};
use super::event::parse_body;
use super::metrics::Metrics;
use super::outbox::{Decision, Enqueued, NewAudit, NewOutboxRow, Outbox};
use super::sanitize::{Sanitizer, Verdict};

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
    /// Outbox writer.
    pub outbox: Outbox,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes the dispatcher.
    pub wake: Arc<Notify>,
    /// HMAC key for back-end callers.
    pub hmac_secret: Option<Vec<u8>>,
    /// Whether a destination token is configured.
    pub destination_ready: bool,
}

type St = State<Arc<AppState>>;

/// Sign a body the way back-end callers must: `v1=<hex>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn error(status: StatusCode, code: &str, field: Option<&str>, message: &str) -> Response {
    let mut v = json!({"error": code, "message": message});
    if let Some(f) = field {
        v["field"] = json!(f);
    }
    (status, axum::Json(v)).into_response()
}

/// A small error value that renders as the JSON error response.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
    message: &'static str,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        field: Option<&'static str>,
        message: &'static str,
    ) -> ApiError {
        ApiError {
            status,
            code,
            field,
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.code, self.field, self.message)
    }
}

enum Caller {
    Browser,
    Server,
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
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "bad_signature",
                        Some(TIMESTAMP_HEADER),
                        "missing or non-integer timestamp header",
                    )
                })?;
            let now = chrono::Utc::now().timestamp();
            if (now - ts).unsigned_abs() > self.cfg.auth.replay_window_secs {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "stale_signature",
                    Some(TIMESTAMP_HEADER),
                    "timestamp outside the replay window",
                ));
            }
            let hex_sig = sig.to_str().ok().and_then(|s| s.strip_prefix("v1="));
            let sig_bytes = hex_sig.and_then(|h| hex::decode(h).ok()).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_signature",
                    Some(SIGNATURE_HEADER),
                    "signature must be v1=<hex HMAC-SHA256>",
                )
            })?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
            mac.update(ts.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&sig_bytes).map_err(|_| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_signature",
                    Some(SIGNATURE_HEADER),
                    "signature does not match the body and timestamp",
                )
            })?;
            return Ok(Caller::Server);
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

async fn read_body(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, Response> {
    let max = st.cfg.server.max_body_bytes;
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            Some("body"),
            &format!("request body exceeds {max} bytes"),
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

fn gpc(headers: &HeaderMap) -> bool {
    headers
        .get("sec-gpc")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1")
}

/// `POST /v1/events`
pub async fn post_events(State(st): St, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let origin = st.allowed_origin(&headers);
    let resp = events_inner(&st, &headers, body).await;
    let status = resp.status();
    if status == StatusCode::ACCEPTED {
        st.metrics.ingest_latency.observe(started.elapsed());
    } else {
        st.metrics.rejected(status.as_u16());
    }
    with_cors(resp, &origin)
}

async fn events_inner(st: &AppState, headers: &HeaderMap, body: Body) -> Response {
    let received = chrono::Utc::now();
    let body = match read_body(st, headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let caller = match st.authenticate(headers, &body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let events = match parse_body(&body, st.cfg.server.max_events_per_request) {
        Ok(e) => e,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_event",
                Some(&e.field),
                &e.problem,
            );
        }
    };
    drop(body);
    let source = match caller {
        Caller::Browser => "browser",
        Caller::Server => "server",
    };
    let gpc = gpc(headers);
    let now = received.timestamp();
    let mut audits = Vec::with_capacity(events.len());
    for ev in &events {
        let gate = st.consent.check(
            &st.cfg.consent,
            ev.consent_token.as_deref(),
            // Only a signed back-end caller may name a subject; a browser could name anyone.
            ev.subject.as_deref().filter(|_| source == "server"),
            gpc,
            now,
        );
        let mut audit = NewAudit {
            received_ms: received.timestamp_millis(),
            source,
            event_id: None,
            event: None,
            decision: Decision::Dropped,
            reasons: Vec::new(),
            consent_id: None,
            legal_basis: None,
            outbox: None,
        };
        match gate {
            Gate::Denied { reason, consent_id } => {
                audit.consent_id = consent_id;
                audit.reasons.push(reason.to_string());
                st.metrics.dropped(reason);
            }
            Gate::Allowed {
                consent_id,
                legal_basis,
            } => {
                audit.consent_id = consent_id;
                audit.legal_basis = legal_basis;
                let s = st.sanitizer.sanitize(ev, now);
                audit.event = s.mapped;
                audit.reasons = s.reasons;
                match s.verdict {
                    Verdict::Forward(o) => {
                        audit.decision = Decision::Queued;
                        audit.event_id = Some(o.event_id.clone());
                        audit.outbox = Some(NewOutboxRow {
                            event_id: o.event_id,
                            test_event_code: o.test_event_code,
                            payload: o.payload,
                        });
                    }
                    Verdict::Dropped => {
                        st.metrics.dropped(
                            audit
                                .reasons
                                .last()
                                .map(String::as_str)
                                .unwrap_or("dropped"),
                        );
                    }
                    Verdict::Blocked => {
                        audit.decision = Decision::Blocked;
                        st.metrics.blocked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        audits.push(audit);
    }
    drop(events);
    let summary: Vec<(Decision, Option<String>, Vec<String>)> = audits
        .iter()
        .map(|a| (a.decision, a.event_id.clone(), a.reasons.clone()))
        .collect();
    let stored = match st.outbox.ingest(audits).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot store events");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                None,
                "events were not stored; retry later",
            );
        }
    };
    let mut accepted = 0;
    let results: Vec<Value> = summary
        .into_iter()
        .zip(stored)
        .map(|((decision, event_id, reasons), stored)| {
            let d = match (decision, stored) {
                (_, Enqueued::Accepted) => {
                    accepted += 1;
                    "accepted"
                }
                (_, Enqueued::Duplicate) => "duplicate",
                (Decision::Blocked, _) => "blocked",
                _ => "dropped",
            };
            json!({"decision": d, "event_id": event_id, "reasons": reasons})
        })
        .collect();
    if accepted > 0 {
        st.metrics.accepted.fetch_add(accepted, Ordering::Relaxed);
        st.wake.notify_one();
    }
    tracing::debug!(source, events = results.len(), accepted, "events processed");
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"results": results})),
    )
        .into_response()
}

/// `POST /v1/consent`
pub async fn post_consent(State(st): St, headers: HeaderMap, body: Body) -> Response {
    let origin = st.allowed_origin(&headers);
    let resp = consent_inner(&st, &headers, body).await;
    if !resp.status().is_success() {
        st.metrics.rejected(resp.status().as_u16());
    }
    with_cors(resp, &origin)
}

async fn consent_inner(st: &AppState, headers: &HeaderMap, body: Body) -> Response {
    let body = match read_body(st, headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let caller = match st.authenticate(headers, &body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let req: ConsentRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_consent",
                None,
                &e.to_string(),
            );
        }
    };
    let now = chrono::Utc::now().timestamp();
    let short = |s: &str| !s.trim().is_empty() && s.len() <= 64;
    if !short(&req.source) || !short(&req.policy_version) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_consent",
            Some("source/policy_version"),
            "source and policy_version must be 1-64 characters",
        );
    }
    if req.purposes.is_empty()
        || req.purposes.iter().any(|p| {
            p.is_empty() || p.len() > 32 || !p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_consent",
            Some("purposes"),
            "purposes must be a non-empty list of lowercase names like \"advertising\"",
        );
    }
    let decided_at = req.decided_at.unwrap_or(now);
    if decided_at > now + 600 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_consent",
            Some("decided_at"),
            "is in the future",
        );
    }
    if matches!(caller, Caller::Browser) && req.subject.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_consent",
            Some("subject"),
            "subject ids may only be set by signed back-end callers",
        );
    }
    let (key, token) = match (&req.consent_token, &req.subject) {
        (Some(t), _) if t.len() >= 16 && t.len() <= 128 => (token_key(t), Some(t.clone())),
        (Some(_), _) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_consent",
                Some("consent_token"),
                "malformed token",
            );
        }
        (None, Some(s)) if short(s) => (subject_key(s), None),
        (None, Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_consent",
                Some("subject"),
                "must be 1-64 characters",
            );
        }
        (None, None) => {
            let t = hex::encode(rand::random::<[u8; 16]>());
            (token_key(&t), Some(t))
        }
    };
    let gpc = gpc(headers);
    let granted = req.granted && !(gpc && req.purposes.iter().any(|p| p == ADVERTISING));
    let rec = NewConsent {
        key_hash: key,
        granted,
        purposes: req.purposes,
        source: req.source,
        policy_version: req.policy_version,
        gpc,
        decided_at,
    };
    match st.outbox.consent(rec.clone()).await {
        Ok(id) => {
            st.consent.record(id, &rec);
            (
                StatusCode::CREATED,
                axum::Json(json!({
                    "consent_id": id, "consent_token": token, "granted": granted, "gpc": gpc
                })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store consent");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                None,
                "consent was not stored; retry later",
            )
        }
    }
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
        None => error(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            Some("Origin"),
            "origin not allowed",
        ),
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

/// `GET /readyz`: the database takes writes and a destination is configured.
pub async fn readyz(State(st): St) -> Response {
    let db = st.outbox.ping().await;
    let ok = db.is_ok() && st.destination_ready;
    let body = json!({
        "database_writable": db.is_ok(),
        "destination_configured": st.destination_ready,
    });
    let status = if ok {
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
        st.metrics.render(depth),
    )
        .into_response()
}
