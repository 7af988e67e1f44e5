//! Consent: trackers and tracking cookies before any consent interaction or after a refusal
//! (`no_consent`), advertising that ignores Global Privacy Control (`gpc_ignored`), session
//! replay on pages with forms and trackers inside third-party frames.

use std::collections::BTreeSet;

use super::short;
use crate::model::{Category, Finding, FindingKind, Page, Request, Severity};
use crate::rules::consent::ConsentMode;
use crate::rules::{Engine, Vendor};

/// `no_consent` for tracking cookies that appeared before any consent interaction (every page in
/// `--consent none`; pages where no banner had been answered with `accept`), or at all with
/// `--consent reject`.
pub fn cookie_findings(
    cookies: &[crate::model::CookieSeen],
    pages: &[Page],
    engine: &Engine,
    consent: ConsentMode,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for c in cookies {
        let Some(v) = engine.match_cookie(&c.cookie.name, &c.cookie.domain) else {
            continue;
        };
        if !v.category.is_tracking() {
            continue;
        }
        let page = pages.iter().find(|p| p.url == c.first_seen_page);
        // Pre-consent if the page that first showed it had its banner unanswered and nothing
        // before it had been answered either (its requests still in the "load" phase).
        let pre_consent = match consent {
            // With reject, a tracking cookie is wrong whenever it appeared.
            ConsentMode::None | ConsentMode::Reject | ConsentMode::Gpc => true,
            _ => page.is_some_and(|p| {
                p.consent_action.is_none() && p.requests.first().is_some_and(|r| r.phase == "load")
            }),
        };
        if consent == ConsentMode::Gpc && v.category == Category::Advertising {
            out.push(Finding {
                kind: FindingKind::GpcIgnored,
                severity: Severity::High,
                vendor: Some(v.id.clone()),
                page: c.first_seen_page.clone(),
                request_url: None,
                evidence: format!(
                    "advertising cookie {} ({}, set by {}) of {} appeared although the browser \
                     sent the Global Privacy Control opt-out",
                    short(&c.cookie.name),
                    short(&c.cookie.domain),
                    c.cookie.set_by,
                    v.name
                ),
                rule: format!("{}:cookie:gpc", v.rule),
                matched: None,
            });
        }
        if !pre_consent {
            continue;
        }
        out.push(Finding {
            kind: FindingKind::NoConsent,
            severity: Severity::High,
            vendor: Some(v.id.clone()),
            page: c.first_seen_page.clone(),
            request_url: None,
            evidence: format!(
                "tracking cookie {} ({}, set by {}) of {} appeared {}",
                short(&c.cookie.name),
                short(&c.cookie.domain),
                c.cookie.set_by,
                v.name,
                if consent == ConsentMode::Reject {
                    "although the visitor rejected tracking"
                } else {
                    "before any consent interaction"
                }
            ),
            rule: format!("{}:cookie", v.rule),
            matched: None,
        });
    }
    out
}

/// `no_consent`, `session_replay` and `third_party_frame` findings for one tracker request.
pub(super) fn other_findings(
    p: &Page,
    r: &Request,
    v: &Vendor,
    consent: ConsentMode,
    seen: &mut BTreeSet<(&'static str, String, String)>,
    out: &mut Vec<Finding>,
) {
    let mut push = |kind: FindingKind, severity: Severity, evidence: String, rule: String| {
        if seen.insert((kind.as_str(), v.id.clone(), String::new())) {
            out.push(Finding {
                kind,
                severity,
                vendor: Some(v.id.clone()),
                page: p.url.clone(),
                request_url: Some(r.url.clone()),
                evidence,
                rule,
                matched: None,
            });
        }
    };
    let before = r.phase == "load";
    let after_reject = consent == ConsentMode::Reject && r.phase != "load";
    if before || after_reject {
        let when = if after_reject {
            "after the visitor rejected tracking".to_string()
        } else if matches!(consent, ConsentMode::None | ConsentMode::Gpc) {
            "before any consent interaction (the scan never clicks a banner)".to_string()
        } else {
            format!(
                "before the consent banner was answered ({})",
                consent.as_str()
            )
        };
        push(
            FindingKind::NoConsent,
            Severity::High,
            format!(
                "{} sent a {} request to {} {when}",
                v.name, r.resource_type, r.host
            ),
            format!("consent:{}", consent.as_str()),
        );
    }
    if consent == ConsentMode::Gpc && v.category == Category::Advertising {
        push(
            FindingKind::GpcIgnored,
            Severity::High,
            format!(
                "{} sent a {} request to {} although the browser sent the Global Privacy Control \
                 opt-out (Sec-GPC: 1, navigator.globalPrivacyControl)",
                v.name, r.resource_type, r.host
            ),
            format!("consent:gpc:{}", v.id),
        );
    }
    if v.category == Category::SessionReplay && p.forms > 0 {
        push(
            FindingKind::SessionReplay,
            Severity::High,
            format!(
                "{} records sessions on a page with {} form(s): what patients type can be captured",
                v.name, p.forms
            ),
            format!("{}:session_replay", v.rule),
        );
    }
    if let Some(frame) = r.frame_url.as_deref()
        && frame != p.url
        && p.frames.iter().any(|f| f.third_party && f.url == frame)
    {
        push(
            FindingKind::ThirdPartyFrame,
            Severity::High,
            format!(
                "the third-party frame {} carries {} ({})",
                short(frame),
                v.name,
                r.host
            ),
            format!("{}:frame", v.rule),
        );
    }
}
