//! Incoming event model: strict JSON reading and parsing one event or a batch, with errors that
//! name the field and the rule, never the value.

use std::net::IpAddr;

use serde_json::{Map, Value};

/// Deepest nesting of arrays and objects accepted in a request body.
pub const MAX_DEPTH: usize = 16;
/// Largest accepted `value`.
pub const MAX_VALUE: f64 = 1_000_000_000.0;

/// An event as a caller sent it, after type checks. Holds PHI-capable values: it lives only in
/// memory for the duration of one request and is never logged or written.
#[derive(Debug, Clone, Default)]
pub struct IncomingEvent {
    /// Descriptive event name (`BookedGLP1Consultation`).
    pub event: String,
    /// Caller's event id.
    pub event_id: Option<String>,
    /// Unix seconds.
    pub event_time: Option<i64>,
    /// TikTok click id.
    pub ttclid: Option<String>,
    /// TikTok `_ttp` cookie.
    pub ttp: Option<String>,
    /// Meta click id from the landing URL.
    pub fbclid: Option<String>,
    /// Meta `_fbc` cookie.
    pub fbc: Option<String>,
    /// Meta `_fbp` cookie.
    pub fbp: Option<String>,
    /// Client address (signed callers only; browsers' comes from the connection).
    pub client_ip: Option<IpAddr>,
    /// Client user agent (signed callers only; browsers' comes from the header).
    pub client_user_agent: Option<String>,
    /// Page URL the event happened on.
    pub url: Option<String>,
    /// Monetary value.
    pub value: Option<f64>,
    /// ISO 4217 currency.
    pub currency: Option<String>,
    /// Email (only ever forwarded hashed, and only when enabled).
    pub email: Option<String>,
    /// Phone (only ever forwarded hashed, and only when enabled).
    pub phone: Option<String>,
    /// Consent token returned by `POST /v1/consent`.
    pub consent_token: Option<String>,
    /// Consent subject id (back-end callers).
    pub subject: Option<String>,
    /// TikTok test event code for this event.
    pub test_event_code: Option<String>,
    /// Names of other fields present; they are dropped, and only a keyed hash of each name is
    /// recorded.
    pub other_fields: Vec<String>,
}

/// Why a request body was refused (HTTP 400); the message names the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InputError {
    /// JSON path of the problem, e.g. `events[2].event_time`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// An input error for `field` (a JSON path) breaking `problem` (a rule, never a value).
