//! A strict local stand-in for the TikTok Events API 2.0 that fails on demand.
//!
//! Raw HTTP/1.1 over a loopback TCP listener, so it can also drop connections mid-request. It
//! answers like TikTok: HTTP 200 with `code` 0 on success and a non-zero `code` for business
//! errors (40002 parameter errors, 40105 bad token, 40001 wrong pixel).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Path the relay must post to.
pub const PATH: &str = "/open_api/v1.3/event/track/";

/// What to do with the next request.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Validate and answer like TikTok.
    Normal,
    /// Answer HTTP 200 with this business code (no validation, nothing recorded).
    Code(i64),
    /// Answer with this HTTP status and an HTML body.
    Http(u16),
    /// Wait, then behave normally (the relay may time out first).
    Slow(Duration),
    /// Read the request, then close the connection without answering.
    Drop,
}

/// A request the stand-in accepted (code 0).
#[derive(Debug, Clone)]
pub struct Accepted {
    /// `test_event_code`, if any.
    pub test_event_code: Option<String>,
    /// `data[]`.
    pub events: Vec<Value>,
}

#[derive(Default)]
struct Inner {
    modes: VecDeque<Mode>,
    accepted: Vec<Accepted>,
    raw_bodies: Vec<String>,
    requests: usize,
    rejections: Vec<(i64, String)>,
    poison: Option<String>,
}

/// Handle to a running stand-in.
#[derive(Clone)]
pub struct StandIn {
    /// Full endpoint URL to configure in the relay.
    pub endpoint: String,
    /// Token the stand-in accepts.
    pub token: String,
    /// Pixel code the stand-in accepts.
    pub pixel: String,
    inner: Arc<Mutex<Inner>>,
}

const CURRENCIES: &[&str] = &["USD", "EUR", "GBP", "CAD", "AUD", "JPY", "CHF", "MXN"];

