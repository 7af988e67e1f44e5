//! Sanitize by construction: build the outgoing TikTok event from an allowlist of derived values.
//!
//! Nothing from the incoming event is copied through by default. The outgoing event holds only:
//! a mapped standard event name, `event_time`, an `event_id` (the caller's if it is a UUID or hex
//! id, else a keyed hash of it), `user.ttclid`, `user.ttp` (if enabled), hashed email/phone (if enabled),
//! `properties.value`/`currency` (if the mapping allows) and a generic `page.url` from the
//! configured categories. Then [`super::detector`] scans the result and blocks on any match.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::config::{CompiledCategory, MappingRule, RelayConfig};
use super::detector;
use super::event::IncomingEvent;

/// ISO 4217 codes accepted for `properties.currency`.
pub const CURRENCIES: &[&str] = &[
    "AED", "ARS", "AUD", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK", "DKK", "EUR", "GBP",
    "HKD", "HUF", "IDR", "ILS", "INR", "JPY", "KRW", "MXN", "MYR", "NOK", "NZD", "PEN", "PHP",
    "PLN", "RON", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "USD", "VND", "ZAR",
];

/// Oldest accepted event, seconds before now.
pub const MAX_AGE_SECS: i64 = 7 * 24 * 3600;
/// Latest accepted event, seconds after now.
pub const MAX_FUTURE_SECS: i64 = 600;

/// Caller ids passed through unchanged: UUIDs and 16-64 hex digits, shapes that cannot carry a
/// name or a word. Anything else is replaced by a keyed hash of it (stable, not reversible
/// without the per-installation salt).
static OPAQUE_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{16,64})$")
        .expect("id regex")
});
static CLICK_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9._~+/=-]{4,512}$").expect("click id regex"));
/// TikTok test event codes look like `TEST12345`; nothing else is accepted per event.
static TEST_CODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^TEST[0-9]{1,12}$").expect("test code regex"));
static FIELD_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_.-]{1,64}$").expect("field regex"));
static E164: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\+[1-9]\d{6,14}$").expect("e164 regex"));

/// A sanitized event ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    /// Outgoing `event_id`.
    pub event_id: String,
    /// Mapped standard event name.
    pub event: String,
    /// Test event code, if this is a test event.
    pub test_event_code: Option<String>,
    /// The `data[]` element as JSON text.
    pub payload: String,
}

/// What the sanitizer decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Forward this event.
    Forward(OutgoingEvent),
    /// Not forwarded by policy (unmapped name, no click id, stale time...).
    Dropped,
    /// The outgoing payload tripped the PHI detector.
    Blocked,
}

/// The decision plus reasons: codes and field names, never values.
#[derive(Debug, Clone, PartialEq)]
pub struct Sanitized {
    /// Forward, drop or block.
    pub verdict: Verdict,
    /// Reason codes (`unmapped_event`, `dropped_field:email`, `detector:page.url:email`...).
    pub reasons: Vec<String>,
    /// Mapped event name, when there was a mapping.
    pub mapped: Option<String>,
}

/// The compiled allowlist builder.
#[derive(Debug, Clone)]
pub struct Sanitizer {
    mappings: HashMap<String, MappingRule>,
    categories: Vec<CompiledCategory>,
    default_url: String,
    send_ttp: bool,
    send_email: bool,
    send_phone: bool,
    config_test_code: Option<String>,
    id_salt: Vec<u8>,
}

impl Sanitizer {
    /// Build from config; `id_salt` keys derived event ids (per-installation secret).
    pub fn new(cfg: &RelayConfig, id_salt: Vec<u8>) -> Sanitizer {
        let categories = cfg.compiled_categories();
        let default_url = url::Url::parse(&categories[0].url)
            .map(|u| u.origin().ascii_serialization() + "/")
            .unwrap_or_else(|_| categories[0].url.clone());
        Sanitizer {
            mappings: cfg
                .mappings
                .iter()
                .map(|m| (m.from.clone(), m.clone()))
                .collect(),
            categories,
            default_url,
            send_ttp: cfg.tiktok.send_ttp,
            send_email: cfg.tiktok.send_hashed_email,
            send_phone: cfg.tiktok.send_hashed_phone,
            config_test_code: cfg.tiktok.test_event_code.clone(),
            id_salt,
        }
    }

