//! The Meta Conversions API as a strict stand-in: `POST /{version}/{pixel}/events?access_token=`
//! with `{"data": [...], "test_event_code"?}`, answered with `{"events_received", "messages",
//! "fbtrace_id"}` or a Graph `error` object.
//!
//! It rejects what the Graph API rejects: code 190 for a missing or wrong token; code 100 (with
//! a subcode) for a wrong path or content type, unknown fields at any level, a missing
//! `event_name`/`event_time`/`action_source`/`user_data`, a website event without
//! `event_source_url`, an unhashed `em`/`ph`, an `event_time` in milliseconds, older than 7 days
//! (which fails the whole request) or in the future, malformed `fbc`/`fbp`, and data outside
//! 1..=1000 events. The subcodes are this stand-in's own labels (Meta documents few of them);
//! the relay branches on the code only and records the subcode.

use serde_json::{Map, Value, json};

use super::http::header;
use super::standin::{Accepted, Api, Rejection, StandIn};

/// API version in the path.
pub const VERSION: &str = "v21.0";
/// Subcode: unknown field.
pub const SUB_UNKNOWN_FIELD: i64 = 2804001;
/// Subcode: missing or invalid required parameter.
pub const SUB_INVALID: i64 = 2804002;
/// Subcode: event_time older than 7 days, in the future or in milliseconds.
pub const SUB_EVENT_TIME: i64 = 2804003;
/// Subcode: a customer-information field that must be hashed is not.
pub const SUB_UNHASHED: i64 = 2804050;

const TOP_KEYS: &[&str] = &[
    "data",
    "test_event_code",
    "partner_agent",
    "namespace_id",
    "upload_id",
];
const EVENT_KEYS: &[&str] = &[
    "event_name",
    "event_time",
    "event_id",
    "event_source_url",
    "action_source",
    "user_data",
    "custom_data",
    "opt_out",
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
    "referrer_url",
];
const ACTION_SOURCES: &[&str] = &[
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
];
const HASHED: &[&str] = &[
    "em",
    "ph",
    "fn",
    "ln",
    "db",
    "ge",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
];
const PLAIN: &[&str] = &[
    "client_ip_address",
    "client_user_agent",
    "fbc",
    "fbp",
    "subscription_id",
    "lead_id",
];
const CUSTOM_KEYS: &[&str] = &[
    "value",
    "currency",
    "content_name",
    "content_category",
    "content_ids",
    "contents",
    "content_type",
    "order_id",
    "num_items",
    "status",
];

/// Meta's rules and answers.
pub struct Meta {
    token: String,
    path: String,
}

impl StandIn<Meta> {
    /// Start on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> StandIn<Meta> {
        let (token, pixel) = (
            "EAAmeta-standin-token".to_string(),
            "987654321012345".to_string(),
        );
        let path = format!("/{VERSION}/{pixel}/events");
        let api = Meta {
            token: token.clone(),
            path: path.clone(),
        };
        StandIn::serve(api, &path, token, pixel).await
    }
}

impl Api for Meta {
    fn validate(&self, head: &str, body: &[u8]) -> Result<Accepted, Rejection> {
        let first = head.lines().next().unwrap_or_default();
        let target = first.split(' ').nth(1).unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let token = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned());
        if token.as_deref() != Some(self.token.as_str()) {
            return Err(Rejection::sub(190, 463, "Invalid OAuth access token"));
        }
        if !first.starts_with("POST ") || path != self.path {
            return Err(Rejection::sub(100, 33, "Unsupported post request"));
        }
        if !header(head, "Content-Type").is_some_and(|c| c.starts_with("application/json")) {
            return Err(invalid("Content-Type must be application/json"));
        }
        let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
            return Err(invalid("body is not a JSON object"));
        };
        if let Some(k) = top.keys().find(|k| !TOP_KEYS.contains(&k.as_str())) {
            return Err(unknown(k));
        }
        let test_event_code = match top.get("test_event_code") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("test_event_code must be a string")),
        };
        let Some(Value::Array(data)) = top.get("data") else {
            return Err(invalid("data must be an array"));
        };
        if data.is_empty() || data.len() > 1000 {
            return Err(invalid("data must hold 1 to 1000 events"));
        }
        let now = chrono::Utc::now().timestamp();
        for (i, ev) in data.iter().enumerate() {
            check_event(ev, now).map_err(|mut r| {
                r.message = format!("data[{i}]: {}", r.message);
                r
            })?;
        }
        Ok(Accepted {
            test_event_code,
            events: data.clone(),
        })
    }

    fn success(&self, request_id: &str, counted: usize) -> (u16, Value) {
        (
            200,
            json!({"events_received": counted, "messages": [], "fbtrace_id": request_id}),
        )
    }

    fn failure(&self, request_id: &str, r: &Rejection) -> (u16, Value) {
        let status = match r.code {
            1 | 2 => 500,
            190 => 401,
            _ => 400,
        };
        let kind = if r.code == 190 {
            "OAuthException"
        } else {
            "GraphMethodException"
        };
        let mut e =
            json!({"message": r.message, "type": kind, "code": r.code, "fbtrace_id": request_id});
        if let Some(s) = r.subcode {
            e["error_subcode"] = json!(s);
        }
        if matches!(r.code, 1 | 2) {
            e["is_transient"] = json!(true);
        }
        (status, json!({"error": e}))
    }

    fn parameter_error(&self) -> Rejection {
        invalid("event_id: invalid value")
    }
}

