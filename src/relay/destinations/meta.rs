//! Meta Conversions API destination: build the event, send batches, classify the answer.
//!
//! `POST {endpoint}?access_token=...` with `{"data": [...], "test_event_code"?}`; success is HTTP
//! 200 `{"events_received": N, "fbtrace_id": ...}`, failure a 4xx/5xx with a Graph `error`
//! object. One invalid event fails the whole request, and an `event_time` older than 7 days does
//! too, so the dispatcher dead-letters stale rows before sending and bisects a rejected batch.
//! Meta may accept a batch yet count fewer events (`events_received` < sent; health-domain
//! restrictions): the answer carries the count so the dispatcher can record the shortfall.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Outcome, UserFields, classify_http, exchange, http_client, join_payloads, value_fields,
};
use crate::relay::config::{Destination, MappingRule};
use crate::relay::sanitize::{Built, Prepared, sha256_hex};

/// Meta refuses a request holding an event older than 7 days; a minute of margin covers clock
/// skew and time in flight.
pub const MAX_EVENT_AGE_SECS: i64 = 7 * 24 * 3600 - 60;

/// Build one `data[]` element for Meta from the allowlisted values. Only `fbc`/`fbp`, and on
/// opt-in hashed `em`/`ph`, the client IP and the user agent, go into `user_data`.
pub fn build(
    p: &Prepared,
    d: &Destination,
    rule: &MappingRule,
    reasons: &mut Vec<String>,
) -> Built {
    // em/ph as one-element lists of SHA-256 hex; phone as digits with the country code, no '+'.
    let hash = |v: Option<&str>| v.map(|s| json!([sha256_hex(s)]));
    let f = &d.fields;
    let mut user = UserFields::new(reasons);
    user.put("fbc", p.fbc.as_deref().map(Value::from));
    user.opt_in("fbp", "fbp", p.fbp.as_deref().map(Value::from), f.fbp);
    user.opt_in("em", "email", hash(p.email.as_deref()), f.hashed_email);
    let digits = p.phone.as_deref().map(|ph| ph.trim_start_matches('+'));
    user.opt_in("ph", "phone", hash(digits), f.hashed_phone);
    let ip = p.client_ip.map(|ip| json!(ip.to_string()));
    user.put("client_ip_address", ip.filter(|_| f.client_ip));
    let ua = p.user_agent.as_deref().map(Value::from);
    user.put("client_user_agent", ua.filter(|_| f.user_agent));
    // IP and user agent alone would be matching on the person, not on an ad click.
    if !user.has_any(&["fbc", "fbp", "em", "ph"]) {
        return Err("no_match_key");
    }
    let (user, reasons) = user.finish();
    let mut data = json!({
        "event_name": rule.to,
        "event_time": p.event_time,
        "event_id": p.event_id,
        "action_source": d.action_source,
        "event_source_url": p.page_url,
        "user_data": user,
    });
    if let Some(v) = value_fields(p, rule, reasons) {
        data["custom_data"] = v;
    }
    Ok(data)
}

#[derive(Deserialize)]
struct Success {
    events_received: u64,
    #[serde(default)]
    fbtrace_id: Option<String>,
}

#[derive(Deserialize)]
struct Failure {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_subcode: Option<i64>,
    #[serde(default)]
    is_transient: Option<bool>,
    #[serde(default)]
    message: Option<String>,
}

/// Classify an HTTP answer from the Conversions API.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    if (200..300).contains(&status)
        && let Ok(s) = serde_json::from_slice::<Success>(body)
    {
        return Outcome::Delivered {
            request_id: s.fbtrace_id.unwrap_or_default(),
            received: Some(s.events_received),
        };
    }
    let Ok(Failure { error }) = serde_json::from_slice::<Failure>(body) else {
        return classify_http(status);
    };
    let Some(code) = error.code else {
        return classify_http(status);
    };
    if let Some(m) = &error.message {
        tracing::debug!(code, subcode = error.error_subcode, message = %m, "meta answer");
    }
    let reason = match error.error_subcode {
        Some(sub) => format!("meta_code:{code}/{sub}"),
        None => format!("meta_code:{code}"),
    };
    match code {
        // Transient: 1 unknown, 2 service; throttling: 4 app, 17 user, 32 page, 613 call rate,
        // 80003/80004 ads rate limits; 341 temporary limit, 368 temporarily blocked, 5000.
        1 | 2 | 4 | 17 | 32 | 341 | 368 | 613 | 5000 | 80003 | 80004 => Outcome::Retry { reason },
        _ if error.is_transient == Some(true) => Outcome::Retry { reason },
        // 190 invalid token, 102 session, 10 and 200-299 permissions: every batch would fail.
        190 | 102 | 10 | 200..=299 => Outcome::credentials(reason),
        100 => Outcome::reject(reason),
        _ => Outcome::unknown_code(reason, status),
    }
}

