//! Consent gate: consent requests, records, their in-memory index, and the per-event decision.
//!
//! Keys are stored hashed (`sha256("token:" + t)` or `sha256("subject:" + s)`), so the database
//! holds no usable token and no patient identifier. `source`, `policy_version` and `purposes`
//! are stored only when they are configured values (or match the configured pattern).
//!
//! Ordering: the decision with the latest `decided_at` wins, whatever order decisions arrive
//! in (a back-end sync may deliver an old grant after a newer refusal); on equal `decided_at` a
//! refusal wins over a grant; then the later record. Decisions dated more than
//! `consent.clock_skew_secs` in the future are refused at the door, so one cannot pre-empt
//! every later decision. Loading at start applies the same rule, so it survives restarts.

use std::collections::HashMap;
use std::sync::RwLock;

use regex::Regex;
use serde_json::Value;

use super::config::{ConsentConfig, RelayConfig};
use super::event::{InputError, bad, type_name as kind};
use super::sanitize::sha256_hex;

/// The purpose that allows forwarding to ad platforms.
pub const ADVERTISING: &str = "advertising";

/// Body of `POST /v1/consent`, after type checks.
#[derive(Debug, Clone, Default)]
pub struct ConsentRequest {
    /// Existing consent token to update (browser); a new one is issued when absent.
    pub consent_token: Option<String>,
    /// Subject id (back-end callers), e.g. a booking-system pseudonym.
    pub subject: Option<String>,
    /// Whether the listed purposes were granted.
    pub granted: bool,
    /// Purposes, e.g. `["advertising"]`.
    pub purposes: Vec<String>,
    /// When the person decided (Unix seconds); defaults to now.
    pub decided_at: Option<i64>,
    /// Where the decision came from (`banner`, `intake_form`...).
    pub source: String,
    /// Version of the privacy policy shown.
    pub policy_version: String,
}

const CONSENT_FIELDS: &str =
    "consent_token, subject, granted, purposes, decided_at, source, policy_version";

