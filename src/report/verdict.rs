//! What a person who must act reads first: one verdict sentence, severity counts, and the facts
//! per vendor (category, BAA, pages, leaks, tracking cookies) behind it.
//!
//! The sentence names vendors from the rules and, for recipients the rules do not know, their host
//! (page-derived): render it through [`super::untrusted`] like any page string.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Finding, FindingKind, ScanReport, Severity};
use crate::rules::Engine;

/// One vendor seen in a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorRow {
    pub id: String,
    pub name: String,
    pub category: String,
    /// Whether the vendor offers a BAA; `None` when the rules do not know the vendor.
    pub baa: Option<bool>,
    /// Pages where it loaded.
    pub pages: usize,
    /// `phi_leak` findings and the pages they are on.
    pub leaks: usize,
    pub leak_pages: usize,
    /// Tracking cookies attributed to it (name, domain), each once.
    pub cookies: Vec<String>,
    /// Its worst finding.
    pub worst: Option<Severity>,
}

/// Every severity, worst first.
pub const SEVERITIES: [Severity; 5] = [
    Severity::Critical,
    Severity::High,
    Severity::Medium,
    Severity::Low,
    Severity::Info,
];

/// Findings per severity, in [`SEVERITIES`] order.
pub fn severity_counts(report: &ScanReport) -> [usize; 5] {
    let mut counts = [0; 5];
    for f in &report.findings {
        if let Some(i) = SEVERITIES.iter().position(|s| *s == f.severity) {
            counts[i] += 1;
        }
    }
    counts
}

/// The vendors of a scan, worst first (then most leaks, most pages).
pub fn vendors(report: &ScanReport, engine: &Engine) -> Vec<VendorRow> {
    let mut pages: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in &report.pages {
        for r in &p.requests {
            if let Some(v) = &r.vendor {
                pages.entry(v.as_str()).or_default().insert(p.url.as_str());
            }
        }
    }
    for f in &report.findings {
        if let Some(v) = &f.vendor {
            pages.entry(v.as_str()).or_default();
        }
    }
    let mut rows: Vec<VendorRow> = pages
        .into_iter()
        .map(|(id, on)| {
            let known = engine.vendor(id);
            let findings: Vec<_> = report
                .findings
                .iter()
                .filter(|f| f.vendor.as_deref() == Some(id))
                .collect();
            let leaks: Vec<_> = findings.iter().filter(|f| f.kind == "phi_leak").collect();
            let leak_pages: BTreeSet<&str> = leaks.iter().map(|f| f.page.as_str()).collect();
            let mut cookies: Vec<String> = report
                .cookies
                .iter()
                .filter(|c| {
                    engine
                        .match_cookie(&c.cookie.name, &c.cookie.domain)
                        .is_some_and(|v| v.id == id)
                })
                .map(|c| format!("{} ({})", c.cookie.name, c.cookie.domain))
                .collect();
            cookies.sort();
            cookies.dedup();
            VendorRow {
                id: id.to_string(),
                name: known
                    .map(|v| v.name.clone())
                    .unwrap_or_else(|| id.to_string()),
                category: known.map(|v| v.category.to_string()).unwrap_or_default(),
                baa: known.map(|v| v.baa),
                pages: on.len(),
                leaks: leaks.len(),
                leak_pages: leak_pages.len(),
                cookies,
                worst: findings.iter().map(|f| f.severity).min(),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        (
            a.worst.unwrap_or(Severity::Info),
            std::cmp::Reverse(a.leaks),
            std::cmp::Reverse(a.pages),
            &a.name,
        )
            .cmp(&(
                b.worst.unwrap_or(Severity::Info),
                std::cmp::Reverse(b.leaks),
                std::cmp::Reverse(b.pages),
                &b.name,
            ))
    });
    rows
}

/// The findings of one cause — kind, vendor and rule — as every report (and the dashboard)
/// groups them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause<'a> {
    pub kind: FindingKind,
    pub vendor: Option<&'a str>,
    pub rule: &'a str,
    /// The worst of its findings.
    pub severity: Severity,
    pub findings: Vec<&'a Finding>,
    /// Its pages, sorted, each once.
    pub pages: Vec<&'a str>,
}

