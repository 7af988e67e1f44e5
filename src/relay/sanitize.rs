//! Sanitize by construction: derive allowlisted values from an incoming event once, then let
//! each destination build its own event from them.
//!
//! Nothing from the incoming event is copied through by default. What a destination can receive:
//! a mapped standard event name, `event_time`, an `event_id` (the caller's only if it has an id's
//! shape, see [`super::ids`]), click and browser ids that have their platform's format, hashed
//! email/phone (opt-in per destination), `value`/`currency` (if the mapping allows), a generic
//! page URL from the configured categories, and for Meta the client IP and user agent (opt-in).
//! Each destination's result is then scanned by [`super::detector`] and blocked on any match.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::{CompiledCategory, Destination, DestinationKind, MappingRule, RelayConfig};
use super::destinations::{meta, tiktok};
use super::detector;
use super::event::IncomingEvent;
use super::ids;

/// ISO 4217 codes accepted for `currency`.
pub const CURRENCIES: &[&str] = &[
    "AED", "ARS", "AUD", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK", "DKK", "EUR", "GBP",
    "HKD", "HUF", "IDR", "ILS", "INR", "JPY", "KRW", "MXN", "MYR", "NOK", "NZD", "PEN", "PHP",
    "PLN", "RON", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "USD", "VND", "ZAR",
];

/// Oldest accepted event, seconds before now (Meta refuses older ones; TikTok's safe policy).
pub const MAX_AGE_SECS: i64 = 7 * 24 * 3600;
/// Latest accepted event, seconds after now.
pub const MAX_FUTURE_SECS: i64 = 600;

/// Values derived from one incoming event, shared by every destination. Everything here is
/// either built by the relay or an allowlisted value that passed its format check.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// Unix seconds.
    pub event_time: i64,
    /// Outgoing event id.
    pub event_id: String,
    /// Generic page URL.
    pub page_url: String,
    /// TikTok click id.
    pub ttclid: Option<String>,
    /// TikTok `_ttp`.
    pub ttp: Option<String>,
    /// Meta `fbc` (from `fbc`, or built from `fbclid`).
    pub fbc: Option<String>,
    /// Meta `fbp`.
    pub fbp: Option<String>,
    /// Normalised email (trimmed, lower-case); only ever sent hashed.
    pub email: Option<String>,
    /// Phone as E.164 with `+`; only ever sent hashed.
    pub phone: Option<String>,
    /// Value and ISO currency, when both are valid.
    pub value: Option<(f64, &'static str)>,
    /// Caller's test event code (`TEST<digits>`).
    pub test_event_code: Option<String>,
    /// Client address (Meta, opt-in).
    pub client_ip: Option<IpAddr>,
    /// Client user agent (Meta, opt-in).
    pub user_agent: Option<String>,
}

/// Request facts that are not in the body.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// Client address of a browser caller (peer or configured proxy header).
    pub client_ip: Option<IpAddr>,
    /// `User-Agent` of a browser caller.
    pub user_agent: Option<String>,
}

/// A sanitized event ready for one destination's outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    /// Outgoing `event_id`.
    pub event_id: String,
    /// Test event code, if this is a test event.
    pub test_event_code: Option<String>,
    /// The destination's event as JSON text.
    pub payload: String,
    /// Unix seconds.
    pub event_time: i64,
}

/// What one destination gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Forward this event.
    Forward(OutgoingEvent),
    /// Not forwarded by policy (unmapped name, no match key...).
    Dropped,
    /// The outgoing payload tripped the PHI detector.
    Blocked,
}

/// One destination's decision with its reasons (codes and relay-built names, never values).
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationResult {
    /// Index into the configured destinations.
    pub index: usize,
    /// Forward, drop or block.
    pub verdict: Verdict,
    /// Mapped event name, when there was a mapping.
    pub mapped: Option<String>,
    /// Reasons specific to this destination.
    pub reasons: Vec<String>,
}