impl ConsentRequest {
    /// Type-check a parsed body; errors name the field and rule, never the value or an
    /// unknown field's name.
    pub fn from_json(v: Value) -> Result<ConsentRequest, InputError> {
        let Value::Object(mut o) = v else {
            return Err(bad("body", format!("expected an object, got {}", kind(&v))));
        };
        let mut text = |k: &str| -> Result<Option<String>, InputError> {
            match o.remove(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(bad(k, format!("expected a string, got {}", kind(&other)))),
            }
        };
        let consent_token = text("consent_token")?;
        let subject = text("subject")?;
        let source = text("source")?.ok_or_else(|| bad("source", "missing"))?;
        let policy_version =
            text("policy_version")?.ok_or_else(|| bad("policy_version", "missing"))?;
        let granted = match o.remove("granted") {
            Some(Value::Bool(b)) => b,
            None => return Err(bad("granted", "missing")),
            Some(other) => {
                return Err(bad(
                    "granted",
                    format!("expected true or false, got {}", kind(&other)),
                ));
            }
        };
        let purposes = match o.remove("purposes") {
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|p| match p {
                    Value::String(s) => Ok(s),
                    other => Err(bad(
                        "purposes",
                        format!("expected strings, got {}", kind(&other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => return Err(bad("purposes", "missing")),
            Some(other) => {
                return Err(bad(
                    "purposes",
                    format!("expected an array, got {}", kind(&other)),
                ));
            }
        };
        let decided_at = match o.remove("decided_at") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(t) if t > 100_000_000_000 => {
                    return Err(bad(
                        "decided_at",
                        "looks like milliseconds; send integer Unix seconds",
                    ));
                }
                Some(t) if t >= 0 => Some(t),
                _ => {
                    return Err(bad(
                        "decided_at",
                        "number out of range (integer Unix seconds, 0 to 100000000000)",
                    ));
                }
            },
            Some(other) => {
                return Err(bad(
                    "decided_at",
                    format!("expected integer Unix seconds, got {}", kind(&other)),
                ));
            }
        };
        if !o.is_empty() {
            return Err(bad(
                "body",
                format!(
                    "holds {} field(s) this endpoint does not accept (names are not echoed); accepted: {CONSENT_FIELDS}",
                    o.len()
                ),
            ));
        }
        Ok(ConsentRequest {
            consent_token,
            subject,
            granted,
            purposes,
            decided_at,
            source,
            policy_version,
        })
    }
}

/// The configured rules a consent request must meet before anything is stored.
#[derive(Debug, Clone)]
pub struct ConsentRules {
    cfg: ConsentConfig,
    policy_pattern: Regex,
}

impl ConsentRules {
    /// Compile from config.
    pub fn new(cfg: &RelayConfig) -> ConsentRules {
        ConsentRules {
            cfg: cfg.consent.clone(),
            policy_pattern: cfg.policy_version_regex(),
        }
    }

    /// Check a request against the configured values; returns the decision time.
    pub fn check(&self, req: &ConsentRequest, now: i64) -> Result<i64, InputError> {
        let c = &self.cfg;
        if !c.sources.contains(&req.source) {
            return Err(bad(
                "source",
                format!(
                    "must be one of the configured consent.sources ({})",
                    c.sources.join(", ")
                ),
            ));
        }
        let pv_ok = if c.accepted_policy_versions.is_empty() {
            self.policy_pattern.is_match(&req.policy_version)
        } else {
            c.accepted_policy_versions.contains(&req.policy_version)
        };
        if !pv_ok {
            return Err(bad(
                "policy_version",
                if c.accepted_policy_versions.is_empty() {
                    "must match consent.policy_version_pattern".to_string()
                } else {
                    "must be one of consent.accepted_policy_versions".to_string()
                },
            ));
        }
        if req.purposes.is_empty() || req.purposes.iter().any(|p| !c.purposes.contains(p)) {
            return Err(bad(
                "purposes",
                format!(
                    "must be a non-empty list of configured consent.purposes ({})",
                    c.purposes.join(", ")
                ),
            ));
        }
        let decided_at = req.decided_at.unwrap_or(now);
        if decided_at > now + c.clock_skew_secs as i64 {
            return Err(bad(
                "decided_at",
                format!(
                    "is more than {} seconds in the future (consent.clock_skew_secs)",
                    c.clock_skew_secs
                ),
            ));
        }
        Ok(decided_at)
    }
}

/// A consent record to store.
#[derive(Debug, Clone)]
pub struct NewConsent {
    /// Hashed key.
    pub key_hash: String,
    /// Granted (false when `Sec-GPC: 1`).
    pub granted: bool,
    /// Purposes.
    pub purposes: Vec<String>,
    /// Source.
    pub source: String,
    /// Policy version.
    pub policy_version: String,
    /// Whether the request carried `Sec-GPC: 1`.
    pub gpc: bool,
    /// Decision time, Unix seconds.
    pub decided_at: i64,
}

#[derive(Debug, Clone)]
struct State {
    id: i64,
    granted: bool,
    advertising: bool,
    policy_version: String,
    decided_at: i64,
}

impl State {
    /// Order of decisions: later `decided_at`, then refusal over grant, then later record.
    fn rank(&self) -> (i64, bool, i64) {
        (self.decided_at, !self.granted, self.id)
    }
}

/// Result of the consent gate for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Forward; names the consent record or the configured legal basis.
    Allowed {
        /// Consent record id.
        consent_id: Option<i64>,
        /// Legal basis from config, when used instead of consent.
        legal_basis: Option<String>,
    },
    /// Do not forward.
    Denied {
        /// Reason code (`gpc`, `no_consent`, `consent_refused`...).
        reason: &'static str,
        /// Consent record consulted, if any.
        consent_id: Option<i64>,
    },
}

/// Hash a consent token into its storage key.
pub fn token_key(token: &str) -> String {
    sha256_hex(&format!("token:{token}"))
}

/// Hash a subject id into its storage key.
pub fn subject_key(subject: &str) -> String {
    sha256_hex(&format!("subject:{subject}"))
}

/// In-memory index of the latest consent per key, loaded from and kept in step with SQLite.
#[derive(Debug, Default)]
pub struct ConsentIndex {
    latest: RwLock<HashMap<String, State>>,
}

impl ConsentIndex {
    /// Load the current decision per key (by the ordering rule, not by row order).
    pub fn load(conn: &rusqlite::Connection) -> rusqlite::Result<ConsentIndex> {
        let idx = ConsentIndex::default();
        let mut stmt = conn.prepare(
            "SELECT id, key_hash, granted, purposes, policy_version, decided_at FROM consent",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        for row in rows {
            let (id, key, granted, purposes, policy_version, decided_at) = row?;
            let purposes: Vec<String> = serde_json::from_str(&purposes).unwrap_or_default();
            idx.insert(id, key, granted, &purposes, policy_version, decided_at);
        }
        Ok(idx)
    }

    /// Record a committed consent row; returns whether it is now the current decision for its
    /// key (false when a later-dated decision, or a refusal at the same time, is already known).
    pub fn record(&self, id: i64, c: &NewConsent) -> bool {
        self.insert(
            id,
            c.key_hash.clone(),
            c.granted,
            &c.purposes,
            c.policy_version.clone(),
            c.decided_at,
        )
    }

    fn insert(
        &self,
        id: i64,
        key: String,
        granted: bool,
        purposes: &[String],
        pv: String,
        at: i64,
    ) -> bool {
        let state = State {
            id,
            granted,
            advertising: purposes.iter().any(|p| p == ADVERTISING),
            policy_version: pv,
            decided_at: at,
        };
        let mut map = self.latest.write().expect("consent index lock");
        match map.get(&key) {
            Some(old) if old.rank() > state.rank() => false,
            _ => {
                map.insert(key, state);
                true
            }
        }
    }

    /// Decide whether an event may be forwarded.
    pub fn check(
        &self,
        policy: &ConsentConfig,
        token: Option<&str>,
        subject: Option<&str>,
        gpc: bool,
        now: i64,
    ) -> Gate {
        let keys = token
            .map(token_key)
            .into_iter()
            .chain(subject.map(subject_key));
        let found = {
            let map = self.latest.read().expect("consent index lock");
            keys.filter_map(|k| map.get(&k).cloned())
                .max_by_key(State::rank)
        };
        let consent_id = found.as_ref().map(|s| s.id);
        if gpc {
            return Gate::Denied {
                reason: "gpc",
                consent_id,
            };
        }
        let denied = |reason| Gate::Denied { reason, consent_id };
        match found {
            Some(s) if !s.granted && s.advertising => denied("consent_refused"),
            Some(s) if s.granted && s.advertising => {
                let max_age = i64::from(policy.max_age_days.unwrap_or(395)) * 86_400;
                if now - s.decided_at > max_age {
                    denied("consent_expired")
                } else if !policy.accepted_policy_versions.is_empty()
                    && !policy.accepted_policy_versions.contains(&s.policy_version)
                {
                    denied("consent_policy_version")
                } else {
                    Gate::Allowed {
                        consent_id: Some(s.id),
                        legal_basis: None,
                    }
                }
            }
            _ => match &policy.legal_basis {
                Some(b) => Gate::Allowed {
                    consent_id,
                    legal_basis: Some(b.clone()),
                },
                None => denied("no_consent"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: String, granted: bool, purposes: &[&str], pv: &str, at: i64) -> NewConsent {
        NewConsent {
            key_hash: key,
            granted,
            purposes: purposes.iter().map(|s| s.to_string()).collect(),
            source: "banner".into(),
            policy_version: pv.into(),
            gpc: false,
            decided_at: at,
        }
    }

    #[test]
    fn decision_table() {
        let idx = ConsentIndex::default();
        let pol = ConsentConfig {
            accepted_policy_versions: vec!["v2".into()],
            ..Default::default()
        };
        idx.record(1, &rec(token_key("ok"), true, &["advertising"], "v2", 1000));
        idx.record(
            2,
            &rec(token_key("no"), false, &["advertising"], "v2", 1000),
        );
        idx.record(3, &rec(token_key("old"), true, &["advertising"], "v2", 0));
        idx.record(4, &rec(token_key("v1"), true, &["advertising"], "v1", 1000));
        idx.record(5, &rec(token_key("an"), true, &["analytics"], "v2", 1000));
        idx.record(
            6,
            &rec(subject_key("s"), true, &["advertising"], "v2", 1000),
        );
        let now = 1000 + 400 * 86_400;
        let now_ok = 2000;
        let c = |t: Option<&str>, s: Option<&str>, gpc, now| idx.check(&pol, t, s, gpc, now);
        assert!(matches!(
            c(Some("ok"), None, false, now_ok),
            Gate::Allowed {
                consent_id: Some(1),
                ..
            }
        ));
        assert!(matches!(
            c(None, Some("s"), false, now_ok),
            Gate::Allowed {
                consent_id: Some(6),
                ..
            }
        ));
        let reason = |g: Gate| match g {
            Gate::Denied { reason, .. } => reason,
            Gate::Allowed { .. } => "allowed",
        };
        assert_eq!(reason(c(Some("ok"), None, true, now_ok)), "gpc");
        assert_eq!(
            reason(c(Some("no"), None, false, now_ok)),
            "consent_refused"
        );
        assert_eq!(reason(c(Some("ok"), None, false, now)), "consent_expired");
        assert_eq!(
            reason(c(Some("v1"), None, false, now_ok)),
            "consent_policy_version"
        );
        assert_eq!(reason(c(Some("an"), None, false, now_ok)), "no_consent");
        assert_eq!(
            reason(c(Some("unknown"), None, false, now_ok)),
            "no_consent"
        );
        assert_eq!(reason(c(None, None, false, now_ok)), "no_consent");
        let _ = now;
        // A later refusal overrides an earlier grant.
        idx.record(
            7,
            &rec(token_key("ok"), false, &["advertising"], "v2", 1500),
        );
        assert_eq!(
            reason(c(Some("ok"), None, false, now_ok)),
            "consent_refused"
        );
    }

    #[test]
    fn latest_decision_wins_whatever_the_arrival_order_and_refusal_wins_ties() {
        let pol = ConsentConfig::default();
        let reason = |idx: &ConsentIndex| match idx.check(&pol, Some("t"), None, false, 5_000) {
            Gate::Denied { reason, .. } => reason,
            Gate::Allowed { .. } => "allowed",
        };
        // Refusal at 10:00 arrives first, an older grant (09:00) from a back-end sync later.
        let idx = ConsentIndex::default();
        assert!(idx.record(1, &rec(token_key("t"), false, &["advertising"], "1", 3_600)));
        assert!(!idx.record(2, &rec(token_key("t"), true, &["advertising"], "1", 3_240)));
        assert_eq!(reason(&idx), "consent_refused");
        // Same decision time: refusal wins in either arrival order.
        for order in [[true, false], [false, true]] {
            let idx = ConsentIndex::default();
            for (i, granted) in order.iter().enumerate() {
                idx.record(
                    i as i64 + 1,
                    &rec(token_key("t"), *granted, &["advertising"], "1", 4_000),
                );
            }
            assert_eq!(reason(&idx), "consent_refused", "{order:?}");
        }
        // A newer grant does win over an older refusal.
        let idx = ConsentIndex::default();
        idx.record(1, &rec(token_key("t"), false, &["advertising"], "1", 3_600));
        assert!(idx.record(2, &rec(token_key("t"), true, &["advertising"], "1", 3_700)));
        assert_eq!(reason(&idx), "allowed");
    }

    #[test]
    fn requests_are_checked_against_configured_values_without_echo() {
        let cfg = RelayConfig::parse(crate::relay::config::TEST_CONFIG, "t").expect("cfg");
        let rules = ConsentRules::new(&cfg);
        let good = serde_json::json!({"granted": true, "purposes": ["advertising"],
            "source": "banner", "policy_version": "2026-01"});
        let now = 1_790_000_000;
        let req = ConsentRequest::from_json(good.clone()).expect("typed");
        assert_eq!(rules.check(&req, now), Ok(now));
        let patch = |k: &str, v: Value| {
            let mut b = good.clone();
            b[k] = v;
            b
        };
        let cases = [
            (
                patch("source", "Jane Doe".into()),
                "source",
                "configured consent.sources",
            ),
            (
                patch("policy_version", "type 2 diabetes".into()),
                "policy_version",
                "pattern",
            ),
            (
                patch("policy_version", "1984-03-07".into()),
                "policy_version",
                "pattern",
            ),
            (
                patch("purposes", serde_json::json!(["depression"])),
                "purposes",
                "configured",
            ),
            (
                patch("decided_at", (now + 61).into()),
                "decided_at",
                "more than 60 seconds",
            ),
            (patch("granted", "Jane".into()), "granted", "got string"),
            (
                patch("decided_at", 1_790_000_000_000i64.into()),
                "decided_at",
                "milliseconds",
            ),
            (patch("Jane Doe", 1.into()), "body", "names are not echoed"),
        ];
        for (body, field, rule) in cases {
            let e = ConsentRequest::from_json(body)
                .and_then(|r| rules.check(&r, now).map(|_| ()))
                .expect_err(rule);
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(rule), "{rule}: {e}");
            let text = e.to_string().to_lowercase();
            for planted in ["jane", "diabetes", "depression", "1984"] {
                assert!(!text.contains(planted), "echoed: {text}");
            }
        }
        assert_eq!(
            rules.check(
                &ConsentRequest::from_json(patch("decided_at", (now + 60).into())).unwrap(),
                now
            ),
            Ok(now + 60),
            "within the clock skew"
        );
    }

    #[test]
    fn legal_basis_allows_without_consent_but_not_over_gpc_or_refusal() {
        let idx = ConsentIndex::default();
        idx.record(1, &rec(token_key("no"), false, &["advertising"], "v", 10));
        let pol = ConsentConfig {
            legal_basis: Some("contract".into()),
            ..Default::default()
        };
        assert_eq!(
            idx.check(&pol, None, None, false, 20),
            Gate::Allowed {
                consent_id: None,
                legal_basis: Some("contract".into())
            }
        );
        assert!(matches!(
            idx.check(&pol, None, None, true, 20),
            Gate::Denied { reason: "gpc", .. }
        ));
        assert!(matches!(
            idx.check(&pol, Some("no"), None, false, 20),
            Gate::Denied {
                reason: "consent_refused",
                ..
            }
        ));
    }
}