/// The findings of a scan by cause: worst first, then most findings.
pub fn causes(report: &ScanReport) -> Vec<Cause<'_>> {
    type Key<'a> = (FindingKind, Option<&'a str>, &'a str);
    let mut by: BTreeMap<Key<'_>, Vec<&Finding>> = BTreeMap::new();
    for f in &report.findings {
        by.entry((f.kind, f.vendor.as_deref(), f.rule.as_str()))
            .or_default()
            .push(f);
    }
    let mut out: Vec<Cause<'_>> = by
        .into_iter()
        .map(|((kind, vendor, rule), findings)| {
            let mut pages: Vec<&str> = findings.iter().map(|f| f.page.as_str()).collect();
            pages.sort();
            pages.dedup();
            Cause {
                kind,
                vendor,
                rule,
                severity: findings
                    .iter()
                    .map(|f| f.severity)
                    .min()
                    .unwrap_or(Severity::Info),
                findings,
                pages,
            }
        })
        .collect();
    out.sort_by_key(|c| {
        (
            c.severity,
            std::cmp::Reverse(c.findings.len()),
            (c.kind, c.vendor, c.rule),
        )
    });
    out
}

/// Who receives a cause's data: the vendor's name from the rules, else its id ("unknown
/// recipient" without one).
pub fn recipient(engine: &Engine, vendor: Option<&str>) -> String {
    match vendor {
        Some(id) => engine
            .vendor(id)
            .map(|v| v.name.clone())
            .unwrap_or_else(|| id.to_string()),
        None => "unknown recipient".into(),
    }
}

/// "TikTok and Meta pixels" when every name ends in " Pixel", else "A, B and C".
fn names(names: &[&str]) -> String {
    let pixels: Option<Vec<&str>> = names.iter().map(|n| n.strip_suffix(" Pixel")).collect();
    match pixels {
        Some(short) => format!(
            "{} pixel{}",
            join(&short),
            if short.len() == 1 { "" } else { "s" }
        ),
        None => join(names),
    }
}