/// The decision for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sanitized {
    /// Reasons that concern the event as a whole.
    pub reasons: Vec<String>,
    /// Event-level drop (e.g. `event_time_out_of_window`): no destination is considered.
    pub dropped: Option<&'static str>,
    /// Outgoing event id, when the event got that far.
    pub event_id: Option<String>,
    /// Per destination, in config order.
    pub destinations: Vec<DestinationResult>,
}

/// One destination's compiled rules.
#[derive(Debug, Clone)]
pub struct DestinationRules {
    /// The configured destination.
    pub dest: Destination,
    /// `from` -> rule.
    pub mappings: HashMap<String, MappingRule>,
}

/// The compiled allowlist builder.
#[derive(Debug, Clone)]
pub struct Sanitizer {
    categories: Vec<CompiledCategory>,
    default_url: String,
    destinations: Vec<DestinationRules>,
    id_salt: Vec<u8>,
    field_key: [u8; 32],
    /// Relay-built strings that passed the detector once at start (category URLs, mapped
    /// event names, `website`); the per-event scan skips them.
    vetted: HashSet<String>,
}

impl Sanitizer {
    /// Build from config; `id_salt` keys derived event ids and field-name hashes.
    pub fn new(cfg: &RelayConfig, id_salt: Vec<u8>) -> Sanitizer {
        let categories = cfg.compiled_categories();
        let default_url = url::Url::parse(&categories[0].url)
            .map(|u| u.origin().ascii_serialization() + "/")
            .unwrap_or_else(|_| categories[0].url.clone());
        let destinations = cfg
            .destinations
            .iter()
            .map(|d| DestinationRules {
                mappings: d
                    .mappings
                    .iter()
                    .map(|m| (m.from.clone(), m.clone()))
                    .collect(),
                dest: d.clone(),
            })
            .collect::<Vec<DestinationRules>>();
        let vetted = categories
            .iter()
            .map(|c| c.url.clone())
            .chain([default_url.clone(), "website".to_string()])
            .chain(
                destinations
                    .iter()
                    .flat_map(|d| d.dest.mappings.iter().map(|m| m.to.clone())),
            )
            .filter(|s| detector::scan_text(s, false).is_empty())
            .collect();
        Sanitizer {
            vetted,
            categories,
            default_url,
            destinations,
            field_key: field_key(&id_salt),
            id_salt,
        }
    }

    /// The configured destinations, in order.
    pub fn destinations(&self) -> impl Iterator<Item = &Destination> {
        self.destinations.iter().map(|d| &d.dest)
    }

    /// Build every destination's event for `ev` received at `now` (Unix seconds).
    pub fn sanitize(&self, ev: &IncomingEvent, facts: &RequestFacts, now: i64) -> Sanitized {
        let mut reasons: Vec<String> = ev
            .other_fields
            .iter()
            .map(|name| self.unknown_field_reason(name))
            .collect();
        let event_time = ev.event_time.unwrap_or(now);
        if event_time < now - MAX_AGE_SECS || event_time > now + MAX_FUTURE_SECS {
            return Sanitized {
                reasons,
                dropped: Some("event_time_out_of_window"),
                event_id: None,
                destinations: Vec::new(),
            };
        }
        let p = self.prepare(ev, facts, event_time, now, &mut reasons);
        let destinations = self
            .destinations
            .iter()
            .enumerate()
            .map(|(index, rules)| self.for_destination(index, rules, ev, &p))
            .collect();
        Sanitized {
            reasons,
            dropped: None,
            event_id: Some(p.event_id),
            destinations,
        }
    }

