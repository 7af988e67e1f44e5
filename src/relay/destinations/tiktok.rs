//! TikTok Events API 2.0 destination: build the event, send batches, classify the answer.
//!
//! TikTok answers business errors with HTTP 200 and a non-zero `code`, so the body is always
//! read. Classification is separate from timing: this module says delivered / retry / reject;
//! the outbox decides when to retry and when to give up.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Outcome, UserFields, classify_http, exchange, http_client, join_payloads, value_fields,
};
use crate::relay::config::{Destination, MappingRule};
use crate::relay::sanitize::{Built, Prepared, sha256_hex};

/// Build the `data[]` element for TikTok from the allowlisted values. Reasons name what this
/// destination does not receive; the error is why the event is not sent at all.
pub fn build(
    p: &Prepared,
    d: &Destination,
    rule: &MappingRule,
    reasons: &mut Vec<String>,
) -> Built {
    let hash = |v: &Option<String>| v.as_deref().map(|s| json!(sha256_hex(s)));
    let mut user = UserFields::new(reasons);
    user.put("ttclid", p.ttclid.as_deref().map(Value::from));
    user.opt_in(
        "ttp",
        "ttp",
        p.ttp.as_deref().map(Value::from),
        d.fields.ttp,
    );
    user.opt_in("email", "email", hash(&p.email), d.fields.hashed_email);
    user.opt_in("phone", "phone", hash(&p.phone), d.fields.hashed_phone);
    if !user.has_any(&["ttclid", "ttp", "email", "phone"]) {
        return Err("no_match_key");
    }
    let (user, reasons) = user.finish();
    let mut data = json!({
        "event": rule.to,
        "event_time": p.event_time,
        "event_id": p.event_id,
        "user": user,
        "page": {"url": p.page_url},
    });
    if let Some(v) = value_fields(p, rule, reasons) {
        data["properties"] = v;
    }
    Ok(data)
}

#[derive(Deserialize)]
struct Answer {
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
}

/// Classify an HTTP answer from the Events API.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let parsed: Option<Answer> = serde_json::from_slice(body).ok();
    if let Some(Answer {
        code: Some(code),
        message,
        request_id,
    }) = parsed
    {
        if let Some(m) = &message {
            tracing::debug!(code, message = %m, "tiktok answer");
        }
        return classify_code(code, request_id.unwrap_or_default(), status);
    }
    classify_http(status)
}

fn classify_code(code: i64, request_id: String, status: u16) -> Outcome {
    let reason = format!("tiktok_code:{code}");
    match code {
        0 if (200..300).contains(&status) => Outcome::Delivered {
            request_id,
            received: None,
        },
        0 => Outcome::Retry {
            reason: format!("http:{status}"),
        },
        40100 => Outcome::Retry { reason },
        50000..=59999 => Outcome::Retry { reason },
        40001 | 40105 => Outcome::credentials(reason),
        _ => Outcome::unknown_code(reason, status),
    }
}

/// Client for one pixel.
#[derive(Clone)]
pub struct TikTokClient {
    http: reqwest::Client,
    endpoint: String,
    pixel_code: String,
    token: String,
}

impl std::fmt::Debug for TikTokClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TikTokClient")
            .field("endpoint", &self.endpoint)
            .field("pixel_code", &self.pixel_code)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl TikTokClient {
    /// Build a client with a per-request timeout.
    pub fn new(endpoint: &str, pixel_code: &str, token: &str, timeout: Duration) -> TikTokClient {
        TikTokClient {
            http: http_client(timeout),
            endpoint: endpoint.to_string(),
            pixel_code: pixel_code.to_string(),
            token: token.to_string(),
        }
    }

    /// The request body for a batch of stored payloads (each a JSON object).
    pub fn body(&self, test_event_code: Option<&str>, payloads: &[&str]) -> String {
        let mut s = String::with_capacity(64 + payloads.iter().map(|p| p.len() + 1).sum::<usize>());
        s.push_str("{\"event_source\":\"web\",\"event_source_id\":");
        s.push_str(&serde_json::Value::from(self.pixel_code.as_str()).to_string());
        if let Some(c) = test_event_code {
            s.push_str(",\"test_event_code\":");
            s.push_str(&serde_json::Value::from(c).to_string());
        }
        s.push_str(",\"data\":");
        join_payloads(&mut s, payloads);
        s.push('}');
        s
    }

    /// Send one batch and classify the answer.
    pub async fn send(&self, test_event_code: Option<&str>, payloads: &[&str]) -> Outcome {
        let req = self
            .http
            .post(&self.endpoint)
            .header("Access-Token", &self.token)
            .header("Content-Type", "application/json")
            .body(self.body(test_event_code, payloads));
        exchange(req, classify).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let ok = br#"{"code":0,"message":"OK","request_id":"r1","data":{}}"#;
        assert_eq!(
            classify(200, ok),
            Outcome::Delivered {
                request_id: "r1".into(),
                received: None
            }
        );
        let c = |code: i64| {
            classify(
                200,
                format!(r#"{{"code":{code},"message":"m"}}"#).as_bytes(),
            )
        };
        assert!(matches!(c(40100), Outcome::Retry { .. }));
        assert!(matches!(c(50002), Outcome::Retry { .. }));
        assert!(matches!(
            c(40001),
            Outcome::Reject {
                credentials: true,
                ..
            }
        ));
        assert!(matches!(
            c(40105),
            Outcome::Reject {
                credentials: true,
                ..
            }
        ));
        assert!(matches!(
            c(40002),
            Outcome::Reject {
                credentials: false,
                ..
            }
        ));
        assert!(matches!(
            classify(502, b"<html>bad gateway"),
            Outcome::Retry { .. }
        ));
        assert!(matches!(classify(500, b""), Outcome::Retry { .. }));
        assert!(matches!(classify(200, b"not json"), Outcome::Retry { .. }));
        assert!(matches!(classify(404, b""), Outcome::Reject { .. }));
    }

    #[test]
    fn body_never_mixes_test_code_and_quotes_strings() {
        let c = TikTokClient::new("http://127.0.0.1:9/", "PIX\"1", "t", Duration::from_secs(1));
        let b = c.body(Some("TEST1"), &[r#"{"event":"Lead"}"#]);
        let v: serde_json::Value = serde_json::from_str(&b).expect("valid json");
        assert_eq!(v["event_source_id"], "PIX\"1");
        assert_eq!(v["test_event_code"], "TEST1");
        assert_eq!(v["data"][0]["event"], "Lead");
    }
}
