//! Second line of defence: scan a final outgoing payload for health terms, emails, phones, dates.
//!
//! The sanitizer already builds payloads from an allowlist; this detector assumes it might be
//! wrong. It walks every key and string value of the JSON about to leave and reports what kind of
//! thing matched (never the matched text), so the event can be blocked.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};
use serde_json::Value;

use crate::lexicon::Lexicon;

const EMAIL_RE: &str = r"(?i)[a-z0-9._%+-]+(@|%40)[a-z0-9.-]+\.[a-z]{2,}";
const PHONE_RE: &str =
    r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b|\+\d{10,15}\b";
const DATE_RE: &str = r"(?i)\b(19|20)\d{2}[-/.](0?[1-9]|1[0-2])[-/.](0?[1-9]|[12]\d|3[01])\b|\b(0?[1-9]|1[0-2])[-/.](0?[1-9]|[12]\d|3[01])[-/.](19|20)?\d{2}\b|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(st|nd|rd|th)?,?\s+(19|20)\d{2}\b";
const SSN_RE: &str = r"\b\d{3}-\d{2}-\d{4}\b";

/// The four patterns with their reason codes, in the order they are reported.
static PATTERNS: LazyLock<[(Regex, &str); 4]> = LazyLock::new(|| {
    let re = |src| Regex::new(src).expect("detector regex");
    [
        (re(EMAIL_RE), "email"),
        (re(PHONE_RE), "phone"),
        (re(DATE_RE), "date"),
        (re(SSN_RE), "ssn"),
    ]
});
/// The same four as one set: most text matches none of them, and one pass over it says so.
static ANY_PATTERN: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([EMAIL_RE, PHONE_RE, DATE_RE, SSN_RE]).expect("detector regex set")
});
static HEX64: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9a-f]{64}$").expect("hex regex"));

/// Keys of the outgoing schemas (TikTok and Meta); any other key is scanned like a value.
const SCHEMA_KEYS: &[&str] = &[
    "event",
    "event_time",
    "event_id",
    "user",
    "ttclid",
    "ttp",
    "email",
    "phone",
    "properties",
    "value",
    "currency",
    "page",
    "url",
    "event_name",
    "action_source",
    "event_source_url",
    "user_data",
    "fbc",
    "fbp",
    "em",
    "ph",
    "client_ip_address",
    "client_user_agent",
    "custom_data",
];

/// Scan text for PHI-like content; returns reason codes such as `health_term:glp1_drug`.
/// `opaque` selects plain word splitting for random identifiers (click ids, event ids).
pub fn scan_text(text: &str, opaque: bool) -> Vec<String> {
    let lex = Lexicon::bundled();
    let mut out = Vec::new();
    let decoded = percent_decode(text);
    for t in [text, decoded.as_ref()] {
        let hit = if opaque {
            lex.find_plain(t)
        } else {
            lex.find(t)
        };
        if let Some(m) = hit {
            out.push(format!("health_term:{}", m.category));
        }
        if ANY_PATTERN.is_match(t) {
            for (re, kind) in PATTERNS.iter() {
                if re.is_match(t) {
                    out.push((*kind).into());
                }
            }
        }
        if decoded.as_ref() == text {
            break;
        }
    }
    out.sort();
    out.dedup();
    out
}

fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return std::borrow::Cow::Borrowed(s);
    }
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| std::borrow::Cow::Owned(v.into_owned()))
        .unwrap_or_default()
}

/// Scan an outgoing event (one `data[]` element of either destination). Returns `detector:<field>:<kind>`
/// reasons; an empty list means the payload may leave.
pub fn scan_payload(event: &Value) -> Vec<String> {
    scan_payload_vetted(event, &|_| false)
}

/// [`scan_payload`], skipping string values for which `vetted` holds: strings that already
/// passed this detector (configured category URLs and event names, an id scanned once).
pub fn scan_payload_vetted(event: &Value, vetted: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = String::with_capacity(48);
    walk(event, &mut path, vetted, &mut out);
    out
}

/// `path` is the dotted path of `v` followed by a dot (empty at the root); it is one buffer
/// for the whole walk, restored before returning.
fn walk(v: &Value, path: &mut String, vetted: &dyn Fn(&str) -> bool, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if !SCHEMA_KEYS.contains(&k.as_str()) {
                    for r in scan_text(k, false) {
                        out.push(format!("detector:{path}{k}(key):{r}"));
                    }
                }
                let len = path.len();
                path.push_str(k);
                path.push('.');
                walk(child, path, vetted, out);
                path.truncate(len);
            }
        }
        Value::Array(a) => {
            for child in a {
                walk(child, path, vetted, out);
            }
        }
        Value::String(s) => {
            let field = path.trim_end_matches('.');
            if matches!(
                field,
                "user.email" | "user.phone" | "user_data.em" | "user_data.ph"
            ) {
                if !HEX64.is_match(s) {
                    out.push(format!("detector:{field}:not_hashed"));
                }
                return;
            }
            if field == "user_data.client_ip_address" {
                // Serialised by the relay from a parsed address; digits and dots would read
                // as a date.
                if s.parse::<std::net::IpAddr>().is_err() {
                    out.push(format!("detector:{field}:not_an_address"));
                }
                return;
            }
            if vetted(s) {
                return;
            }
            let opaque = matches!(
                field,
                "user.ttclid" | "user.ttp" | "event_id" | "user_data.fbc" | "user_data.fbp"
            );
            for r in scan_text(s, opaque) {
                out.push(format!("detector:{field}:{r}"));
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clean_payload_passes() {
        let ev = json!({"event":"Schedule","event_time":1767225600,"event_id":"evt_9f2c",
            "user":{"ttclid":"E.C.P.CqgBAbc123XyZ","email":"a".repeat(64)},
            "properties":{"value":10,"currency":"USD"},
            "page":{"url":"https://clinic.example/booking"}});
        assert_eq!(scan_payload(&ev), Vec::<String>::new());
    }

    #[test]
    fn each_kind_is_caught() {
        let cases = [
            ("https://c.example/wegovy", "health_term"),
            ("jane.doe@example.com", "email"),
            ("jane.doe%40example.com", "email"),
            ("call (555) 123-4567", "phone"),
            ("+15551234567", "phone"),
            ("dob 1984-03-07", "date"),
            ("03/07/1984", "date"),
            ("March 7, 1984", "date"),
            ("123-45-6789", "ssn"),
            ("https://c.example/?q=type%202%20diabetes", "health_term"),
        ];
        for (text, kind) in cases {
            let ev = json!({"page": {"url": text}});
            let r = scan_payload(&ev);
            assert!(r.iter().any(|x| x.contains(kind)), "{text}: {r:?}");
            assert!(
                r.iter().all(|x| !x.contains(text)),
                "reason leaks the value"
            );
        }
    }

    #[test]
    fn unhashed_email_field_is_caught() {
        let r = scan_payload(&json!({"user": {"email": "abc"}}));
        assert_eq!(r, vec!["detector:user.email:not_hashed"]);
    }
}
