//! Judging what was recorded, in stages: `classify` (third parties and vendors), `context` (a
//! page's health topic and role), `payload` (what a request carried, decoded), `leaks` (health
//! information and contact details a tracker received), `consent` (trackers and cookies before
//! or against consent, session replay, GPC), `canary` (the form probe's values, found in any
//! encoding). [`findings`] runs them over a scan.
//!
//! Each finding names the rule that fired and shows an excerpt around the sensitive part, never a
//! whole body.

pub mod canary;
pub mod classify;
mod consent;
pub mod context;
mod leaks;
mod payload;

use std::collections::BTreeSet;

use crate::lexicon::Lexicon;
use crate::model::{Canary, Finding, FindingKind, Page, Request, Severity};
use crate::rules::consent::ConsentMode;
use crate::rules::filterlist::FilterLists;
use crate::rules::{Engine, Vendor};

pub use consent::cookie_findings;
pub use leaks::context_leaks;

use consent::other_findings;
use leaks::leaks;

/// All findings for a scan, worst first.
pub fn findings(
    pages: &[Page],
    engine: &Engine,
    lists: Option<&FilterLists>,
    consent: ConsentMode,
    canaries: &[Canary],
) -> Vec<Finding> {
    let lexicon = Lexicon::bundled();
    let mut out = Vec::new();
    for p in pages {
        let mut seen_vendor = BTreeSet::new();
        let mut seen_leak = BTreeSet::new();
        let mut seen_other = BTreeSet::new();
        for r in &p.requests {
            if !r.third_party {
                continue;
            }
            let m = engine.match_url(&r.url);
            // Canaries: searched in every third-party request, known vendor or not.
            for hit in canary::search(r, canaries) {
                let who = m
                    .as_ref()
                    .map(|m| m.vendor.name.as_str())
                    .unwrap_or(&r.host);
                if seen_other.insert(("canary", hit.kind.clone(), r.host.clone())) {
                    out.push(Finding {
                        kind: FindingKind::PhiLeak,
                        severity: Severity::Critical,
                        vendor: m.as_ref().map(|m| m.vendor.id.clone()),
                        page: p.url.clone(),
                        request_url: Some(r.url.clone()),
                        evidence: with_step(
                            format!(
                                "the {} typed into a form reached {who} ({}) {} in the {}",
                                hit.kind.replace('_', " "),
                                r.host,
                                canary::encoding_text(hit.encoding),
                                hit.location
                            ),
                            r,
                        ),
                        rule: format!("probe:{}", hit.kind),
                        matched: None,
                    });
                }
            }
            let Some(m) = m else {
                // Unknown to the rules: an optional filter list may still know it.
                if let Some(hit) =
                    lists.and_then(|l| l.check(&r.url, &p.url, &r.resource_type, &r.method))
                    && seen_other.insert(("filter", r.host.clone(), String::new()))
                {
                    out.push(Finding {
                        kind: FindingKind::Tracker,
                        severity: Severity::Medium,
                        vendor: None,
                        page: p.url.clone(),
                        request_url: Some(r.url.clone()),
                        evidence: format!(
                            "{} request to {} matched filter list {} line {}: {}",
                            r.resource_type, r.host, hit.list, hit.line, hit.rule
                        ),
                        rule: format!("{}:{}", hit.list, hit.line),
                        matched: None,
                    });
                }
                continue;
            };
            let v = m.vendor;
            let tracking = v.category.is_tracking();
            if tracking {
                other_findings(p, r, v, consent, &mut seen_other, &mut out);
            }
            if seen_vendor.insert(v.id.clone()) {
                out.push(Finding {
                    kind: FindingKind::Tracker,
                    severity: v.severity,
                    vendor: Some(v.id.clone()),
                    page: p.url.clone(),
                    request_url: Some(r.url.clone()),
                    evidence: format!(
                        "{} ({}, {}) loaded: {} request to {} matched host pattern '{}'",
                        v.name,
                        v.category,
                        baa_text(v),
                        r.resource_type,
                        r.host,
                        m.pattern
                    ),
                    rule: v.rule.clone(),
                    matched: None,
                });
            }
            if !v.category.is_tracking() {
                continue;
            }
            for leak in leaks(r, v, lexicon) {
                if seen_leak.insert((v.id.clone(), leak.dedupe_key.clone())) {
                    out.push(Finding {
                        kind: FindingKind::PhiLeak,
                        severity: leak.severity,
                        vendor: Some(v.id.clone()),
                        page: p.url.clone(),
                        request_url: Some(r.url.clone()),
                        evidence: with_step(leak.evidence, r),
                        rule: leak.rule,
                        matched: Some(leak.matched).filter(|m| !m.is_empty()),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| {
        (a.severity, &a.kind, &a.vendor, &a.page).cmp(&(b.severity, &b.kind, &b.vendor, &b.page))
    });
    out
}

/// A page-derived name or URL inside evidence, cut to a bounded length.
pub(super) fn short(s: &str) -> std::borrow::Cow<'_, str> {
    crate::report::untrusted::cut(s, 120)
}

/// Evidence with the walked step or journey step that caused the request, when there was one.
pub(super) fn with_step(evidence: String, r: &Request) -> String {
    match &r.step {
        Some(step) => format!("{evidence} (during {step})"),
        None => evidence,
    }
}

pub(super) fn baa_text(v: &Vendor) -> String {
    if v.baa {
        format!("offers a BAA (checked {})", v.baa_checked)
    } else {
        format!("offers no BAA (checked {})", v.baa_checked)
    }
}

#[cfg(test)]
mod tests {
    use super::canary::encoding_text;
    use super::*;
    use crate::model::SetBy;
    use base64::Engine as _;

    fn req(url: &str, body: Option<&str>, referer: Option<&str>) -> Request {
        Request {
            url: url.into(),
            host: url::Url::parse(url).unwrap().host_str().unwrap().into(),
            method: if body.is_some() { "POST" } else { "GET" }.into(),
            third_party: true,
            post_data: body.map(str::to_string),
            referer: referer.map(str::to_string),
            ..Default::default()
        }
    }

    fn page(requests: Vec<Request>) -> Page {
        Page {
            url: "https://www.clinic.test/services/semaglutide/book".into(),
            requests,
            ..Default::default()
        }
    }

    /// Findings for one page with these requests, bundled rules, no consent interaction.
    fn judge(requests: Vec<Request>) -> Vec<Finding> {
        findings(
            &[page(requests)],
            &Engine::bundled(),
            None,
            ConsentMode::None,
            &[],
        )
    }

    fn kinds(f: &[Finding]) -> Vec<(String, String)> {
        f.iter()
            .map(|f| (f.kind.to_string(), f.evidence.clone()))
            .collect()
    }

    #[test]
    fn tiktok_body_url_and_descriptive_event_are_leaks() {
        let body = r#"{"event":"BookedGLP1Consultation","context":{"page":{"url":"https://www.clinic.test/services/semaglutide/book"}}}"#;
        let f = judge(vec![req(
            "https://analytics.tiktok.com/api/v2/pixel",
            Some(body),
            None,
        )]);
        let k = kinds(&f);
        assert!(
            k.iter()
                .any(|(kind, e)| kind == "tracker" && e.contains("TikTok")),
            "{k:?}"
        );
        let event = f
            .iter()
            .find(|f| f.rule == "vendors.toml:tiktok:event_name")
            .expect("event finding");
        assert_eq!(event.severity, Severity::Critical);
        assert!(
            event.evidence.contains("BookedGLP1Consultation") && event.evidence.contains("glp"),
            "{}",
            event.evidence
        );
        let url = f
            .iter()
            .find(|f| f.evidence.contains("context.page.url"))
            .expect("url finding");
        assert!(url.evidence.contains("semaglutide"), "{}", url.evidence);
        assert_eq!(url.rule, "health-terms.toml:glp1_drug");
    }

    #[test]
    fn meta_query_referer_and_contact_details() {
        let r = req(
            "https://www.facebook.com/tr?id=1&ev=PageView&dl=https%3A%2F%2Fwww.clinic.test%2Fabout&ud%5Bem%5D=jane.doe%40mail.test",
            None,
            Some("https://www.clinic.test/conditions/diabetes"),
        );
        let f = judge(vec![r]);
        let ev: Vec<_> = f.iter().map(|f| f.evidence.as_str()).collect();
        assert!(
            ev.iter()
                .any(|e| e.contains("Referer") && e.contains("diabetes")),
            "{ev:?}"
        );
        assert!(
            ev.iter()
                .any(|e| e.contains("email address") && e.contains("ud[em]")),
            "{ev:?}"
        );
        // PageView is standard, /about is not health-revealing.
        assert!(!ev.iter().any(|e| e.contains("event name")), "{ev:?}");
        assert!(!ev.iter().any(|e| e.contains("'dl'")), "{ev:?}");
    }

    #[test]
    fn base64_layers_are_opened_and_custom_events_flagged() {
        let inner =
            base64::engine::general_purpose::STANDARD.encode(r#"{"note":"ozempic refill"}"#);
        let r = req(
            &format!("https://www.facebook.com/tr?ev=ClickedButton&d={inner}"),
            None,
            None,
        );
        let f = judge(vec![r]);
        let ev: Vec<_> = f
            .iter()
            .map(|f| (f.severity, f.evidence.as_str()))
            .collect();
        assert!(
            ev.iter()
                .any(|(_, e)| e.contains("d(base64).note") && e.contains("ozempic")),
            "{ev:?}"
        );
        assert!(
            ev.iter()
                .any(|(s, e)| *s == Severity::Medium
                    && e.contains("not a standard Meta Pixel event")),
            "{ev:?}"
        );
    }

    #[test]
    fn tracking_cookies_before_consent() {
        let seen = |name: &str, domain: &str| crate::model::CookieSeen {
            cookie: crate::model::Cookie {
                name: name.into(),
                domain: domain.into(),
                set_by: SetBy::Script,
                ..Default::default()
            },
            first_seen_page: "https://www.clinic.test/services/semaglutide/book".into(),
        };
        let cookies = [
            seen("_fbp", "www.clinic.test"),
            seen("ttwid", ".tiktok.com"),
            seen("session", "www.clinic.test"),
        ];
        let f = cookie_findings(
            &cookies,
            &[page(vec![])],
            &Engine::bundled(),
            ConsentMode::None,
        );
        let vendors: Vec<_> = f.iter().map(|f| f.vendor.clone().unwrap()).collect();
        assert_eq!(vendors, vec!["meta", "tiktok"]);
        assert!(f[0].evidence.contains("_fbp") && f[0].rule == "vendors.toml:meta:cookie");
    }

    #[test]
    fn query_parsers_judge_other_vendors_event_names() {
        let r = req(
            "https://bat.bing.com/action/0?ti=1&evt=custom&ea=ozempic_signup",
            None,
            None,
        );
        let f = judge(vec![r]);
        let e = f
            .iter()
            .find(|f| f.rule == "vendors.toml:microsoft-uet:event_name")
            .expect("uet event");
        assert!(
            e.evidence.contains("query field 'ea'") && e.evidence.contains("ozempic"),
            "{}",
            e.evidence
        );
        let ok = req(
            "https://ct.pinterest.com/v3/?event=checkout&tid=1",
            None,
            None,
        );
        let f = judge(vec![ok]);
        assert!(!f.iter().any(|f| f.rule.ends_with(":event_name")), "{f:?}");
    }

    #[test]
    fn each_canary_encoding_is_named_once() {
        for (encoding, text) in [
            ("plain", "as typed"),
            ("url-encoded", "URL-encoded"),
            ("base64", "base64-encoded"),
            ("md5", "md5-hashed"),
            ("sha256", "sha256-hashed"),
        ] {
            assert_eq!(encoding_text(encoding), text);
        }
    }

    #[test]
    fn clean_requests_and_non_trackers_produce_no_leaks() {
        let fonts = req(
            "https://fonts.googleapis.com/css2?family=Inter",
            None,
            Some("https://www.clinic.test/services/semaglutide"),
        );
        let ids = req(
            "https://analytics.tiktok.com/api/v2/pixel",
            Some(r#"{"event":"Pageview","context":{"user":{"ttp":"2F7h37YkAbcMsEd9"}}}"#),
            None,
        );
        let f = judge(vec![fonts, ids]);
        assert!(!f.iter().any(|f| f.kind == "phi_leak"), "{:?}", kinds(&f));
    }
}
