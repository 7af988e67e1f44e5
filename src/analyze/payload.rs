//! What a request carried, decoded: query parameters, body (JSON leaves, form fields, raw text;
//! base64 layers opened), the Referer header, and the event name by each vendor's parser.

use base64::Engine as _;
use serde_json::Value;

use crate::model::Request;
use crate::rules::Vendor;

/// A named value a tracker received.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Field {
    /// "query", "body" or "header".
    pub(super) location: &'static str,
    pub(super) name: String,
    pub(super) value: String,
}

/// Every value the request carried, decoded: query parameters, body (JSON leaves, form fields,
/// or raw text; base64 layers opened), and the Referer header.
pub(super) fn fields(r: &Request) -> Vec<Field> {
    let mut out = Vec::new();
    if let Ok(u) = url::Url::parse(&r.url) {
        for (k, v) in u.query_pairs() {
            push_decoded(&mut out, "query", k.into_owned(), v.into_owned(), 0);
        }
    }
    if let Some(body) = &r.post_data {
        body_fields(&mut out, body);
    }
    if let Some(referer) = &r.referer {
        out.push(Field {
            location: "header",
            name: "Referer".into(),
            value: referer.clone(),
        });
    }
    out
}

fn body_fields(out: &mut Vec<Field>, body: &str) {
    let trimmed = body.trim();
    if let Ok(json) = serde_json::from_str::<Value>(trimmed)
        && (json.is_object() || json.is_array())
    {
        json_leaves(out, &json, String::new());
        return;
    }
    if !trimmed.contains(char::is_whitespace) && trimmed.contains('=') {
        for (k, v) in url::form_urlencoded::parse(trimmed.as_bytes()) {
            push_decoded(out, "body", k.into_owned(), v.into_owned(), 0);
        }
        return;
    }
    // Several JSON documents or lines (batched beacons): judge each line.
    for (i, line) in trimmed.lines().enumerate().take(200) {
        if let Ok(json) = serde_json::from_str::<Value>(line) {
            json_leaves(out, &json, format!("[{i}]"));
        } else {
            push_decoded(out, "body", format!("line {}", i + 1), line.to_string(), 0);
        }
    }
}

fn json_leaves(out: &mut Vec<Field>, v: &Value, path: String) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter().take(500) {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_leaves(out, v, p);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate().take(500) {
                json_leaves(out, v, format!("{path}[{i}]"));
            }
        }
        Value::String(s) => push_decoded(out, "body", path, s.clone(), 0),
        _ => {}
    }
}

/// Adds a value, and the text inside it if it is base64 or nested URL/JSON (two layers at most).
fn push_decoded(
    out: &mut Vec<Field>,
    location: &'static str,
    name: String,
    value: String,
    depth: u8,
) {
    if depth < 2 && value.len() >= 16 && looks_base64(&value) {
        let engine = base64::engine::general_purpose::STANDARD;
        let decoded = engine
            .decode(value.trim_end_matches('='))
            .or_else(|_| engine.decode(&value))
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.trim_end_matches('='))
            });
        if let Ok(bytes) = decoded
            && let Ok(text) = String::from_utf8(bytes)
            && text.chars().all(|c| !c.is_control() || c.is_whitespace())
        {
            if let Ok(json) = serde_json::from_str::<Value>(&text)
                && (json.is_object() || json.is_array())
            {
                let mut inner = Vec::new();
                json_leaves(&mut inner, &json, format!("{name}(base64)"));
                out.extend(inner.into_iter().map(|f| Field { location, ..f }));
            } else {
                push_decoded(out, location, format!("{name}(base64)"), text, depth + 1);
            }
        }
    }
    out.push(Field {
        location,
        name,
        value,
    });
}

fn looks_base64(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_'))
        && s.chars()
            .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// The event name a pixel request carries, and where, for the vendors whose format is known.
pub(super) fn event_name(r: &Request, v: &Vendor) -> Option<(String, String)> {
    let query = |key: &str| -> Option<String> {
        url::Url::parse(&r.url)
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let body_json = || -> Option<Value> { serde_json::from_str(r.post_data.as_deref()?).ok() };
    match v.parser.as_deref()? {
        "tiktok" => {
            let body = body_json()?;
            let name = body["event"].as_str()?.to_string();
            Some(("body field 'event'".into(), name))
        }
        "meta" => query("ev")
            .map(|e| ("query field 'ev'".into(), e))
            .or_else(|| {
                let body = r.post_data.as_deref()?;
                url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "ev")
                    .map(|(_, v)| ("body field 'ev'".into(), v.into_owned()))
            }),
        "ga4" => query("en").map(|e| ("query field 'en'".into(), e)),
        // Generic: the event name is in one query parameter ("query:ea" for Microsoft UET).
        other => {
            let key = other.strip_prefix("query:")?;
            query(key).map(|e| (format!("query field '{key}'"), e))
        }
    }
}