    fn prepare(
        &self,
        ev: &IncomingEvent,
        facts: &RequestFacts,
        event_time: i64,
        now: i64,
        reasons: &mut Vec<String>,
    ) -> Prepared {
        let now_ms = now * 1000;
        let mut click =
            |name: &str, v: &Option<String>, check: &dyn Fn(&str) -> Result<(), ids::IdProblem>| {
                match v.as_deref().map(|s| (s, check(s))) {
                    Some((s, Ok(()))) => Some(s.to_string()),
                    Some((_, Err(p))) => {
                        reasons.push(format!("invalid_click_id:{name}:{}", p.code()));
                        None
                    }
                    None => None,
                }
            };
        let ttclid = click("ttclid", &ev.ttclid, &ids::check_ttclid);
        let ttp = click("ttp", &ev.ttp, &ids::check_ttp);
        let fbp = click("fbp", &ev.fbp, &|s| ids::check_fbp(s, now_ms));
        let fbc = click("fbc", &ev.fbc, &|s| ids::check_fbc(s, now_ms));
        let fbclid = click("fbclid", &ev.fbclid, &ids::check_fbclid);
        // Meta's documented way to build fbc from a click id: fb.1.<ms>.<fbclid>.
        let fbc = fbc.or_else(|| fbclid.map(|c| format!("fb.1.{}.{c}", event_time * 1000)));

        let email = ev.email.as_deref().and_then(|e| {
            let n = normalize_email(e);
            if n.is_none() {
                reasons.push("invalid_field:email".into());
            }
            n
        });
        let phone = ev.phone.as_deref().and_then(|e| {
            let n = normalize_phone(e);
            if n.is_none() {
                reasons.push("invalid_field:phone_not_e164".into());
            }
            n
        });
        let value = match (ev.value, ev.currency.as_deref()) {
            (Some(v), Some(c)) => {
                let c = c.to_ascii_uppercase();
                match CURRENCIES.iter().find(|k| **k == c) {
                    Some(k) => Some((v, *k)),
                    None => {
                        reasons.push("invalid_field:currency".into());
                        None
                    }
                }
            }
            (Some(_), None) => {
                reasons.push("dropped_field:value_without_currency".into());
                None
            }
            (None, Some(_)) => {
                reasons.push("dropped_field:currency_without_value".into());
                None
            }
            (None, None) => None,
        };

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

        // A caller id with the wrong shape is not used at all, not even hashed: a keyed hash of
        // a phone number can be reversed by anyone holding the key, by trying every number.
        let caller_id = match ev
            .event_id
            .as_deref()
            .map(|id| (id, ids::check_event_id(id)))
        {
            Some((id, Ok(()))) if detector::scan_text(id, true).is_empty() => Some(id),
            Some((_, Ok(()))) => {
                reasons.push("event_id_replaced:detector".into());
                None
            }
            Some((_, Err(p))) => {
                reasons.push(format!("event_id_replaced:{}", p.code()));
                None
            }
            None => None,
        };
        let event_id = match caller_id {
            Some(id) => id.to_string(),
            None => {
                if ev.event_id.is_none() {
                    reasons.push("event_id_derived".into());
                }
                self.derive_id(&[
                    "auto",
                    &ev.event,
                    &event_time.to_string(),
                    ttclid.as_deref().unwrap_or(""),
                    ttp.as_deref().unwrap_or(""),
                    fbc.as_deref().unwrap_or(""),
                    fbp.as_deref().unwrap_or(""),
                ])
            }
        };

        let test_event_code = match &ev.test_event_code {
            Some(c) if super::config::valid_test_code(c) => Some(c.clone()),
            Some(_) => {
                reasons.push("invalid_field:test_event_code".into());
                None
            }
            None => None,
        };

        Prepared {
            event_time,
            event_id,
            page_url,
            ttclid,
            ttp,
            fbc,
            fbp,
            email,
            phone,
            value,
            test_event_code,
            client_ip: ev.client_ip.or(facts.client_ip),
            user_agent: ev
                .client_user_agent
                .clone()
                .or_else(|| facts.user_agent.clone())
                .filter(|ua| valid_user_agent(ua)),
        }
    }

