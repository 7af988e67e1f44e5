//! `pixelwatch-relay`: consented, PHI-free conversions from first-party events to TikTok and Meta.
//!
//! Flow: HTTP ingest ([`ingest`]) -> input checks ([`event`], [`ids`]) -> consent gate
//! ([`consent`]) -> allowlist build ([`sanitize`]) per destination ([`destinations`]) with the
//! PHI detector as second line ([`detector`]) -> durable outbox, one row per destination
//! ([`outbox`]) -> one dispatcher per destination ([`dispatch`]). Every decision lands in the
//! audit log ([`audit`]); [`metrics`] exposes counters for Prometheus.

pub mod audit;
pub mod config;
pub mod consent;
pub mod db;
pub mod destinations;
pub mod detector;
pub mod dispatch;
pub mod error;
pub mod event;
pub mod ids;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod sanitize;
pub mod secrets;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::{Notify, watch};

use config::RelayConfig;
use error::{RelayError, StoreError};
pub use secrets::Secrets;

/// A running relay: HTTP server, dispatchers and outbox writer.
pub struct Relay {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    dispatchers: Vec<tokio::task::JoinHandle<()>>,
    writer: outbox::WriterThread,
    state: Arc<ingest::AppState>,
}

impl Relay {
    /// Bind the listener, then open the database and start serving (a port in use fails
    /// before the database is created or migrated). A destination without an access token
    /// still gets its events stored (readyz reports not ready) but nothing is delivered to it.
    pub async fn start(cfg: RelayConfig, secrets: Secrets) -> Result<Relay, RelayError> {
        let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
            .await
            .map_err(|source| RelayError::Bind {
                addr: cfg.server.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(RelayError::Serve)?;
        let cfg = Arc::new(cfg);
        let names: Vec<&str> = cfg.destinations.iter().map(|d| d.name.as_str()).collect();
        let metrics = Arc::new(metrics::Metrics::new(&names));
        let (outbox, writer, salt, reader) = outbox::Outbox::open(
            &cfg.database.path,
            cfg.database.synchronous,
            metrics.clone(),
        )?;
        let consent =
            consent::ConsentIndex::load(&reader).map_err(|source| StoreError::Sqlite {
                path: cfg.database.path.display().to_string(),
                source,
            })?;
        drop(reader);
        // The writer already counted the outbox's rows when it started: no second table scan.
        warn_orphaned_rows(&outbox.depth().await.unwrap_or_default(), &cfg);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let policy = outbox::RetryPolicy {
            base_ms: cfg.dispatch.backoff_base_ms,
            cap_ms: cfg.dispatch.backoff_cap_ms,
            max_attempts: cfg.dispatch.max_attempts,
        };
        let mut dispatchers = Vec::new();
        let mut wake = Vec::new();
        let mut ready = Vec::new();
        let mut destinations = Vec::new();
        for d in &cfg.destinations {
            let name: Arc<str> = Arc::from(d.name.as_str());
            let notify = Arc::new(Notify::new());
            match secrets.token(&d.name) {
                Some(token) => {
                    let disp = dispatch::Dispatcher {
                        destination: name.clone(),
                        outbox: outbox.clone(),
                        client: destinations::Client::new(d, token),
                        policy,
                        batch_size: d.batch_size,
                        poll: Duration::from_millis(cfg.dispatch.poll_ms),
                        linger: Duration::from_millis(cfg.dispatch.linger_ms),
                        wake: notify.clone(),
                        metrics: metrics.clone(),
                    };
                    dispatchers.push(tokio::spawn(disp.run(shutdown_rx.clone())));
                    ready.push(true);
                }
                None => {
                    tracing::error!(destination = %d.name, env = %d.access_token_env,
                        "no access token: events for this destination are stored but not delivered");
                    ready.push(false);
                }
            }
            wake.push(notify);
            destinations.push(name);
        }
        let wants_client = (
            cfg.destinations.iter().any(|d| d.fields.client_ip),
            cfg.destinations.iter().any(|d| d.fields.user_agent),
        );
        let state = Arc::new(ingest::AppState {
            sanitizer: sanitize::Sanitizer::new(&cfg, salt),
            consent,
            consent_rules: consent::ConsentRules::new(&cfg),
            outbox,
            metrics,
            destinations,
            wake,
            ready,
            hmac_secret: secrets.hmac_secret.clone(),
            client_ip_header: cfg
                .server
                .client_ip_header
                .as_deref()
                .and_then(|h| axum::http::HeaderName::from_bytes(h.as_bytes()).ok()),
            wants_client,
            cfg: cfg.clone(),
        });
        let app = router(state.clone());
        let mut rx = shutdown_rx;
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
        });
        tracing::info!(%addr, "relay listening");
        Ok(Relay {
            addr,
            shutdown,
            server,
            dispatchers,
            writer,
            state,
        })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Metrics of this relay.
    pub fn metrics(&self) -> Arc<metrics::Metrics> {
        self.state.metrics.clone()
    }

    /// Graceful shutdown: stop accepting connections, finish in-flight requests, let each
    /// dispatcher finish and record its current batch, then flush and close the database.
    pub async fn shutdown(self) -> Result<(), RelayError> {
        let _ = self.shutdown.send(true);
        let served = self.server.await;
        for d in self.dispatchers {
            let _ = d.await;
        }
        drop(self.state);
        tokio::task::spawn_blocking(move || self.writer.join())
            .await
            .ok();
        tracing::info!("relay stopped");
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RelayError::Serve(e)),
            Err(e) => Err(RelayError::Serve(std::io::Error::other(e))),
        }
    }
}

/// Pending rows of a destination that is no longer configured are kept, not delivered: say so.
fn warn_orphaned_rows(depth: &[(String, i64)], cfg: &RelayConfig) {
    for (name, n) in depth {
        if !cfg.destinations.iter().any(|d| d.name == *name) {
            tracing::warn!(destination = %name, pending = n,
                "pending events for a destination that is not configured; they stay in the outbox");
        }
    }
}

fn router(state: Arc<ingest::AppState>) -> Router {
    Router::new()
        .route(
            "/v1/events",
            post(ingest::post_events).options(ingest::preflight),
        )
        .route(
            "/v1/consent",
            post(ingest::post_consent).options(ingest::preflight),
        )
        .route("/v1/pixel.js", get(ingest::script))
        .route("/healthz", get(ingest::healthz))
        .route("/readyz", get(ingest::readyz))
        .route("/metrics", get(ingest::metrics))
        .with_state(state)
}

/// Run the relay until `stop` resolves, then shut down gracefully.
pub async fn serve_until(
    cfg: RelayConfig,
    secrets: Secrets,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RelayError> {
    let relay = Relay::start(cfg, secrets).await?;
    stop.await;
    tracing::info!("shutting down: draining in-flight requests and the current batch");
    relay.shutdown().await
}
