//! A local HTTPS server that plays a clinic site and the real tracker hosts, for the demo, the
//! tests and the benchmark.
//!
//! It routes by `Host` header, so one loopback port serves `www.demo-clinic.test`,
//! `analytics.tiktok.com` and `connect.facebook.net` alike; Chromium is pointed at it with
//! `--host-resolver-rules` and trusts its self-signed certificate by public-key pin
//! ([`FixtureServer::browser_args`]). It logs every request it receives, so a test can hold what
//! the scanner recorded against what really crossed the wire.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub host: String,
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LoggedRequest {
    /// The full URL the browser asked for.
    pub fn url(&self) -> String {
        format!("https://{}{}", self.host, self.target)
    }

    /// A header value (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the body is delivered.
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Vec<u8>),
    /// Never answer at all.
    Hang,
    /// Send the headers and this first chunk, then never finish.
    Stall(Vec<u8>),
    /// Accept a WebSocket and log every message it receives (method `WS`, the text as body).
    WebSocket,
}

/// A response to serve.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub delay: Option<Duration>,
}

impl Response {
    /// 200 with a content type.
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: Body::Bytes(body.into()),
            delay: None,
        }
    }

    /// 200 text/html.
    pub fn html(body: impl Into<Vec<u8>>) -> Response {
        Response::ok("text/html; charset=utf-8", body)
    }

    /// 200 application/javascript.
    pub fn js(body: impl Into<Vec<u8>>) -> Response {
        Response::ok("application/javascript", body)
    }

    /// An empty response with a status (204 for beacons, 404, ...).
    pub fn status(status: u16) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Body::Bytes(Vec::new()),
            delay: None,
        }
    }

    /// A redirect.
    pub fn redirect(location: &str) -> Response {
        Response {
            status: 302,
            headers: vec![("location".into(), location.into())],
            body: Body::Bytes(Vec::new()),
            delay: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A WebSocket endpoint that logs each received message.
    pub fn websocket() -> Response {
        Response {
            status: 101,
            headers: Vec::new(),
            body: Body::WebSocket,
            delay: None,
        }
    }

    /// Answers after a delay.
    pub fn delayed(mut self, d: Duration) -> Response {
        self.delay = Some(d);
        self
    }
}

type Handler = Arc<dyn Fn(&LoggedRequest) -> Response + Send + Sync>;

/// Routes: exact (host, path) first, then the longest (host, path prefix) handler.
#[derive(Clone, Default)]
pub struct Site {
    exact: HashMap<(String, String), Response>,
    prefixes: Vec<(String, String, Handler)>,
}

impl Site {
    pub fn new() -> Site {
        Site::default()
    }

    /// Serves `resp` at `https://host/path` (query ignored).
    pub fn route(mut self, host: &str, path: &str, resp: Response) -> Site {
        self.exact.insert((host.into(), path.into()), resp);
        self
    }

    /// Serves an HTML page.
    pub fn page(self, host: &str, path: &str, html: &str) -> Site {
        self.route(host, path, Response::html(html))
    }

    /// Answers every path under `prefix` on `host` with a handler.
    pub fn handler(
        mut self,
        host: &str,
        prefix: &str,
        f: impl Fn(&LoggedRequest) -> Response + Send + Sync + 'static,
    ) -> Site {
        self.prefixes
            .push((host.into(), prefix.into(), Arc::new(f)));
        self.prefixes
            .sort_by_key(|(_, p, _)| std::cmp::Reverse(p.len()));
        self
    }

    /// Every host the site serves.
    pub fn hosts(&self) -> Vec<String> {
        let mut h: Vec<String> = self
            .exact
            .keys()
            .map(|(h, _)| h.clone())
            .chain(self.prefixes.iter().map(|(h, _, _)| h.clone()))
            .collect();
        h.sort();
        h.dedup();
        h
    }

    fn respond(&self, req: &LoggedRequest) -> Response {
        let path = req.target.split('?').next().unwrap_or("/");
        if let Some(r) = self.exact.get(&(req.host.clone(), path.to_string())) {
            return r.clone();
        }
        for (host, prefix, f) in &self.prefixes {
            if *host == req.host && path.starts_with(prefix.as_str()) {
                return f(req);
            }
        }
        Response::status(404)
    }
}

/// A running fixture server.
pub struct FixtureServer {
    addr: SocketAddr,
    spki: String,
    hosts: Vec<String>,
    log: Arc<Mutex<Vec<LoggedRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FixtureServer {
    /// Starts serving `site` over HTTPS on an ephemeral loopback port.
    pub async fn start(site: Site) -> std::io::Result<FixtureServer> {
        let hosts = site.hosts();
        let cert = rcgen::generate_simple_self_signed(hosts.clone())
            .map_err(|e| std::io::Error::other(format!("certificate: {e}")))?;
        let spki = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&cert.signing_key),
        ));
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(std::io::Error::other)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let site = Arc::new(site);
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let site = site.clone();
                let log = task_log.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        serve(req, site.clone(), log.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(FixtureServer {
            addr,
            spki,
            hosts,
            log,
            task,
        })
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Arguments that make Chromium resolve the site's hosts to this server (and every other
    /// host to nothing) and trust its certificate.
    pub fn browser_args(&self) -> Vec<String> {
        let mut rules: Vec<String> = self
            .hosts
            .iter()
            .map(|h| format!("MAP {h} 127.0.0.1:{}", self.port()))
            .collect();
        rules.push("MAP * ~NOTFOUND".into());
        vec![
            format!("--host-resolver-rules={}", rules.join(", ")),
            format!("--ignore-certificate-errors-spki-list={}", self.spki),
        ]
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests received that carry a typed canary in any encoding the analyzer knows (in the
    /// URL, the body or a header), as "METHOD url": what must always be empty.
    pub fn canaries_received(&self, canaries: &[crate::model::Canary]) -> Vec<String> {
        let needles = crate::analyze::canary::Needles::new(canaries);
        self.requests()
            .iter()
            .filter(|r| {
                let body = String::from_utf8_lossy(&r.body);
                let headers: Vec<&str> = r.headers.iter().map(|(_, v)| v.as_str()).collect();
                !needles
                    .find(&r.url(), &body, &headers.join("\n"))
                    .is_empty()
            })
            .map(|r| format!("{} {}", r.method, r.url()))
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut req: hyper::Request<Incoming>,
    site: Arc<Site>,
    log: Arc<Mutex<Vec<LoggedRequest>>>,
) -> Result<hyper::Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let upgrade = hyper::upgrade::on(&mut req);
    let ws_key = req
        .headers()
        .get("sec-websocket-key")
        .map(|v| v.as_bytes().to_vec());
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default().to_string();
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let logged = LoggedRequest {
        host,
        method,
        target,
        headers,
        body,
    };
    let resp = site.respond(&logged);
    let (ws_host, ws_target) = (logged.host.clone(), logged.target.clone());
    log.lock().unwrap_or_else(|p| p.into_inner()).push(logged);
    if let (Body::WebSocket, Some(key)) = (&resp.body, ws_key) {
        return Ok(accept_websocket(upgrade, &key, ws_host, ws_target, log));
    }
    if let Some(d) = resp.delay {
        tokio::time::sleep(d).await;
    }
    let status = if matches!(resp.body, Body::WebSocket) {
        400 // not an upgrade request
    } else {
        resp.status
    };
    let body: BoxBody<Bytes, Infallible> = match resp.body {
        Body::Bytes(b) => Full::new(Bytes::from(b)).boxed(),
        Body::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Full::new(Bytes::new()).boxed()
        }
        Body::WebSocket => Full::new(Bytes::from_static(b"expected a WebSocket upgrade")).boxed(),
        Body::Stall(first) => {
            let first = futures_util::stream::once(async move {
                Ok::<_, Infallible>(Frame::data(Bytes::from(first)))
            });
            BodyExt::boxed(StreamBody::new(
                first.chain(futures_util::stream::pending()),
            ))
        }
    };
    let mut builder = hyper::Response::builder().status(status);
    for (k, v) in &resp.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder = builder.header("cache-control", "no-store");
    Ok(builder
        .body(body)
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()).boxed())))
}

/// Completes a WebSocket handshake and logs every message the client sends.
fn accept_websocket(
    upgrade: hyper::upgrade::OnUpgrade,
    key: &[u8],
    host: String,
    target: String,
    log: Arc<Mutex<Vec<LoggedRequest>>>,
) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let accept = derive_accept_key(key);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            let body = match msg {
                tokio_tungstenite::tungstenite::Message::Text(t) => t.as_bytes().to_vec(),
                tokio_tungstenite::tungstenite::Message::Binary(b) => b.to_vec(),
                _ => continue,
            };
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(LoggedRequest {
                    host: host.clone(),
                    method: "WS".into(),
                    target: target.clone(),
                    headers: Vec::new(),
                    body,
                });
        }
    });
    hyper::Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()).boxed()))
}