    fn for_destination(
        &self,
        index: usize,
        rules: &DestinationRules,
        ev: &IncomingEvent,
        p: &Prepared,
    ) -> DestinationResult {
        let mut reasons = Vec::new();
        let Some(rule) = rules.mappings.get(&ev.event) else {
            reasons.push("unmapped_event".into());
            return DestinationResult {
                index,
                verdict: Verdict::Dropped,
                mapped: None,
                reasons,
            };
        };
        let mapped = Some(rule.to.clone());
        let built = match rules.dest.kind {
            DestinationKind::Tiktok => tiktok::build(p, &rules.dest, rule, &mut reasons),
            DestinationKind::Meta => meta::build(p, &rules.dest, rule, &mut reasons),
        };
        let data = match built {
            Ok(v) => v,
            Err(why) => {
                reasons.push(why.to_string());
                return DestinationResult {
                    index,
                    verdict: Verdict::Dropped,
                    mapped,
                    reasons,
                };
            }
        };
        // The event id was scanned in `prepare`, the same way the payload scan would.
        let vetted = |s: &str| s == p.event_id || self.vetted.contains(s);
        let hits = detector::scan_payload_vetted(&data, &vetted);
        if !hits.is_empty() {
            reasons.extend(hits);
            return DestinationResult {
                index,
                verdict: Verdict::Blocked,
                mapped,
                reasons,
            };
        }
        let test_event_code = rules
            .dest
            .test_event_code
            .clone()
            .or_else(|| p.test_event_code.clone());
        DestinationResult {
            index,
            verdict: Verdict::Forward(OutgoingEvent {
                event_id: p.event_id.clone(),
                test_event_code,
                // `to_string` would go through `fmt::Display` and its adapters: serde's writer is
                // several times cheaper for the same bytes.
                payload: serde_json::to_string(&data).expect("a JSON value always serialises"),
                event_time: p.event_time,
            }),
            mapped,
            reasons,
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

    /// `unknown_field:<keyed hash>:<length>`: the audit log can tell fields apart and count them
    /// without holding the name a caller wrote.
    pub fn unknown_field_reason(&self, name: &str) -> String {
        unknown_field_reason(&self.field_key, name)
    }
}

/// The key for field-name hashes, derived from the per-database salt.
pub fn field_key(salt: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"pixelwatch-relay field names\0");
    h.update(salt);
    h.finalize().into()
}

/// `unknown_field:<first 12 hex digits of HMAC-SHA256(key, name)>:<length in characters>`.
pub fn unknown_field_reason(key: &[u8; 32], name: &str) -> String {
    format!(
        "unknown_field:{}:{}",
        field_hash(key, name),
        name.chars().count()
    )
}

/// First 12 hex digits of HMAC-SHA256(key, name).
pub fn field_hash(key: &[u8; 32], name: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(name.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..6])
}

/// A user agent is forwarded (opt-in) only as printable ASCII of bounded length.
fn valid_user_agent(ua: &str) -> bool {
    !ua.is_empty() && ua.len() <= 512 && ua.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Email normalisation for both platforms: trim, lowercase; `None` if it is not an address.
pub fn normalize_email(e: &str) -> Option<String> {
    let n = e.trim().to_lowercase();
    let (local, domain) = n.split_once('@')?;
    (!local.is_empty() && domain.contains('.') && !n.contains(char::is_whitespace)).then_some(n)
}

/// Phone normalisation: E.164 with a leading '+', separators removed.
pub fn normalize_phone(p: &str) -> Option<String> {
    let n: String = p
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let digits = n.strip_prefix('+')?;
    let ok = (7..=15).contains(&digits.len())
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(n)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// What a destination's builder returns: its event, or why it is not sent (a reason code).
pub type Built = Result<Value, &'static str>;

#[cfg(test)]
#[path = "sanitize_tests.rs"]
mod tests;
