//! `pixelwatch-relay`: consented, PHI-free conversions from first-party events to TikTok.
//!
//! Flow: HTTP ingest ([`ingest`]) -> input checks ([`event`]) -> consent gate ([`consent`]) ->
//! allowlist build ([`sanitize`]) with the PHI detector as second line ([`detector`]) -> durable
//! outbox ([`outbox`]) -> dispatcher ([`dispatch`]) -> TikTok Events API ([`tiktok`]). Every
//! decision lands in the audit log ([`audit`]); [`metrics`] exposes counters for Prometheus.

pub mod audit;
pub mod config;
pub mod consent;
pub mod db;
pub mod detector;
pub mod dispatch;
pub mod error;
pub mod event;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod sanitize;
pub mod tiktok;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::{Notify, watch};

use config::{RelayConfig, Secrets};
use error::{RelayError, StoreError};

/// A running relay: HTTP server, dispatcher and outbox writer.
pub struct Relay {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
    writer: outbox::WriterThread,
    state: Arc<ingest::AppState>,
}

impl Relay {
    /// Open the database, bind the listener and start serving. Without an access token the
    /// relay still accepts and stores events (readyz reports not ready) but does not deliver.
    pub async fn start(cfg: RelayConfig, secrets: Secrets) -> Result<Relay, RelayError> {
        let cfg = Arc::new(cfg);
        let metrics = Arc::new(metrics::Metrics::default());
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
        let wake = Arc::new(Notify::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let dispatcher = secrets.access_token.as_ref().map(|token| {
            let d = dispatch::Dispatcher {
                outbox: outbox.clone(),
                client: tiktok::TikTokClient::new(
                    &cfg.tiktok.endpoint,
                    &cfg.tiktok.pixel_code,
                    token,
                    Duration::from_millis(cfg.tiktok.timeout_ms),
                ),
                policy: outbox::RetryPolicy {
                    base_ms: cfg.dispatch.backoff_base_ms,
                    cap_ms: cfg.dispatch.backoff_cap_ms,
                    max_attempts: cfg.dispatch.max_attempts,
                },
                batch_size: cfg.dispatch.batch_size,
                poll: Duration::from_millis(cfg.dispatch.poll_ms),
                linger: Duration::from_millis(cfg.dispatch.linger_ms),
                wake: wake.clone(),
                metrics: metrics.clone(),
            };
            tokio::spawn(d.run(shutdown_rx.clone()))
        });
        if dispatcher.is_none() {
            tracing::error!(env = %cfg.tiktok.access_token_env,
                "no TikTok access token: events are stored but not delivered");
        }
        let state = Arc::new(ingest::AppState {
            sanitizer: sanitize::Sanitizer::new(&cfg, salt),
            consent,
            outbox,
            metrics,
            wake,
            hmac_secret: secrets.hmac_secret.clone(),
            destination_ready: dispatcher.is_some(),
            cfg: cfg.clone(),
        });
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
            .await
            .map_err(|source| RelayError::Bind {
                addr: cfg.server.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(RelayError::Serve)?;
        let mut rx = shutdown_rx;
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
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
            dispatcher,
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

    /// Graceful shutdown: stop accepting connections, finish in-flight requests, let the
    /// dispatcher finish and record its current batch, then flush and close the database.
    pub async fn shutdown(self) -> Result<(), RelayError> {
        let _ = self.shutdown.send(true);
        let served = self.server.await;
        if let Some(d) = self.dispatcher {
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
