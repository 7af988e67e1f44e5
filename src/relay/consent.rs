//! Consent gate: consent records, their in-memory index, and the per-event decision.
//!
//! Keys are stored hashed (`sha256("token:" + t)` or `sha256("subject:" + s)`), so the database
//! holds no usable token and no patient identifier. The latest record for a key wins.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::Deserialize;

use super::config::ConsentConfig;
use super::sanitize::sha256_hex;

/// The purpose that allows forwarding to ad platforms.
pub const ADVERTISING: &str = "advertising";

/// Body of `POST /v1/consent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// Existing consent token to update (browser); a new one is issued when absent.
    #[serde(default)]
    pub consent_token: Option<String>,
    /// Subject id (back-end callers), e.g. a booking-system pseudonym.
    #[serde(default)]
    pub subject: Option<String>,
    /// Whether the listed purposes were granted.
    pub granted: bool,
    /// Purposes, e.g. `["advertising"]`.
    pub purposes: Vec<String>,
    /// When the person decided (Unix seconds); defaults to now.
    #[serde(default)]
    pub decided_at: Option<i64>,
    /// Where the decision came from (`banner`, `intake_form`...).
    pub source: String,
    /// Version of the privacy policy shown.
    pub policy_version: String,
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
    /// Load the latest record per key.
    pub fn load(conn: &rusqlite::Connection) -> rusqlite::Result<ConsentIndex> {
        let idx = ConsentIndex::default();
        let mut stmt = conn.prepare(
            "SELECT id, key_hash, granted, purposes, policy_version, decided_at FROM consent ORDER BY id",
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

    /// Record a committed consent row.
    pub fn record(&self, id: i64, c: &NewConsent) {
        self.insert(
            id,
            c.key_hash.clone(),
            c.granted,
            &c.purposes,
            c.policy_version.clone(),
            c.decided_at,
        );
    }

    fn insert(
        &self,
        id: i64,
        key: String,
        granted: bool,
        purposes: &[String],
        pv: String,
        at: i64,
    ) {
        let state = State {
            id,
            granted,
            advertising: purposes.iter().any(|p| p == ADVERTISING),
            policy_version: pv,
            decided_at: at,
        };
        self.latest
            .write()
            .expect("consent index lock")
            .insert(key, state);
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
                .max_by_key(|s| s.id)
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