/// Client for one Meta pixel (dataset).
#[derive(Clone)]
pub struct MetaClient {
    http: reqwest::Client,
    endpoint: String,
    token: String,
}

impl std::fmt::Debug for MetaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaClient")
            .field("endpoint", &self.endpoint)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl MetaClient {
    /// Build a client with a per-request timeout.
    pub fn new(endpoint: &str, token: &str, timeout: Duration) -> MetaClient {
        MetaClient {
            http: http_client(timeout),
            endpoint: endpoint.to_string(),
            token: token.to_string(),
        }
    }

    /// The request body for a batch of stored payloads.
    pub fn body(&self, test_event_code: Option<&str>, payloads: &[&str]) -> String {
        let mut s = String::with_capacity(48 + payloads.iter().map(|p| p.len() + 1).sum::<usize>());
        s.push_str("{\"data\":");
        join_payloads(&mut s, payloads);
        if let Some(c) = test_event_code {
            s.push_str(",\"test_event_code\":");
            s.push_str(&Value::from(c).to_string());
        }
        s.push('}');
        s
    }

    /// Send one batch and classify the answer.
    pub async fn send(&self, test_event_code: Option<&str>, payloads: &[&str]) -> Outcome {
        let req = self
            .http
            .post(&self.endpoint)
            .query(&[("access_token", self.token.as_str())])
            .header("Content-Type", "application/json")
            .body(self.body(test_event_code, payloads));
        exchange(req, classify).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i64, sub: Option<i64>) -> Vec<u8> {
        json!({"error": {"message": "m", "type": "OAuthException", "code": code,
            "error_subcode": sub, "fbtrace_id": "t"}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn classification_table() {
        assert_eq!(
            classify(
                200,
                br#"{"events_received": 3, "messages": [], "fbtrace_id": "AbC"}"#
            ),
            Outcome::Delivered {
                request_id: "AbC".into(),
                received: Some(3)
            }
        );
        for code in [1, 2, 4, 17, 80003, 341, 368, 5000] {
            assert!(
                matches!(classify(400, &err(code, None)), Outcome::Retry { .. }),
                "{code}"
            );
        }
        assert_eq!(
            classify(400, &err(100, Some(2804003))),
            Outcome::Reject {
                reason: "meta_code:100/2804003".into(),
                credentials: false
            }
        );
        assert!(matches!(
            classify(400, &err(190, Some(463))),
            Outcome::Reject {
                credentials: true,
                ..
            }
        ));
        assert!(matches!(classify(502, b"<html>"), Outcome::Retry { .. }));
        assert!(matches!(classify(200, b"{}"), Outcome::Retry { .. }));
        assert!(matches!(classify(404, b""), Outcome::Reject { .. }));
    }

    #[test]
    fn body_carries_test_code_and_no_token() {
        let c = MetaClient::new(
            "http://127.0.0.1:9/v21.0/1/events",
            "tok-secret",
            Duration::from_secs(1),
        );
        let b = c.body(
            Some("TEST7"),
            &[r#"{"event_name":"Lead"}"#, r#"{"event_name":"Schedule"}"#],
        );
        let v: Value = serde_json::from_str(&b).expect("json");
        assert_eq!(v["test_event_code"], "TEST7");
        assert_eq!(v["data"][1]["event_name"], "Schedule");
        assert!(!b.contains("tok-secret"));
        assert!(!format!("{c:?}").contains("tok-secret"));
    }
}