impl StandIn {
    /// Start on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let addr = listener.local_addr().expect("addr");
        let s = StandIn {
            endpoint: format!("http://{addr}{PATH}"),
            token: "standin-token-123".into(),
            pixel: "CSTANDIN0001".into(),
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

    /// From now on, answer 40002 to any request containing an event with this event_id.
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

    /// Number of requests received.
    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    /// Business-code rejections with their messages.
    pub fn rejections(&self) -> Vec<(i64, String)> {
        self.inner.lock().unwrap().rejections.clone()
    }

    async fn serve_conn(&self, mut sock: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let Some((head, body)) = read_request(&mut sock, &mut buf).await else {
                return;
            };
            let mode = {
                let mut g = self.inner.lock().unwrap();
                g.requests += 1;
                g.raw_bodies
                    .push(String::from_utf8_lossy(&body).into_owned());
                g.modes.pop_front().unwrap_or(Mode::Normal)
            };
            let (status, answer) = match mode {
                Mode::Drop => return,
                Mode::Code(c) => (
                    200,
                    json!({"code": c, "message": "injected", "request_id": "inj", "data": {}}),
                ),
                Mode::Http(s) => {
                    let _ =
                        write_response(&mut sock, s, "text/html", b"<html>upstream error</html>")
                            .await;
                    continue;
                }
                Mode::Slow(d) => {
                    tokio::time::sleep(d).await;
                    (200, self.handle(&head, &body))
                }
                Mode::Normal => (200, self.handle(&head, &body)),
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

    fn handle(&self, head: &str, body: &[u8]) -> Value {
        let mut g = self.inner.lock().unwrap();
        let request_id = format!("req-{}", g.requests);
        let poison = g.poison.clone();
        let result = validate(head, body, &self.token, &self.pixel).and_then(|acc| match poison {
            Some(p) if acc.events.iter().any(|e| e["event_id"] == p.as_str()) => {
                Err((40002, "event_id: invalid value".to_string()))
            }
            _ => Ok(acc),
        });
        match result {
            Ok(acc) => {
                g.accepted.push(acc);
                json!({"code": 0, "message": "OK", "request_id": request_id, "data": {}})
            }
            Err((code, msg)) => {
                g.rejections.push((code, msg.clone()));
                json!({"code": code, "message": msg, "request_id": request_id, "data": {}})
            }
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn validate(head: &str, body: &[u8], token: &str, pixel: &str) -> Result<Accepted, (i64, String)> {
    let p = |m: &str| Err((40002, m.to_string()));
    let first = head.lines().next().unwrap_or_default();
    if !first.starts_with(&format!("POST {PATH} ")) {
        return p("wrong method or path (the trailing slash matters)");
    }
    if header(head, "Access-Token") != Some(token) {
        return Err((
            40105,
            "access token is incorrect or has been revoked".into(),
        ));
    }
    if !header(head, "Content-Type").is_some_and(|c| c.starts_with("application/json")) {
        return p("Content-Type must be application/json");
    }
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return p("body is not a JSON object");
    };
    for k in top.keys() {
        if !["event_source", "event_source_id", "test_event_code", "data"].contains(&k.as_str()) {
            return p(&format!("unknown field {k}"));
        }
    }
    match top.get("event_source").and_then(Value::as_str) {
        Some("web" | "app" | "offline" | "crm") => {}
        _ => return p("event_source must be one of web, app, offline, crm"),
    }
    if top.get("event_source_id").and_then(Value::as_str) != Some(pixel) {
        return Err((40001, "no permission to operate on this pixel".into()));
    }
    let test_event_code = match top.get("test_event_code") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return p("test_event_code must be a string"),
    };
    let Some(Value::Array(data)) = top.get("data") else {
        return p("data must be an array");
    };
    if data.is_empty() || data.len() > 1000 {
        return p("data length must be between 1 and 1000");
    }
    for (i, ev) in data.iter().enumerate() {
        check_event(ev).map_err(|m| (40002, format!("data[{i}].{m}")))?;
    }
    Ok(Accepted {
        test_event_code,
        events: data.clone(),
    })
}

fn check_event(ev: &Value) -> Result<(), String> {
    let Value::Object(o) = ev else {
        return Err("event must be an object".into());
    };
    for k in o.keys() {
        if ![
            "event",
            "event_time",
            "event_id",
            "user",
            "properties",
            "page",
            "limited_data_use",
        ]
        .contains(&k.as_str())
        {
            return Err(format!("{k}: unknown field"));
        }
    }
    if o.get("event")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("event: required string".into());
    }
    match o.get("event_time") {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => {
            if n.as_i64().unwrap_or(0) > 100_000_000_000 {
                return Err("event_time: milliseconds are not accepted".into());
            }
        }
        _ => return Err("event_time: required integer".into()),
    }
    match o.get("event_id") {
        None | Some(Value::String(_)) => {}
        Some(_) => return Err("event_id: must be a string".into()),
    }
    if let Some(u) = o.get("user") {
        let Value::Object(u) = u else {
            return Err("user: must be an object".into());
        };
        for (k, v) in u {
            match k.as_str() {
                "ttclid" | "ttp" | "ip" | "user_agent" | "locale" => {
                    if !v.is_string() {
                        return Err(format!("user.{k}: must be a string"));
                    }
                }
                "email" | "phone" | "external_id" | "first_name" | "last_name" | "zip_code" => {
                    let ok = v.as_str().is_some_and(|s| {
                        s.len() == 64
                            && s.bytes()
                                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    });
                    if !ok {
                        return Err(format!("user.{k}: must be a SHA-256 lowercase hex string"));
                    }
                }
                _ => return Err(format!("user.{k}: unknown field")),
            }
        }
    }
    if let Some(p) = o.get("properties") {
        let Value::Object(p) = p else {
            return Err("properties: must be an object".into());
        };
        for (k, v) in p {
            match k.as_str() {
                "value" if !v.is_number() => {
                    return Err("properties.value: must be a number".into());
                }
                "currency" if !v.as_str().is_some_and(|c| CURRENCIES.contains(&c)) => {
                    return Err("properties.currency: unknown currency".into());
                }
                "value" | "currency" | "content_type" | "contents" | "num_items"
                | "description" | "order_id" | "query" => {}
                _ => return Err(format!("properties.{k}: unknown field")),
            }
        }
    }
    if let Some(p) = o.get("page") {
        let Value::Object(p) = p else {
            return Err("page: must be an object".into());
        };
        for (k, v) in p {
            if !["url", "referrer"].contains(&k.as_str()) || !v.is_string() {
                return Err(format!("page.{k}: unknown field or not a string"));
            }
        }
    }
    Ok(())
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
            let len: usize = header(&head, "Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let total = pos + 4 + len;
            while buf.len() < total {
                let n = sock.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let body = buf[pos + 4..total].to_vec();
            buf.drain(..total);
            return Some((head, body));
        }
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn write_response(
    sock: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.flush().await
}
