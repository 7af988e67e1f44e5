//! Strict local stand-ins for the destination APIs that fail on demand: the shared core.
//!
//! Raw HTTP/1.1 over a loopback TCP listener on an ephemeral port, so a stand-in can also drop
//! connections mid-request. Each API ([`super::tiktok`], [`super::meta`]) says what it rejects
//! and how it answers; the core records every request and plays queued failure modes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use super::http::{read_request, write_response};

/// What to do with the next request.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Validate and answer like the platform.
    Normal,
    /// Answer with this business / error code (no validation, nothing recorded).
    Code(i64),
    /// Answer with this error code and subcode (Meta).
    CodeSub(i64, i64),
    /// Answer with this HTTP status and an HTML body.
    Http(u16),
    /// Wait, then behave normally (the relay may time out first).
    Slow(Duration),
    /// Read the request, then close the connection without answering.
    Drop,
    /// Validate and accept, but count this many events fewer (Meta `events_received`).
    Undercount(usize),
}

/// A request the stand-in accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// `test_event_code`, if any.
    pub test_event_code: Option<String>,
    /// `data[]`.
    pub events: Vec<Value>,
}

/// Why a request was refused: the platform's code, subcode and message.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Error / business code.
    pub code: i64,
    /// Subcode (Meta).
    pub subcode: Option<i64>,
    /// Message, naming the field.
    pub message: String,
}

impl Rejection {
    /// A rejection without subcode.
    pub fn new(code: i64, message: &str) -> Rejection {
        Rejection {
            code,
            subcode: None,
            message: message.to_string(),
        }
    }

    /// With a subcode.
    pub fn sub(code: i64, subcode: i64, message: &str) -> Rejection {
        Rejection {
            code,
            subcode: Some(subcode),
            message: message.to_string(),
        }
    }
}

/// One platform's rules and answers.
pub trait Api: Send + Sync + 'static {
    /// Check a request like the platform would.
    fn validate(&self, head: &str, body: &[u8]) -> Result<Accepted, Rejection>;
    /// The answer to an accepted request that counted `counted` events.
    fn success(&self, request_id: &str, counted: usize) -> (u16, Value);
    /// The answer to a refused request.
    fn failure(&self, request_id: &str, r: &Rejection) -> (u16, Value);
    /// The rejection for a poisoned event (a parameter error).
    fn parameter_error(&self) -> Rejection;
}

#[derive(Default)]
struct Inner {
    modes: VecDeque<Mode>,
    accepted: Vec<Accepted>,
    raw_heads: Vec<String>,
    raw_bodies: Vec<String>,
    requests: usize,
    rejections: Vec<Rejection>,
    poison: Option<String>,
}

/// Handle to a running stand-in.
pub struct StandIn<A> {
    /// Full endpoint URL to configure in the relay.
    pub endpoint: String,
    /// Token the stand-in accepts.
    pub token: String,
    /// Pixel the stand-in accepts.
    pub pixel: String,
    api: Arc<A>,
    inner: Arc<Mutex<Inner>>,
}

impl<A> Clone for StandIn<A> {
    fn clone(&self) -> Self {
        StandIn {
            endpoint: self.endpoint.clone(),
            token: self.token.clone(),
            pixel: self.pixel.clone(),
            api: self.api.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<A: Api> StandIn<A> {
    /// Listen on 127.0.0.1 with an ephemeral port; `path` is the endpoint's path.
    pub async fn serve(api: A, path: &str, token: String, pixel: String) -> StandIn<A> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let addr = listener.local_addr().expect("addr");
        let s = StandIn {
            endpoint: format!("http://{addr}{path}"),
            token,
            pixel,
            api: Arc::new(api),
            inner: Arc::default(),
        };
        let me = s.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                let me = me.clone();
                tokio::spawn(async move { me.serve_conn(sock).await });
            }
        });
        s
    }

    /// Queue behaviours for the next requests (then back to normal).
    pub fn push_modes(&self, modes: impl IntoIterator<Item = Mode>) {
        self.inner.lock().unwrap().modes.extend(modes);
    }

    /// From now on, answer a parameter error to any request containing this event_id.
    pub fn poison(&self, event_id: &str) {
        self.inner.lock().unwrap().poison = Some(event_id.to_string());
    }

    /// Requests that were accepted.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.inner.lock().unwrap().accepted.clone()
    }

    /// All accepted events, flattened.
    pub fn events(&self) -> Vec<Value> {
        self.accepted().into_iter().flat_map(|a| a.events).collect()
    }

    /// Every request body received, whatever the answer.
    pub fn raw_bodies(&self) -> Vec<String> {
        self.inner.lock().unwrap().raw_bodies.clone()
    }

    /// Every request line and headers received.
    pub fn raw_heads(&self) -> Vec<String> {
        self.inner.lock().unwrap().raw_heads.clone()
    }

    /// Number of requests received.
    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    /// Rejections with their codes and messages.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.inner.lock().unwrap().rejections.clone()
    }

    async fn serve_conn(&self, mut sock: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let Some((head, body)) = read_request(&mut sock, &mut buf).await else {
                return;
            };
            let (mode, request_id) = {
                let mut g = self.inner.lock().unwrap();
                g.requests += 1;
                g.raw_heads.push(head.clone());
                g.raw_bodies
                    .push(String::from_utf8_lossy(&body).into_owned());
                (
                    g.modes.pop_front().unwrap_or(Mode::Normal),
                    format!("req-{}", g.requests),
                )
            };
            let (status, answer) = match mode {
                Mode::Drop => return,
                Mode::Code(c) => self
                    .api
                    .failure(&request_id, &Rejection::new(c, "injected")),
                Mode::CodeSub(c, s) => self
                    .api
                    .failure(&request_id, &Rejection::sub(c, s, "injected")),
                Mode::Http(s) => {
                    let _ =
                        write_response(&mut sock, s, "text/html", b"<html>upstream error</html>")
                            .await;
                    continue;
                }
                Mode::Slow(d) => {
                    tokio::time::sleep(d).await;
                    self.handle(&request_id, &head, &body, 0)
                }
                Mode::Normal => self.handle(&request_id, &head, &body, 0),
                Mode::Undercount(n) => self.handle(&request_id, &head, &body, n),
            };
            let bytes = answer.to_string();
            if write_response(&mut sock, status, "application/json", bytes.as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    fn handle(&self, request_id: &str, head: &str, body: &[u8], undercount: usize) -> (u16, Value) {
        let mut g = self.inner.lock().unwrap();
        let poison = g.poison.clone();
        let result = self.api.validate(head, body).and_then(|acc| match poison {
            Some(p) if acc.events.iter().any(|e| e["event_id"] == p.as_str()) => {
                Err(self.api.parameter_error())
            }
            _ => Ok(acc),
        });
        match result {
            Ok(acc) => {
                let counted = acc.events.len().saturating_sub(undercount);
                g.accepted.push(acc);
                self.api.success(request_id, counted)
            }
            Err(r) => {
                let answer = self.api.failure(request_id, &r);
                g.rejections.push(r);
                answer
            }
        }
    }
}