pub(crate) fn bad(field: impl Into<String>, problem: impl Into<String>) -> InputError {
    InputError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The JSON type of a value, for "expected X, got Y" messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Read a request body as JSON: valid UTF-8, nesting at most [`MAX_DEPTH`], numbers in range.
/// Errors say what rule broke and where (line, column or byte offset), never the input.
pub fn parse_json(body: &[u8]) -> Result<Value, InputError> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(bad(
            "body",
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        ));
    }
    check_depth(body)?;
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let what = if msg.contains("number out of range") {
            "number out of range"
        } else if msg.contains("recursion limit") {
            "nesting too deep"
        } else if msg.contains("surrogate") || msg.contains("unicode") || msg.contains("escape") {
            "invalid escape or Unicode code point in a string"
        } else if msg.contains("control character") {
            "control character in a string"
        } else {
            match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of input",
                _ => "syntax error",
            }
        };
        bad(
            "body",
            format!(
                "not valid JSON: {what} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Refuse bodies nested deeper than [`MAX_DEPTH`] before the parser recurses into them.
fn check_depth(body: &[u8]) -> Result<(), InputError> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, &b) in body.iter().enumerate() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(bad(
                        "body",
                        format!("nesting deeper than {MAX_DEPTH} levels (at byte {i})"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parse a body holding one event object, `{"events": [...]}`, or a bare array of events.
pub fn parse_body(body: &[u8], max_events: usize) -> Result<Vec<IncomingEvent>, InputError> {
    let v = parse_json(body)?;
    let (items, prefix): (Vec<Value>, &str) = match v {
        Value::Array(a) => (a, ""),
        Value::Object(mut o) if o.contains_key("events") => {
            if o.len() > 1 {
                return Err(bad(
                    "body",
                    "a batch object may hold only the key \"events\"",
                ));
            }
            match o.remove("events").expect("checked") {
                Value::Array(a) => (a, "events"),
                other => {
                    return Err(bad(
                        "events",
                        format!("expected an array, got {}", type_name(&other)),
                    ));
                }
            }
        }
        Value::Object(o) => (vec![Value::Object(o)], ""),
        other => {
            return Err(bad(
                "body",
                format!(
                    "expected an event object or an array, got {}",
                    type_name(&other)
                ),
            ));
        }
    };
    if items.is_empty() {
        return Err(bad("events", "the batch is empty"));
    }
    if items.len() > max_events {
        return Err(bad(
            "events",
            format!("{} events exceed the limit of {max_events}", items.len()),
        ));
    }
    let single = items.len() == 1 && prefix.is_empty();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let path = if single && prefix.is_empty() {
                String::new()
            } else if prefix.is_empty() {
                format!("[{i}].")
            } else {
                format!("{prefix}[{i}].")
            };
            parse_event(item, &path)
        })
        .collect()
}

fn parse_event(v: Value, path: &str) -> Result<IncomingEvent, InputError> {
    let Value::Object(mut o) = v else {
        return Err(bad(
            if path.is_empty() {
                "body".to_string()
            } else {
                path.trim_end_matches('.').to_string()
            },
            format!("expected an object, got {}", type_name(&v)),
        ));
    };
    let f = |name: &str| format!("{path}{name}");
    let event = take_str(&mut o, "event", path)?
        .ok_or_else(|| bad(f("event"), "missing (the event name is required)"))?;
    if event.trim().is_empty() {
        return Err(bad(f("event"), "is empty"));
    }
    let event_time = match o.remove("event_time") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let t = match (n.as_i64(), n.as_f64()) {
                (Some(t), _) => t,
                (None, Some(x)) if x.fract() == 0.0 || x.abs() > 9.0e15 => {
                    return Err(bad(
                        f("event_time"),
                        "number out of range (integer Unix seconds, 0 to 100000000000)",
                    ));
                }
                _ => {
                    return Err(bad(
                        f("event_time"),
                        "expected integer Unix seconds, got a fraction",
                    ));
                }
            };
            if t > 100_000_000_000 {
                return Err(bad(
                    f("event_time"),
                    "looks like milliseconds; send integer Unix seconds",
                ));
            }
            if t < 0 {
                return Err(bad(f("event_time"), "is negative"));
            }
            Some(t)
        }
        Some(other) => {
            return Err(bad(
                f("event_time"),
                format!("expected integer Unix seconds, got {}", type_name(&other)),
            ));
        }
    };
    let value = match o.remove("value") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !(0.0..=MAX_VALUE).contains(&x) {
                return Err(bad(f("value"), "number out of range (0 to 1000000000)"));
            }
            Some(x)
        }
        Some(other) => {
            return Err(bad(
                f("value"),
                format!("expected a number, got {}", type_name(&other)),
            ));
        }
    };
    let mut ev = IncomingEvent {
        event,
        event_id: take_str(&mut o, "event_id", path)?,
        event_time,
        ttclid: take_str(&mut o, "ttclid", path)?,
        ttp: take_str(&mut o, "ttp", path)?,
        fbclid: take_str(&mut o, "fbclid", path)?,
        fbc: take_str(&mut o, "fbc", path)?,
        fbp: take_str(&mut o, "fbp", path)?,
        client_ip: match take_str(&mut o, "client_ip_address", path)? {
            None => None,
            Some(s) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| bad(f("client_ip_address"), "expected an IPv4 or IPv6 address"))?,
            ),
        },
        client_user_agent: take_str(&mut o, "client_user_agent", path)?,
        url: take_str(&mut o, "url", path)?,
        value,
        currency: take_str(&mut o, "currency", path)?,
        email: take_str(&mut o, "email", path)?,
        phone: take_str(&mut o, "phone", path)?,
        consent_token: take_str(&mut o, "consent_token", path)?,
        subject: take_str(&mut o, "subject", path)?,
        test_event_code: take_str(&mut o, "test_event_code", path)?,
        other_fields: Vec::new(),
    };
    ev.other_fields = o.keys().cloned().collect();
    Ok(ev)
}

