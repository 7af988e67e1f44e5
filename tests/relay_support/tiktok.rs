//! The TikTok Events API 2.0 as a strict stand-in: HTTP 200 with `code` 0 on success and a
//! non-zero `code` for business errors (40002 parameter errors, 40105 bad token, 40001 wrong
//! pixel), like TikTok.

use serde_json::{Value, json};

use super::http::header;
use super::standin::{Accepted, Api, Rejection, StandIn};

/// Path the relay must post to.
pub const PATH: &str = "/open_api/v1.3/event/track/";

const CURRENCIES: &[&str] = &["USD", "EUR", "GBP", "CAD", "AUD", "JPY", "CHF", "MXN"];

/// TikTok's rules and answers.
pub struct TikTok {
    token: String,
    pixel: String,
}

impl StandIn<TikTok> {
    /// Start on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> StandIn<TikTok> {
        let (token, pixel) = ("standin-token-123".to_string(), "CSTANDIN0001".to_string());
        let api = TikTok {
            token: token.clone(),
            pixel: pixel.clone(),
        };
        StandIn::serve(api, PATH, token, pixel).await
    }
}

impl Api for TikTok {
    fn validate(&self, head: &str, body: &[u8]) -> Result<Accepted, Rejection> {
        validate(head, body, &self.token, &self.pixel)
    }

    fn success(&self, request_id: &str, _counted: usize) -> (u16, Value) {
        (
            200,
            json!({"code": 0, "message": "OK", "request_id": request_id, "data": {}}),
        )
    }

    fn failure(&self, request_id: &str, r: &Rejection) -> (u16, Value) {
        // Business errors are HTTP 200 with a non-zero code.
        (
            200,
            json!({"code": r.code, "message": r.message, "request_id": request_id, "data": {}}),
        )
    }

    fn parameter_error(&self) -> Rejection {
        Rejection::new(40002, "event_id: invalid value")
    }
}

fn validate(head: &str, body: &[u8], token: &str, pixel: &str) -> Result<Accepted, Rejection> {
    let p = |m: &str| Err(Rejection::new(40002, m));
    let first = head.lines().next().unwrap_or_default();
    if !first.starts_with(&format!("POST {PATH} ")) {
        return p("wrong method or path (the trailing slash matters)");
    }
    if header(head, "Access-Token") != Some(token) {
        return Err(Rejection::new(
            40105,
            "access token is incorrect or has been revoked",
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
        return Err(Rejection::new(
            40001,
            "no permission to operate on this pixel",
        ));
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
        check_event(ev).map_err(|m| Rejection::new(40002, &format!("data[{i}].{m}")))?;
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