    /// Build the outgoing event for `ev` received at `now` (Unix seconds).
    pub fn sanitize(&self, ev: &IncomingEvent, now: i64) -> Sanitized {
        let mut reasons = Vec::new();
        for name in &ev.other_fields {
            reasons.push(format!("dropped_field:{}", safe_field_name(name)));
        }
        let Some(rule) = self.mappings.get(&ev.event) else {
            reasons.push("unmapped_event".into());
            return Sanitized {
                verdict: Verdict::Dropped,
                reasons,
                mapped: None,
            };
        };
        let mapped = Some(rule.to.clone());
        let drop = |mut reasons: Vec<String>, why: &str| {
            reasons.push(why.to_string());
            Sanitized {
                verdict: Verdict::Dropped,
                reasons,
                mapped: Some(rule.to.clone()),
            }
        };

        let event_time = ev.event_time.unwrap_or(now);
        if event_time < now - MAX_AGE_SECS || event_time > now + MAX_FUTURE_SECS {
            return drop(reasons, "event_time_out_of_window");
        }

        let mut user = Map::new();
        match &ev.ttclid {
            Some(c) if CLICK_ID.is_match(c) => {
                user.insert("ttclid".into(), json!(c));
            }
            Some(_) => reasons.push("invalid_field:ttclid".into()),
            None => {}
        }
        match &ev.ttp {
            Some(t) if self.send_ttp && CLICK_ID.is_match(t) => {
                user.insert("ttp".into(), json!(t));
            }
            Some(_) if self.send_ttp => reasons.push("invalid_field:ttp".into()),
            Some(_) => reasons.push("dropped_field:ttp".into()),
            None => {}
        }
        if let Some(e) = &ev.email {
            match normalize_email(e) {
                Some(n) if self.send_email => {
                    user.insert("email".into(), json!(sha256_hex(&n)));
                }
                None if self.send_email => reasons.push("invalid_field:email".into()),
                _ => reasons.push("dropped_field:email".into()),
            }
        }
        if let Some(p) = &ev.phone {
            match normalize_phone(p) {
                Some(n) if self.send_phone => {
                    user.insert("phone".into(), json!(sha256_hex(&n)));
                }
                None if self.send_phone => reasons.push("invalid_field:phone_not_e164".into()),
                _ => reasons.push("dropped_field:phone".into()),
            }
        }
        if user.is_empty() {
            return drop(reasons, "no_match_key");
        }

        let mut properties = Map::new();
        if ev.value.is_some() || ev.currency.is_some() {
            if !rule.allow_value {
                if ev.value.is_some() {
                    reasons.push("dropped_field:value".into());
                }
                if ev.currency.is_some() {
                    reasons.push("dropped_field:currency".into());
                }
            } else {
                let currency = ev.currency.as_deref().map(str::to_ascii_uppercase);
                match (ev.value, currency) {
                    (Some(v), Some(c)) if CURRENCIES.contains(&c.as_str()) => {
                        properties.insert("value".into(), json!(v));
                        properties.insert("currency".into(), json!(c));
                    }
                    (Some(_), Some(_)) => reasons.push("invalid_field:currency".into()),
                    (Some(_), None) => reasons.push("dropped_field:value_without_currency".into()),
                    (None, Some(_)) => reasons.push("dropped_field:currency".into()),
                    (None, None) => {}
                }
            }
        }

        let page_url = match ev.url.as_deref().map(url::Url::parse) {
            Some(Ok(u)) => match self
                .categories
                .iter()
                .find(|c| c.pattern.is_match(u.path()))
            {
                Some(c) => c.url.clone(),
                None => {
                    reasons.push("page_url_uncategorized".into());
                    self.default_url.clone()
                }
            },
            Some(Err(_)) => {
                reasons.push("invalid_field:url".into());
                self.default_url.clone()
            }
            None => self.default_url.clone(),
        };
        if ev.url.is_some() {
            reasons.push("page_url_generalized".into());
        }

        let event_id = match &ev.event_id {
            Some(id) if OPAQUE_ID.is_match(id) && detector::scan_text(id, true).is_empty() => {
                id.clone()
            }
            Some(id) => {
                reasons.push("event_id_derived".into());
                self.derive_id(&["caller", id])
            }
            None => self.derive_id(&[
                "auto",
                &rule.to,
                &event_time.to_string(),
                ev.ttclid.as_deref().unwrap_or(""),
                ev.ttp.as_deref().unwrap_or(""),
            ]),
        };

        let test_event_code = match (&self.config_test_code, &ev.test_event_code) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(c)) if TEST_CODE.is_match(c) => Some(c.clone()),
            (None, Some(_)) => {
                reasons.push("invalid_field:test_event_code".into());
                None
            }
            (None, None) => None,
        };

        let mut data = json!({
            "event": rule.to,
            "event_time": event_time,
            "event_id": event_id,
            "user": Value::Object(user),
            "page": {"url": page_url},
        });
        if !properties.is_empty() {
            data["properties"] = Value::Object(properties);
        }
        let hits = detector::scan_payload(&data);
        if !hits.is_empty() {
            reasons.extend(hits);
            return Sanitized {
                verdict: Verdict::Blocked,
                reasons,
                mapped,
            };
        }
        Sanitized {
            verdict: Verdict::Forward(OutgoingEvent {
                event_id,
                event: rule.to.clone(),
                test_event_code,
                payload: data.to_string(),
            }),
            reasons,
            mapped,
        }
    }

    fn derive_id(&self, parts: &[&str]) -> String {
        let mut h = Sha256::new();
        h.update(&self.id_salt);
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        format!("pw-{}", &hex::encode(h.finalize())[..32])
    }
}