fn take_str(
    o: &mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, InputError> {
    match o.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(
            format!("{path}{key}"),
            format!("expected a string, got {}", type_name(&other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_batch_and_array_forms() {
        assert_eq!(parse_body(br#"{"event":"A"}"#, 10).expect("one").len(), 1);
        assert_eq!(
            parse_body(br#"{"events":[{"event":"A"},{"event":"B"}]}"#, 10)
                .expect("batch")
                .len(),
            2
        );
        assert_eq!(
            parse_body(br#"[{"event":"A"}]"#, 10).expect("array").len(),
            1
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"event":"A","event_time":"1700000000"}"#,
                "event_time",
                "got string",
            ),
            (
                r#"{"event":"A","event_time":1700000000000}"#,
                "event_time",
                "milliseconds",
            ),
            (
                r#"{"events":[{"event":"A"},{"ttclid":"x"}]}"#,
                "events[1].event",
                "missing",
            ),
            (
                r#"{"event":"A","event_id":42}"#,
                "event_id",
                "expected a string, got number",
            ),
            (r#"{"event":"A","value":"12"}"#, "value", "got string"),
            (r#"{"events":[]}"#, "events", "empty"),
            (r#"{"event":"A""#, "body", "not valid JSON"),
            (r#"42"#, "body", "got number"),
        ];
        for (body, field, problem) in cases {
            let e = parse_body(body.as_bytes(), 10).expect_err(body);
            assert_eq!(e.field, *field, "{body}");
            assert!(e.problem.contains(problem), "{body}: {}", e.problem);
        }
    }

    #[test]
    fn strict_json_errors_are_exact_and_never_echo() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (deep.into_bytes(), "body", "nesting deeper than 16 levels"),
            (
                b"{\"event\":\"A\",\"x\":\"Jane \xff Doe\"}".to_vec(),
                "body",
                "invalid UTF-8 at byte 23",
            ),
            (
                br#"{"event":"A","x":1e400}"#.to_vec(),
                "body",
                "number out of range",
            ),
            (
                br#"{"event":"A","event_time":1e30}"#.to_vec(),
                "event_time",
                "number out of range",
            ),
            (
                br#"{"event":"A","value":-1}"#.to_vec(),
                "value",
                "number out of range (0 to 1000000000)",
            ),
            (
                br#"{"event":"A","value":1e12}"#.to_vec(),
                "value",
                "number out of range",
            ),
            (
                br#"{"event":"A","x":"\ud800 Jane"}"#.to_vec(),
                "body",
                "invalid escape or Unicode",
            ),
            (
                br#"{"event":"A","client_ip_address":"Jane Doe"}"#.to_vec(),
                "client_ip_address",
                "IPv4 or IPv6",
            ),
        ];
        for (body, field, problem) in cases {
            let e = parse_body(&body, 10).expect_err(problem);
            assert_eq!(e.field, field, "{problem}: {e}");
            assert!(e.problem.contains(problem), "{problem}: {e}");
            assert!(!e.to_string().contains("Jane"), "echoed input: {e}");
        }
    }

    #[test]
    fn too_many_events_is_refused() {
        let e = parse_body(br#"[{"event":"A"},{"event":"A"},{"event":"A"}]"#, 2).expect_err("cap");
        assert!(e.problem.contains("limit of 2"), "{e}");
    }

    #[test]
    fn unknown_fields_are_collected_by_name() {
        let ev = parse_body(br#"{"event":"A","diagnosis":"x","nested":{"a":1}}"#, 10).expect("ok");
        let mut names = ev[0].other_fields.clone();
        names.sort();
        assert_eq!(names, vec!["diagnosis", "nested"]);
    }
}
