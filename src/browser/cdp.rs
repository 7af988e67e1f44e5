//! A small Chrome DevTools Protocol client over one WebSocket, with flattened target sessions.
//!
//! We speak raw JSON rather than a generated typed API: Chromium renames protocol fields between
//! releases, and a typed client silently drops events it cannot decode. Here every message is
//! parsed as `serde_json::Value`; the capture code reads the fields it needs leniently and counts
//! the messages it could not use (see [`Connection::decode_failures`]).
//!
//! Routing: replies are matched to calls by id; events go to the subscriber of their `sessionId`.
//! When a session auto-attaches a child (iframe, worker), the reader registers the child under the
//! parent's subscriber *before* any child event can arrive, so no child event is lost; a detach
//! removes the route. Subscriber queues are bounded: the reader never waits, and what a full
//! queue could not take is counted ([`Connection::dropped_events`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Default timeout for one CDP call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Events queued per subscriber before new ones are dropped (and counted). The reader never
/// waits for a slow subscriber: one stuck tab must not stall every other tab's events.
pub const EVENT_QUEUE: usize = 20_000;

/// Errors of the protocol client.
#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    #[error("cannot connect to the browser's DevTools endpoint {url}: {source}")]
    Connect {
        url: String,
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("the browser connection is closed")]
    Closed,
    #[error("CDP call {method} timed out after {secs}s")]
    Timeout { method: String, secs: u64 },
    #[error("CDP call {method} failed: {message}")]
    Protocol { method: String, message: String },
}

/// One protocol event.
#[derive(Debug, Clone)]
pub struct Event {
    pub method: String,
    pub params: Value,
    /// The session the event belongs to; `None` for browser-level events.
    pub session_id: Option<String>,
}

type Pending = HashMap<u64, (String, oneshot::Sender<Result<Value, CdpError>>)>;
type Subscribers = HashMap<String, mpsc::Sender<Event>>;

struct Shared {
    pending: Mutex<Pending>,
    /// Session id ("" for the browser session) -> event sink.
    subscribers: Mutex<Subscribers>,
    closed: AtomicBool,
    invalid_messages: AtomicU64,
    decode_failures: AtomicU64,
    dropped_events: AtomicU64,
}

/// A connection to one browser. Cheap to share behind an `Arc`.
pub struct Connection {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Message>,
    next_id: AtomicU64,
}