/// A field name safe to store in the audit log, or `<redacted>`.
pub fn safe_field_name(name: &str) -> String {
    if FIELD_NAME.is_match(name) && detector::scan_text(name, false).is_empty() {
        name.to_string()
    } else {
        "<redacted>".to_string()
    }
}

/// TikTok email normalisation: trim, lowercase; `None` if it is not an address.
pub fn normalize_email(e: &str) -> Option<String> {
    let n = e.trim().to_lowercase();
    let (local, domain) = n.split_once('@')?;
    (!local.is_empty() && domain.contains('.') && !n.contains(char::is_whitespace)).then_some(n)
}

/// TikTok phone normalisation: E.164 with a leading '+', separators removed.
pub fn normalize_phone(p: &str) -> Option<String> {
    let n: String = p
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    E164.is_match(&n).then_some(n)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> RelayConfig {
        RelayConfig::parse(
            &format!(
                r#"
[server]
listen = "127.0.0.1:0"
[database]
path = "r.db"
[tiktok]
pixel_code = "C1"
{extra}
[[mapping]]
from = "BookedGLP1Consultation"
to = "Schedule"
[[mapping]]
from = "PaidDeposit"
to = "Purchase"
allow_value = true
[[page_category]]
path_pattern = "^/(book|schedule)"
url = "https://clinic.example/booking"
[[page_category]]
path_pattern = ".*"
url = "https://clinic.example/"
"#
            ),
            "t",
        )
        .expect("config")
    }

    const NOW: i64 = 1_790_000_000;

    fn ev(name: &str) -> IncomingEvent {
        IncomingEvent {
            event: name.into(),
            ttclid: Some("E.C.P.abc123".into()),
            event_time: Some(NOW - 5),
            ..Default::default()
        }
    }

    #[test]
    fn the_issue_example_becomes_a_bare_schedule() {
        let s = Sanitizer::new(&cfg(""), b"salt".to_vec());
        let mut e = ev("BookedGLP1Consultation");
        e.email = Some("jane@example.com".into());
        e.url = Some("https://clinic.example/book/glp1-weight-loss?dob=1980-01-02".into());
        e.event_id = Some("4f1c2a9e-0b7d-4c3e-9a51-2f6d8e0c1b77".into());
        let out = s.sanitize(&e, NOW);
        let Verdict::Forward(o) = &out.verdict else {
            panic!("{out:?}")
        };
        let v: Value = serde_json::from_str(&o.payload).expect("json");
        assert_eq!(
            v,
            json!({"event":"Schedule","event_time":NOW-5,"event_id":"4f1c2a9e-0b7d-4c3e-9a51-2f6d8e0c1b77",
                "user":{"ttclid":"E.C.P.abc123"},"page":{"url":"https://clinic.example/booking"}})
        );
        assert!(out.reasons.contains(&"dropped_field:email".to_string()));
    }

    #[test]
    fn unmapped_event_is_dropped_with_reason() {
        let s = Sanitizer::new(&cfg(""), vec![]);
        let out = s.sanitize(&ev("OzempicRefillRequested"), NOW);
        assert_eq!(out.verdict, Verdict::Dropped);
        assert_eq!(out.reasons, vec!["unmapped_event"]);
    }

    #[test]
    fn value_only_where_mapping_allows() {
        let s = Sanitizer::new(&cfg(""), vec![]);
        let mut e = ev("BookedGLP1Consultation");
        e.value = Some(99.0);
        e.currency = Some("USD".into());
        let out = s.sanitize(&e, NOW);
        let Verdict::Forward(o) = out.verdict else {
            panic!()
        };
        assert!(!o.payload.contains("properties"), "{}", o.payload);
        let mut e = ev("PaidDeposit");
        e.value = Some(99.0);
        e.currency = Some("usd".into());
        let Verdict::Forward(o) = s.sanitize(&e, NOW).verdict else {
            panic!()
        };
        assert!(
            o.payload
                .contains(r#""properties":{"currency":"USD","value":99.0}"#),
            "{}",
            o.payload
        );
    }

    #[test]
    fn hashing_follows_tiktok_normalisation() {
        let s = Sanitizer::new(
            &cfg("send_hashed_email = true\nsend_hashed_phone = true"),
            vec![],
        );
        let mut e = ev("BookedGLP1Consultation");
        e.email = Some("  Jane.Doe@Example.COM ".into());
        e.phone = Some("+1 (555) 010-9999".into());
        let Verdict::Forward(o) = s.sanitize(&e, NOW).verdict else {
            panic!()
        };
        assert!(o.payload.contains(&sha256_hex("jane.doe@example.com")));
        assert!(o.payload.contains(&sha256_hex("+15550109999")));
        // Independent vector (Python hashlib).
        assert_eq!(
            sha256_hex("jane.doe@example.com"),
            "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
        );
    }

    #[test]
    fn phi_event_id_is_replaced_by_derived_id() {
        let s = Sanitizer::new(&cfg(""), b"k".to_vec());
        let mut e = ev("BookedGLP1Consultation");
        e.event_id = Some("jane@example.com".into());
        let Verdict::Forward(o) = s.sanitize(&e, NOW).verdict else {
            panic!()
        };
        assert!(o.event_id.starts_with("pw-") && !o.payload.contains("jane"));
        let Verdict::Forward(o2) = s.sanitize(&e, NOW).verdict else {
            panic!()
        };
        assert_eq!(o.event_id, o2.event_id, "derived ids are stable");
    }

    #[test]
    fn stale_or_clickless_events_are_dropped() {
        let s = Sanitizer::new(&cfg(""), vec![]);
        let mut e = ev("BookedGLP1Consultation");
        e.event_time = Some(NOW - MAX_AGE_SECS - 1);
        assert_eq!(
            s.sanitize(&e, NOW).reasons,
            vec!["event_time_out_of_window"]
        );
        let mut e = ev("BookedGLP1Consultation");
        e.ttclid = None;
        assert_eq!(s.sanitize(&e, NOW).reasons, vec!["no_match_key"]);
    }

    #[test]
    fn planted_term_in_click_id_is_blocked() {
        let s = Sanitizer::new(&cfg(""), vec![]);
        let mut e = ev("BookedGLP1Consultation");
        e.ttclid = Some("E.C.P.wegovy".into());
        let out = s.sanitize(&e, NOW);
        assert_eq!(out.verdict, Verdict::Blocked);
        assert!(
            out.reasons
                .iter()
                .any(|r| r == "detector:user.ttclid:health_term:glp1_drug")
        );
    }
}
