//! Destinations: what each platform receives and how its answers are classified.
//!
//! A destination module does two things: build its event from the allowlisted values
//! ([`super::sanitize::Prepared`]), and classify each answer as delivered / retry / reject. It never
//! decides timing: the outbox owns backoff, attempts and the dead letter
//! ([`super::outbox::RetryPolicy`]), the same for every destination.

pub mod meta;
pub mod tiktok;

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::config::{Destination, DestinationKind, MappingRule};
use super::sanitize::Prepared;

/// How one request to a destination ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted.
    Delivered {
        /// The destination's request id (TikTok `request_id`, Meta `fbtrace_id`).
        request_id: String,
        /// Events the destination says it counted, when it says (Meta `events_received`).
        received: Option<u64>,
    },
    /// Try again later (rate limit, server error, timeout, connection error).
    Retry {
        /// Reason code, e.g. `tiktok_code:40100`, `meta_code:17`, `http:502`, `timeout`.
        reason: String,
    },
    /// Will never succeed as is: dead-letter.
    Reject {
        /// Reason code, e.g. `tiktok_code:40002`, `meta_code:100/2804003`.
        reason: String,
        /// The credentials or permissions are wrong (alert the operator; every batch fails).
        credentials: bool,
    },
}

/// A destination's user object under construction: a value goes in only if the destination
/// takes it, and a value it does not take is named in the reasons (`dropped_field:<name>`).
pub(crate) struct UserFields<'a> {
    map: Map<String, Value>,
    reasons: &'a mut Vec<String>,
}

impl<'a> UserFields<'a> {
    pub(crate) fn new(reasons: &'a mut Vec<String>) -> UserFields<'a> {
        UserFields {
            map: Map::new(),
            reasons,
        }
    }

    /// Always sent when present (the destination's own click id).
    pub(crate) fn put(&mut self, key: &str, value: Option<Value>) {
        if let Some(v) = value {
            self.map.insert(key.into(), v);
        }
    }

    /// Sent only when `allowed`; otherwise recorded as dropped under `field`.
    pub(crate) fn opt_in(&mut self, key: &str, field: &str, value: Option<Value>, allowed: bool) {
        match value {
            Some(v) if allowed => {
                self.map.insert(key.into(), v);
            }
            Some(_) => self.reasons.push(format!("dropped_field:{field}")),
            None => {}
        }
    }

    /// Whether any of `keys` is present.
    pub(crate) fn has_any(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| self.map.contains_key(*k))
    }

    /// The finished object, and the reasons back for the rest of the build.
    pub(crate) fn finish(self) -> (Value, &'a mut Vec<String>) {
        (Value::Object(self.map), self.reasons)
    }
}

/// `{"value", "currency"}` where the mapping allows a value; otherwise the value is dropped
/// with a reason.
pub(crate) fn value_fields(
    p: &Prepared,
    rule: &MappingRule,
    reasons: &mut Vec<String>,
) -> Option<Value> {
    match p.value {
        Some((v, c)) if rule.allow_value => Some(json!({"value": v, "currency": c})),
        Some(_) => {
            reasons.push("dropped_field:value".into());
            None
        }
        None => None,
    }
}

/// A client for one configured destination.
#[derive(Debug, Clone)]
pub enum Client {
    /// TikTok Events API.
    Tiktok(tiktok::TikTokClient),
    /// Meta Conversions API.
    Meta(meta::MetaClient),
}

impl Client {
    /// Build the client for a destination with its access token.
    pub fn new(d: &Destination, token: &str) -> Client {
        let timeout = Duration::from_millis(d.timeout_ms);
        match d.kind {
            DestinationKind::Tiktok => Client::Tiktok(tiktok::TikTokClient::new(
                &d.endpoint,
                &d.pixel,
                token,
                timeout,
            )),
            DestinationKind::Meta => {
                Client::Meta(meta::MetaClient::new(&d.endpoint, token, timeout))
            }
        }
    }

    /// Send one batch of stored payloads and classify the answer.
    pub async fn send(&self, test_event_code: Option<&str>, payloads: &[&str]) -> Outcome {
        match self {
            Client::Tiktok(c) => c.send(test_event_code, payloads).await,
            Client::Meta(c) => c.send(test_event_code, payloads).await,
        }
    }

    /// Events older than this many seconds make the destination refuse the whole request;
    /// the dispatcher dead-letters them before sending.
    pub fn max_event_age_secs(&self) -> Option<i64> {
        match self {
            Client::Tiktok(_) => None,
            Client::Meta(_) => Some(meta::MAX_EVENT_AGE_SECS),
        }
    }
}

/// The HTTP client every destination uses: per-request timeout, bounded connect time.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client with rustls builds")
}

/// Send a request and hand the status and body to `classify`; transport failures retry.
/// reqwest errors are never logged or kept: they carry the URL.
pub(crate) async fn exchange(
    req: reqwest::RequestBuilder,
    classify: impl FnOnce(u16, &[u8]) -> Outcome,
) -> Outcome {
    let transport = |e: reqwest::Error| Outcome::Retry {
        reason: if e.is_timeout() {
            "timeout".into()
        } else {
            "connection_error".into()
        },
    };
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(b) => classify(status, &b),
                Err(e) => transport(e),
            }
        }
        Err(e) => transport(e),
    }
}

impl Outcome {
    /// Dead-letter: this event (or batch) will never be accepted as is.
    pub fn reject(reason: String) -> Outcome {
        Outcome::Reject {
            reason,
            credentials: false,
        }
    }

    /// Dead-letter because the token or permissions are wrong (every batch would fail).
    pub fn credentials(reason: String) -> Outcome {
        Outcome::Reject {
            reason,
            credentials: true,
        }
    }

    /// A code the classification does not know: retry when the server says it failed (5xx),
    /// dead-letter otherwise.
    pub fn unknown_code(reason: String, status: u16) -> Outcome {
        if status >= 500 {
            Outcome::Retry { reason }
        } else {
            Outcome::reject(reason)
        }
    }
}

/// Classify an answer whose body is not the destination's JSON (a proxy page, an empty body).
pub(crate) fn classify_http(status: u16) -> Outcome {
    match status {
        429 | 500..=599 => Outcome::Retry {
            reason: format!("http:{status}"),
        },
        401 | 403 => Outcome::credentials(format!("http:{status}")),
        // A 2xx we cannot read may or may not have been accepted: sending again is safe
        // because both platforms de-duplicate on event_id.
        200..=299 => Outcome::Retry {
            reason: "unreadable_body".into(),
        },
        _ => Outcome::reject(format!("http:{status}")),
    }
}

/// Join stored payloads (each a JSON object) into a JSON array body part.
pub(crate) fn join_payloads(out: &mut String, payloads: &[&str]) {
    out.push('[');
    for (i, p) in payloads.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(p);
    }
    out.push(']');
}