fn join(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn pages(n: usize) -> String {
    format!("{n} page{}", if n == 1 { "" } else { "s" })
}

/// The verdict sentence: who receives health information, on how many pages, and whether they
/// sign a BAA; else which advertising pixels load; else that nothing was found.
pub fn sentence(report: &ScanReport, engine: &Engine) -> String {
    if let Some(reason) = report.unscannable() {
        return format!("The site could not be scanned: {reason}.");
    }
    let rows = vendors(report, engine);
    let leak_pages = |pred: &dyn Fn(&VendorRow) -> bool| -> (Vec<&str>, usize) {
        let chosen: Vec<&VendorRow> = rows.iter().filter(|r| r.leaks > 0 && pred(r)).collect();
        let ids: BTreeSet<&str> = chosen.iter().map(|r| r.id.as_str()).collect();
        let on: BTreeSet<&str> = report
            .findings
            .iter()
            .filter(|f| {
                f.kind == "phi_leak" && f.vendor.as_deref().is_some_and(|v| ids.contains(v))
            })
            .map(|f| f.page.as_str())
            .collect();
        (chosen.iter().map(|r| r.name.as_str()).collect(), on.len())
    };
    let mut parts = Vec::new();
    for (baa, clause, tail) in [
        (false, "which sign{s} no BAA", ""),
        (
            true,
            "which offer{s} a BAA",
            " (check that a BAA is signed)",
        ),
    ] {
        let (who, n) = leak_pages(&|r| (r.baa == Some(true)) == baa);
        if who.is_empty() {
            continue;
        }
        let s = if who.len() == 1 { "s" } else { "" };
        parts.push(format!(
            "{}, {}, receive{s} health information on {}{tail}",
            names(&who),
            clause.replace("{s}", s),
            pages(n)
        ));
    }
    // Health information to recipients the rules do not know (a typed value to any host).
    let unknown: BTreeSet<&str> = report
        .findings
        .iter()
        .filter(|f| f.kind == "phi_leak" && f.vendor.is_none())
        .filter_map(|f| f.request_url.as_deref())
        .filter_map(|u| u.split('/').nth(2))
        .collect();
    if !unknown.is_empty() {
        let on: BTreeSet<&str> = report
            .findings
            .iter()
            .filter(|f| f.kind == "phi_leak" && f.vendor.is_none())
            .map(|f| f.page.as_str())
            .collect();
        let hosts: Vec<&str> = unknown.into_iter().collect();
        // Host names come from pages: at most three, each cut.
        let shown: Vec<String> = hosts
            .iter()
            .take(3)
            .map(|h| super::untrusted::cut(h, 80).into_owned())
            .collect();
        let mut named: Vec<&str> = shown.iter().map(String::as_str).collect();
        let others = format!("{} other hosts", hosts.len().saturating_sub(3));
        if hosts.len() > 3 {
            named.push(&others);
        }
        parts.push(format!(
            "{} receive{} health information on {}",
            join(&named),
            if hosts.len() == 1 { "s" } else { "" },
            pages(on.len())
        ));
    }
    if !parts.is_empty() {
        let mut s = parts.join("; ");
        if let Some(first) = s.get(..1) {
            s = first.to_uppercase() + &s[1..];
        }
        return s + ".";
    }
    let ads: Vec<&VendorRow> = rows
        .iter()
        .filter(|r| r.category == "advertising")
        .collect();
    if !ads.is_empty() {
        let on: BTreeSet<&str> = report
            .pages
            .iter()
            .filter(|p| {
                p.requests.iter().any(|r| {
                    r.vendor
                        .as_deref()
                        .is_some_and(|v| ads.iter().any(|a| a.id == v))
                })
            })
            .map(|p| p.url.as_str())
            .collect();
        let names_: Vec<&str> = ads.iter().map(|r| r.name.as_str()).collect();
        return format!(
            "{} load{} on {}; no health information was seen reaching {}.",
            names(&names_),
            if names_.len() == 1 { "s" } else { "" },
            pages(on.len()),
            if names_.len() == 1 { "it" } else { "them" }
        );
    }
    match report.findings.iter().map(|f| f.severity).min() {
        Some(worst) => format!(
            "{} finding{}, the worst {}; no health information was seen reaching a tracker.",
            report.findings.len(),
            if report.findings.len() == 1 { "" } else { "s" },
            worst.as_str()
        ),
        None => format!(
            "No tracking pixels and no health information leaks found on {}.",
            pages(report.pages.len())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Finding, Page, Request};

    fn report(findings: Vec<(&str, &str, &str)>) -> ScanReport {
        let page = |u: &str, vendors: &[&str]| Page {
            url: u.into(),
            requests: vendors
                .iter()
                .map(|v| Request {
                    vendor: Some(v.to_string()),
                    third_party: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        ScanReport {
            pages: vec![
                page("https://c.test/", &["tiktok", "meta"]),
                page("https://c.test/a", &["tiktok", "meta"]),
                page("https://c.test/b", &["meta"]),
            ],
            findings: findings
                .into_iter()
                .map(|(kind, vendor, page)| Finding {
                    kind: kind.parse().unwrap(),
                    severity: Severity::Critical,
                    vendor: Some(vendor.into()),
                    page: page.into(),
                    request_url: None,
                    evidence: String::new(),
                    rule: "r".into(),
                    matched: None,
                })
                .collect(),
            ..crate::report::empty_report("https://c.test/")
        }
    }

    #[test]
    fn the_verdict_names_who_receives_health_information_and_the_baa() {
        let e = Engine::bundled();
        let r = report(vec![
            ("phi_leak", "tiktok", "https://c.test/"),
            ("phi_leak", "meta", "https://c.test/a"),
            ("phi_leak", "meta", "https://c.test/b"),
            ("tracker", "meta", "https://c.test/b"),
        ]);
        // Worst first, then most leaks: Meta (two) before TikTok (one).
        assert_eq!(
            sentence(&r, &e),
            "Meta and TikTok pixels, which sign no BAA, receive health information on 3 pages."
        );
        let r = report(vec![("phi_leak", "tiktok", "https://c.test/")]);
        assert_eq!(
            sentence(&r, &e),
            "TikTok pixel, which signs no BAA, receives health information on 1 page."
        );
        let r = report(vec![("tracker", "tiktok", "https://c.test/")]);
        assert_eq!(
            sentence(&r, &e),
            "TikTok and Meta pixels load on 3 pages; no health information was seen reaching them."
        );
        let rows = vendors(&r, &e);
        assert_eq!(rows[0].id, "tiktok");
        assert_eq!((rows[0].pages, rows[0].baa), (2, Some(false)));
    }
}