fn invalid(m: &str) -> Rejection {
    Rejection::sub(100, SUB_INVALID, &format!("Invalid parameter: {m}"))
}

fn unknown(k: &str) -> Rejection {
    Rejection::sub(
        100,
        SUB_UNKNOWN_FIELD,
        &format!("Invalid parameter: unknown field {k}"),
    )
}

fn is_hash(v: &Value) -> bool {
    let one = |s: &str| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match v {
        Value::String(s) => one(s),
        Value::Array(a) => !a.is_empty() && a.iter().all(|x| x.as_str().is_some_and(one)),
        _ => false,
    }
}

/// `fb.<0-2>.<13-digit ms>.<value>`
fn is_meta_cookie(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let p: Vec<&str> = s.splitn(4, '.').collect();
    p.len() == 4
        && p[0] == "fb"
        && matches!(p[1], "0" | "1" | "2")
        && p[2].len() == 13
        && p[2].bytes().all(|b| b.is_ascii_digit())
        && !p[3].is_empty()
}

fn check_event(ev: &Value, now: i64) -> Result<(), Rejection> {
    let Value::Object(o) = ev else {
        return Err(invalid("event must be an object"));
    };
    if let Some(k) = o.keys().find(|k| !EVENT_KEYS.contains(&k.as_str())) {
        return Err(unknown(k));
    }
    if o.get("event_name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(invalid("event_name is required"));
    }
    let t = o
        .get("event_time")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("event_time must be an integer"))?;
    if t > 100_000_000_000 {
        return Err(Rejection::sub(
            100,
            SUB_EVENT_TIME,
            "Invalid parameter: event_time in milliseconds",
        ));
    }
    if t < now - 7 * 24 * 3600 {
        return Err(Rejection::sub(
            100,
            SUB_EVENT_TIME,
            "Invalid parameter: event_time is more than 7 days in the past",
        ));
    }
    if t > now + 600 {
        return Err(Rejection::sub(
            100,
            SUB_EVENT_TIME,
            "Invalid parameter: event_time is in the future",
        ));
    }
    if !matches!(o.get("event_id"), None | Some(Value::String(_))) {
        return Err(invalid("event_id must be a string"));
    }
    let source = o.get("action_source").and_then(Value::as_str);
    if !source.is_some_and(|s| ACTION_SOURCES.contains(&s)) {
        return Err(invalid("action_source is required"));
    }
    let url_ok = o
        .get("event_source_url")
        .and_then(Value::as_str)
        .is_some_and(|u| url::Url::parse(u).is_ok());
    if source == Some("website") && !url_ok {
        return Err(invalid("event_source_url is required for website events"));
    }
    let Some(Value::Object(user)) = o.get("user_data") else {
        return Err(invalid("user_data is required"));
    };
    check_user(user)?;
    if let Some(c) = o.get("custom_data") {
        let Value::Object(c) = c else {
            return Err(invalid("custom_data must be an object"));
        };
        if let Some(k) = c.keys().find(|k| !CUSTOM_KEYS.contains(&k.as_str())) {
            return Err(unknown(&format!("custom_data.{k}")));
        }
        if c.get("value").is_some_and(|v| !v.is_number()) {
            return Err(invalid("custom_data.value must be a number"));
        }
        if c.get("currency").is_some_and(|v| {
            !v.as_str()
                .is_some_and(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()))
        }) {
            return Err(invalid("custom_data.currency must be an ISO 4217 code"));
        }
    }
    Ok(())
}

fn check_user(user: &Map<String, Value>) -> Result<(), Rejection> {
    if user.is_empty() {
        return Err(invalid(
            "user_data needs at least one customer information parameter",
        ));
    }
    for (k, v) in user {
        if HASHED.contains(&k.as_str()) {
            if !is_hash(v) {
                return Err(Rejection::sub(
                    100,
                    SUB_UNHASHED,
                    &format!("Invalid parameter: user_data.{k} must be SHA-256 hashed"),
                ));
            }
        } else if PLAIN.contains(&k.as_str()) {
            let ok = match k.as_str() {
                "fbc" | "fbp" => is_meta_cookie(v),
                "client_ip_address" => v
                    .as_str()
                    .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
                _ => v.is_string(),
            };
            if !ok {
                return Err(invalid(&format!("user_data.{k} is malformed")));
            }
        } else {
            return Err(unknown(&format!("user_data.{k}")));
        }
    }
    Ok(())
}