impl Connection {
    /// Connects to a browser's WebSocket debugger URL.
    pub async fn connect(ws_url: &str) -> Result<Arc<Self>, CdpError> {
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(512 << 20))
            .max_frame_size(Some(512 << 20));
        let (stream, _) = tokio_tungstenite::connect_async_with_config(ws_url, Some(config), false)
            .await
            .map_err(|source| CdpError::Connect {
                url: ws_url.to_string(),
                source: Box::new(source),
            })?;
        let (mut sink, mut source) = stream.split();
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            invalid_messages: AtomicU64::new(0),
            decode_failures: AtomicU64::new(0),
            dropped_events: AtomicU64::new(0),
        });
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader_shared = shared.clone();
        tokio::spawn(async move {
            while let Some(msg) = source.next().await {
                match msg {
                    Ok(Message::Text(text)) => reader_shared.dispatch(text.as_str()),
                    Ok(Message::Binary(bytes)) => match std::str::from_utf8(&bytes) {
                        Ok(text) => reader_shared.dispatch(text),
                        Err(_) => {
                            reader_shared
                                .invalid_messages
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            reader_shared.close();
        });
        Ok(Arc::new(Connection {
            shared,
            out,
            next_id: AtomicU64::new(1),
        }))
    }

    /// Whether the browser connection has gone away.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Messages that were not valid JSON protocol messages.
    pub fn invalid_messages(&self) -> u64 {
        self.shared.invalid_messages.load(Ordering::Relaxed)
    }

    /// Capture-critical events whose fields could not be read (counted by the capture code).
    pub fn decode_failures(&self) -> u64 {
        self.shared.decode_failures.load(Ordering::Relaxed) + self.invalid_messages()
    }

    /// Events dropped because a subscriber's queue was full (should be 0).
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// Records that an event was dropped downstream of the connection (a full queue).
    pub fn count_dropped(&self) {
        self.shared.dropped_events.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that a capture-critical event could not be decoded.
    pub fn count_decode_failure(&self, method: &str) {
        tracing::warn!(method, "CDP event could not be decoded; protocol drift?");
        self.shared.decode_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Routes events of `session_id` (and of every child it auto-attaches) to `sink`.
    /// `""` subscribes to browser-level events.
    pub fn subscribe(&self, session_id: &str, sink: mpsc::Sender<Event>) {
        lock(&self.shared.subscribers).insert(session_id.to_string(), sink);
    }

    /// Stops routing events of a session.
    pub fn unsubscribe(&self, session_id: &str) {
        lock(&self.shared.subscribers).remove(session_id);
    }

    /// Calls `method` with the default timeout.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        session_id: Option<&str>,
    ) -> Result<Value, CdpError> {
        self.call_with_timeout(method, params, session_id, CALL_TIMEOUT)
            .await
    }

    /// Calls `method`; every call is bounded so a hung renderer cannot hang the scanner.
    pub async fn call_with_timeout(
        &self,
        method: &str,
        params: Value,
        session_id: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, CdpError> {
        if self.is_closed() {
            return Err(CdpError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session_id {
            msg["sessionId"] = Value::String(s.to_string());
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, (method.to_string(), tx));
        if self.out.send(Message::text(msg.to_string())).is_err() {
            lock(&self.shared.pending).remove(&id);
            return Err(CdpError::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CdpError::Closed),
            Err(_) => {
                lock(&self.shared.pending).remove(&id);
                Err(CdpError::Timeout {
                    method: method.to_string(),
                    secs: timeout.as_secs(),
                })
            }
        }
    }
}

impl Shared {
    fn dispatch(&self, text: &str) {
        let Ok(mut value) = serde_json::from_str::<Value>(text) else {
            self.invalid_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(id) = value.get("id").and_then(Value::as_u64) {
            let Some((method, tx)) = lock(&self.pending).remove(&id) else {
                return; // the caller timed out
            };
            let result = if let Some(err) = value.get("error") {
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string();
                Err(CdpError::Protocol { method, message })
            } else {
                Ok(value
                    .get_mut("result")
                    .map(Value::take)
                    .unwrap_or(Value::Null))
            };
            let _ = tx.send(result);
            return;
        }
        let Some(method) = value
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            self.invalid_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let session_id = value
            .get("sessionId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let params = value
            .get_mut("params")
            .map(Value::take)
            .unwrap_or(Value::Null);
        let mut subs = lock(&self.subscribers);
        let key = session_id.clone().unwrap_or_default();
        let child = params
            .get("sessionId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let detached = method == "Target.detachedFromTarget";
        if method == "Target.attachedToTarget" {
            // A child of a subscribed session (or of the browser session: service workers, and
            // tabs until their owner subscribes): route its events to the same place.
            if let (Some(child), Some(sink)) = (&child, subs.get(&key).cloned()) {
                subs.insert(child.clone(), sink);
            }
        }
        if let Some(sink) = subs.get(&key) {
            let event = Event {
                method,
                params,
                session_id,
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = sink.try_send(event) {
                self.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
        if detached {
            // The child is gone: its route goes with it (the parent saw the detach first).
            if let Some(child) = child {
                subs.remove(&child);
            }
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let pending: Vec<_> = lock(&self.pending).drain().collect();
        for (_, (_, tx)) in pending {
            let _ = tx.send(Err(CdpError::Closed));
        }
        // Dropping the sinks ends every subscriber's stream.
        lock(&self.subscribers).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
