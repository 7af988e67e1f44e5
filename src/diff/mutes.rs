//! Mutes: the findings of one cause (kind, vendor, rule — the grouping of the reports) on one
//! site, silenced by a person with a reason until a set time. `check`, `diff` and alerts judge
//! without them; every report lists them, so nothing is hidden silently.
//!
//! Invariants:
//! - A mute never changes what is stored: a scan keeps every finding; mutes apply when a scan is
//!   judged (a policy's findings, a drift's added findings), never to inventory items (vendors,
//!   hosts, cookies): approving a baseline accepts those.
//! - An expired or lifted mute applies to nothing.
//! - What a mute silences is listed where it was silenced ([`Drift::muted`], the check's output,
//!   the HTML report).

use serde::{Deserialize, Serialize};

use super::{Drift, DriftItem};
use crate::model::{Finding, FindingKind, ScanReport};

/// One mute, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    pub id: i64,
    pub site: String,
    pub kind: FindingKind,
    /// The vendor of the findings; `None` for findings without one.
    pub vendor: Option<String>,
    pub rule: String,
    pub reason: String,
    /// RFC 3339; the mute applies until then.
    pub expires_at: String,
    pub created_by: String,
    pub created_at: String,
    /// Who lifted it early, and when.
    pub lifted_by: Option<String>,
    pub lifted_at: Option<String>,
}

/// A drift item a mute kept out of the judgement, with the mute that did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutedItem {
    #[serde(flatten)]
    pub item: DriftItem,
    pub mute_id: i64,
    pub reason: String,
    pub expires_at: String,
    pub muted_by: String,
}

impl Mute {
    /// Whether the mute applies at `now` (RFC 3339, as stored).
    pub fn is_active(&self, now: &str) -> bool {
        self.lifted_at.is_none() && self.expires_at.as_str() > now
    }

    /// Whether findings of this cause are the mute's.
    pub fn covers(&self, kind: FindingKind, vendor: Option<&str>, rule: &str) -> bool {
        self.kind == kind && self.vendor.as_deref() == vendor && self.rule == rule
    }

    /// Whether `f` is one of the mute's findings.
    pub fn covers_finding(&self, f: &Finding) -> bool {
        self.covers(f.kind, f.vendor.as_deref(), &f.rule)
    }

    /// Whether a drift identity of a finding (`{severity} {kind} {vendor|-} [{rule}]`, see
    /// [`super::inventory`]) is one of the mute's, at any severity.
    fn covers_key(&self, key: &str) -> bool {
        let vendor = self.vendor.as_deref().unwrap_or("-");
        key.split_once(' ')
            .is_some_and(|(_, rest)| rest == format!("{} {vendor} [{}]", self.kind, self.rule))
    }
}

/// The first of `mutes` that covers `f`.
pub fn mute_of<'a>(mutes: &'a [Mute], f: &Finding) -> Option<&'a Mute> {
    mutes.iter().find(|m| m.covers_finding(f))
}

/// The report a policy judges: `report` without the findings an active mute covers (pass only
/// active mutes), and how many were left out.
pub fn without_muted(report: &ScanReport, mutes: &[Mute]) -> (ScanReport, usize) {
    let mut judged = report.clone();
    if mutes.is_empty() {
        return (judged, 0);
    }
    judged.findings.retain(|f| mute_of(mutes, f).is_none());
    let muted = report.findings.len() - judged.findings.len();
    (judged, muted)
}

/// Moves the added findings that an active mute covers from `drift.added` to `drift.muted`
/// (pass only active mutes). Removed items stay: they are no judgement.
pub fn apply(drift: &mut Drift, mutes: &[Mute]) {
    if mutes.is_empty() {
        return;
    }
    let added = std::mem::take(&mut drift.added);
    for item in added {
        let mute = (item.category == "finding")
            .then(|| mutes.iter().find(|m| m.covers_key(&item.key)))
            .flatten();
        match mute {
            Some(m) => drift.muted.push(MutedItem {
                item,
                mute_id: m.id,
                reason: m.reason.clone(),
                expires_at: m.expires_at.clone(),
                muted_by: m.created_by.clone(),
            }),
            None => drift.added.push(item),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{Baseline, diff};
    use crate::model::Severity;

    fn finding(kind: &str, vendor: Option<&str>, rule: &str) -> Finding {
        Finding {
            kind: kind.parse().unwrap(),
            severity: Severity::High,
            vendor: vendor.map(Into::into),
            page: "https://c.test/".into(),
            request_url: None,
            evidence: String::new(),
            rule: rule.into(),
            matched: None,
        }
    }

    fn mute(kind: &str, vendor: Option<&str>, rule: &str, expires_at: &str) -> Mute {
        Mute {
            id: 7,
            site: "https://c.test/".into(),
            kind: kind.parse().unwrap(),
            vendor: vendor.map(Into::into),
            rule: rule.into(),
            reason: "vendor signed a BAA".into(),
            expires_at: expires_at.into(),
            created_by: "alice".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            lifted_by: None,
            lifted_at: None,
        }
    }

    #[test]
    fn a_mute_moves_only_its_added_findings_out_of_the_drift() {
        let before = crate::report::empty_report("https://c.test/");
        let mut after = before.clone();
        after.findings = vec![
            finding(
                "phi_leak",
                Some("google_analytics"),
                "health-terms.toml:glp1_drug",
            ),
            finding("no_consent", Some("google_analytics"), "consent:none"),
            finding("phi_leak", None, "probe:email"),
        ];
        let mut d = diff(&Baseline::from_scan(&before), &after);
        assert_eq!(d.added.len(), 3);
        let m = [
            mute(
                "phi_leak",
                Some("google_analytics"),
                "health-terms.toml:glp1_drug",
                "2999-01-01T00:00:00Z",
            ),
            mute("phi_leak", None, "probe:email", "2999-01-01T00:00:00Z"),
        ];
        apply(&mut d, &m);
        let left: Vec<&str> = d.added.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(left, ["high no_consent google_analytics [consent:none]"]);
        assert_eq!(d.muted.len(), 2);
        assert_eq!(d.muted[0].reason, "vendor signed a BAA");
        let (judged, n) = without_muted(&after, &m);
        assert_eq!((judged.findings.len(), n), (1, 2));
    }

    #[test]
    fn an_expired_or_lifted_mute_is_not_active() {
        let now = "2026-06-01T00:00:00Z";
        assert!(mute("tracker", None, "r", "2026-06-02T00:00:00Z").is_active(now));
        assert!(!mute("tracker", None, "r", "2026-05-31T00:00:00Z").is_active(now));
        let mut lifted = mute("tracker", None, "r", "2026-06-02T00:00:00Z");
        lifted.lifted_at = Some("2026-05-01T00:00:00Z".into());
        assert!(!lifted.is_active(now));
        // A vendor-less mute does not cover a vendor's findings of the same kind and rule.
        assert!(!mute("tracker", None, "r", "x").covers_finding(&finding(
            "tracker",
            Some("v"),
            "r"
        )));
    }
}
