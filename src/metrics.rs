//! Prometheus metrics for any long-running pixelwatch process: one registry, rendered in the
//! OpenMetrics text format by the `prometheus-client` crate and served on `GET /metrics`.
//! The fleet worker uses it; the relay's hand-written exporter (`relay/metrics.rs`) is meant to
//! move onto it too, so both binaries expose metrics one way.

use std::net::SocketAddr;
use std::sync::Arc;

pub use prometheus_client::registry::Registry;

/// The content type Prometheus expects for the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of `registry` as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// Serves `GET /metrics` on `addr` until the task is aborted; returns the bound address (a port
/// of 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    render(&registry),
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn serves_the_registry_as_openmetrics_text() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        r.register("demo_events", "Events seen", c.clone());
        c.inc_by(3);
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), Arc::new(r))
            .await
            .unwrap();
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        task.abort();
        assert!(body.contains("# TYPE demo_events counter"), "{body}");
        assert!(body.contains("demo_events_total 3"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
