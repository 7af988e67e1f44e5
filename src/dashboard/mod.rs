//! The dashboard: a server-rendered web UI over the store (SQLite or PostgreSQL) for everyone who
//! watches sites — every site's verdict at a glance, each site's history, and the actions that
//! need no shell (approve a baseline, scan now, mute a finding).
//!
//! Invariants:
//! - Nothing but `/healthz` and the sign-in page answers without a session ([`auth`]).
//! - Every form carries its session's CSRF token and every POST checks it ([`auth::Checked`]);
//!   actions that change what is judged need the `approver` role.
//! - HTML comes from maud templates, which escape by default; page-derived text additionally goes
//!   through `report::untrusted::html` (controls and bidi overrides made visible). No script is
//!   served, nothing is loaded from elsewhere, and a strict Content-Security-Policy says so.
//! - Every action is recorded with who took it and when (`store::audit`), in the same
//!   transaction as the action where the action is a write.

mod actions;
pub mod auth;
mod pages;
mod site;
mod status;
mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

use crate::config::Config;
use crate::rules::Engine;
use crate::store::{Store, StoreError};

/// Most bytes of a form body (a mute's reason is the longest field).
const BODY_LIMIT: usize = 16 * 1024;

/// The policy of every dashboard page: nothing but our own stylesheet and form posts to us.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// How the dashboard runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Trust this request header (set by an authenticating reverse proxy) as the signed-in
    /// account's name, instead of password sign-in.
    pub auth_header: Option<String>,
    /// Watch config whose `[[site]]` schedules and settings apply to sites not stored in the
    /// database (a single machine running `watch`).
    pub config: Option<Config>,
    /// Chromium for scans run from the dashboard on SQLite.
    pub browser: Option<PathBuf>,
}

/// Why the dashboard could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the dashboard stopped serving: {0}")]
    Serve(std::io::Error),
    #[error("--auth-header '{0}' is not a valid HTTP header name")]
    BadHeader(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DashboardError {
    /// Whether the error is the user's input (exit 3) rather than a run failure (exit 1).
    pub fn is_usage(&self) -> bool {
        match self {
            DashboardError::BadHeader(_) => true,
            DashboardError::Store(e) => e.is_usage(),
            DashboardError::Listen { .. } | DashboardError::Serve(_) => false,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    pub store: Store,
    pub engine: Arc<Engine>,
    pub opts: Arc<Options>,
    /// Judgements and drifts of stored scans, which never change once stored.
    pub cache: Arc<status::Cache>,
    /// Scans run from the dashboard on SQLite: site -> when it started.
    pub running: Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

/// The dashboard's routes over `store`.
pub fn router(store: Store, opts: Options) -> Result<Router, DashboardError> {
    if let Some(h) = &opts.auth_header {
        header::HeaderName::try_from(h.as_str())
            .map_err(|_| DashboardError::BadHeader(h.clone()))?;
    }
    let app = App {
        store,
        engine: Arc::new(Engine::bundled()),
        opts: Arc::new(opts),
        cache: Arc::new(status::Cache::default()),
        running: Default::default(),
    };
    let signed = Router::new()
        .route("/", get(pages::overview))
        .route("/site", get(site::page))
        .route("/activity", get(pages::activity))
        .route("/scan/{id}/report.json", get(pages::report_json))
        .route("/scan/{id}/report.html", get(pages::report_html))
        .route("/site/approve", post(actions::approve))
        .route("/site/scan", post(actions::scan_now))
        .route("/site/mute", post(actions::mute))
        .route("/site/unmute", post(actions::unmute))
        .route("/logout", post(auth::logout))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_session,
        ));
    Ok(Router::new()
        .route("/healthz", get(pages::healthz))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/static/dashboard.css", get(views::stylesheet))
        .merge(signed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app))
}

/// The same headers on every response; a page that needs a looser policy (a stored HTML report)
/// sets its own Content-Security-Policy first.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

/// Serves the dashboard on `addr` until `shutdown` resolves; `bound` receives the address
/// listened on (a port of 0 picks a free one).
pub async fn serve(
    store: Store,
    opts: Options,
    addr: SocketAddr,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the dashboard speaks plain HTTP: browsers keep its Secure session cookie only over HTTPS or on loopback, so put a TLS reverse proxy in front");
    }
    if opts.auth_header.is_some() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "--auth-header trusts whoever can reach this address to name any account: only the proxy may reach it");
    }
    let app = router(store.clone(), opts)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DashboardError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| DashboardError::Listen { addr, source })?;
    tracing::info!(addr = %local, db = %store.shown(), "dashboard listening");
    if let Some(tx) = bound {
        let _ = tx.send(local);
    }
    let pruner = tokio::spawn(auth::prune_sessions(store));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(DashboardError::Serve);
    pruner.abort();
    served
}
