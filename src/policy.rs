//! The CI gate's policy: what a site may and may never carry. A TOML file committed in the
//! site's repository; unknown keys are errors. Without a file the default applies: no
//! advertising pixel, no `phi_leak`, no `no_consent`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diff::Drift;
use crate::model::{Category, FindingKind, ScanReport, Severity};
use crate::rules::Engine;

/// Errors loading a policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy '{path}': line {line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
}

/// A policy.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub allow: Allow,
    pub deny: Deny,
}

/// Exceptions: allowed even where a deny rule would match.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Allow {
    /// Vendor ids (see `pixelwatch rules explain`).
    pub vendors: Vec<String>,
    /// Third-party hosts.
    pub hosts: Vec<String>,
    /// Cookie names.
    pub cookies: Vec<String>,
}

/// What is never allowed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Deny {
    /// Vendor categories ("advertising", "session_replay", ...).
    pub categories: Vec<Category>,
    pub vendors: Vec<String>,
    pub hosts: Vec<String>,
    pub cookies: Vec<String>,
    /// Finding kinds ("phi_leak", "no_consent", ...).
    pub finding_kinds: Vec<FindingKind>,
    /// Findings less severe than this are not violations.
    pub min_severity: Severity,
    /// Whether drift against a baseline (`--baseline`) fails the check.
    pub drift: bool,
}

impl Default for Deny {
    fn default() -> Self {
        Deny {
            categories: vec![Category::Advertising],
            vendors: vec![],
            hosts: vec![],
            cookies: vec![],
            finding_kinds: vec![FindingKind::PhiLeak, FindingKind::NoConsent],
            min_severity: Severity::Medium,
            drift: true,
        }
    }
}

/// Everything that fails the check for one cause — a vendor, a host, a cookie, a storage key —
/// together: one new pixel is one violation, listing its pages and each reason.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// The policy rule that names it best (the first of `rules`).
    pub rule: String,
    /// Every policy rule this cause breaks, in [`RULE_ORDER`].
    pub rules: Vec<String>,
    /// The worst severity of its reasons.
    pub severity: Severity,
    /// Stable identity of the cause (`vendor:tiktok`, `host:cdn.example.net`, `cookie:...`): the
    /// same cause is the same violation across runs and hosts.
    pub cause: String,
    /// What the cause is, for people: "TikTok Pixel (tiktok, advertising, offers no BAA)", a host
    /// name, a cookie. May hold page-derived text: render it through `report::untrusted`.
    pub title: String,
    /// Why it fails, one reason per policy rule and finding group or drift item.
    pub reasons: Vec<Reason>,
    /// Pages where it happens (at most [`MAX_PAGES`], see `pages_total`).
    pub pages: Vec<String>,
    pub pages_total: usize,
}

/// One reason a cause fails the check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reason {
    pub rule: String,
    pub severity: Severity,
    /// What is wrong; may hold page-derived text (a key, a host).
    pub text: String,
    /// An excerpt of the evidence, for findings.
    pub evidence: Option<String>,
    /// What matched inside the evidence.
    pub matched: Option<String>,
}

/// Policy rules, in the order a violation names them.
pub const RULE_ORDER: [&str; 6] = [
    "deny.vendors",
    "deny.categories",
    "deny.hosts",
    "deny.cookies",
    "deny.finding_kinds",
    "drift",
];

/// Most pages a violation lists.
pub const MAX_PAGES: usize = 10;

/// Gathers reasons by cause.
struct Causes<'a> {
    engine: &'a Engine,
    by_cause: BTreeMap<String, (Violation, Vec<String>)>,
}

impl<'a> Causes<'a> {
    fn entry(
        &mut self,
        cause: String,
        title: impl FnOnce() -> String,
    ) -> &mut (Violation, Vec<String>) {
        self.by_cause.entry(cause.clone()).or_insert_with(|| {
            (
                Violation {
                    rule: String::new(),
                    rules: Vec::new(),
                    severity: Severity::Info,
                    cause,
                    title: title(),
                    reasons: Vec::new(),
                    pages: Vec::new(),
                    pages_total: 0,
                },
                Vec::new(),
            )
        })
    }

    fn vendor_title(&self, id: &str) -> String {
        match self.engine.vendor(id) {
            Some(v) => format!(
                "{} ({}, {}, {})",
                v.name,
                v.id,
                v.category,
                if v.baa {
                    "offers a BAA"
                } else {
                    "offers no BAA"
                }
            ),
            None => id.to_string(),
        }
    }

    /// The cause a host belongs to: its vendor if the rules know it, else the host.
    fn host_cause(&self, host: &str) -> (String, Option<&'a crate::rules::Vendor>) {
        match self.engine.match_url(&format!("https://{host}/")) {
            Some(m) => (format!("vendor:{}", m.vendor.id), Some(m.vendor)),
            None => (format!("host:{host}"), None),
        }
    }

    fn add(
        &mut self,
        cause: String,
        title: impl FnOnce() -> String,
        reason: Reason,
        pages: &[&str],
    ) {
        let (v, all_pages) = self.entry(cause, title);
        v.severity = v.severity.min(reason.severity);
        if !v.rules.contains(&reason.rule) {
            v.rules.push(reason.rule.clone());
        }
        if !v.reasons.contains(&reason) {
            v.reasons.push(reason);
        }
        for p in pages {
            if !all_pages.iter().any(|q| q == p) {
                all_pages.push(p.to_string());
            }
        }
    }

    fn add_host(&mut self, host: &str, reason: Reason, pages: &[&str]) {
        let (cause, vendor) = self.host_cause(host);
        let title = match vendor {
            Some(v) => self.vendor_title(&v.id),
            None => host.to_string(),
        };
        self.add(cause, || title, reason, pages);
    }

    fn add_vendor(&mut self, id: &str, reason: Reason, pages: &[&str]) {
        let title = self.vendor_title(id);
        self.add(format!("vendor:{id}"), || title, reason, pages);
    }

    fn finish(self) -> Vec<Violation> {
        let mut out: Vec<Violation> = self
            .by_cause
            .into_values()
            .map(|(mut v, pages)| {
                v.rules.sort_by_key(|r| {
                    RULE_ORDER
                        .iter()
                        .position(|o| o == r)
                        .unwrap_or(RULE_ORDER.len())
                });
                v.reasons
                    .sort_by(|a, b| (a.severity, &a.rule).cmp(&(b.severity, &b.rule)));
                v.rule = v.rules.first().cloned().unwrap_or_default();
                v.pages_total = pages.len();
                v.pages = pages.into_iter().take(MAX_PAGES).collect();
                v
            })
            .collect();
        out.sort_by(|a, b| (a.severity, &a.title).cmp(&(b.severity, &b.title)));
        out
    }
}

fn reason(rule: &str, severity: Severity, text: String) -> Reason {
    Reason {
        rule: rule.into(),
        severity,
        text,
        evidence: None,
        matched: None,
    }
}

impl Policy {
    /// Reads a policy file.
    pub fn read(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| PolicyError::Parse {
            path: shown,
            line: crate::rules::toml_error_line(&text, &e),
            message: e.message().to_string(),
        })
    }

    /// Every violation of this policy by a scan (and its drift, when a baseline was given), one
    /// per cause, worst first.
    pub fn evaluate(
        &self,
        report: &ScanReport,
        drift: Option<&Drift>,
        engine: &Engine,
    ) -> Vec<Violation> {
        let mut causes = Causes {
            engine,
            by_cause: BTreeMap::new(),
        };
        // Vendors and third-party hosts present, with their pages.
        let mut vendors: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut hosts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for p in &report.pages {
            for r in &p.requests {
                if let Some(v) = &r.vendor {
                    push_page(vendors.entry(v.as_str()).or_default(), &p.url);
                }
                if r.third_party {
                    push_page(hosts.entry(r.host.as_str()).or_default(), &p.url);
                }
            }
        }
        for (id, pages) in &vendors {
            if self.allow.vendors.iter().any(|a| a == id) {
                continue;
            }
            let Some(v) = engine.vendor(id) else { continue };
            if self.deny.vendors.iter().any(|d| d == id) {
                causes.add_vendor(
                    id,
                    reason("deny.vendors", v.severity, "a denied vendor".into()),
                    pages,
                );
            }
            if self.deny.categories.contains(&v.category) {
                let text = format!("{} vendor on {} page(s)", v.category, pages.len());
                causes.add_vendor(id, reason("deny.categories", v.severity, text), pages);
            }
        }
        for (host, pages) in &hosts {
            if self.deny.hosts.iter().any(|h| h == host)
                && !self.allow.hosts.iter().any(|h| h == host)
            {
                let text = format!("requests to the denied host {host}");
                causes.add_host(host, reason("deny.hosts", Severity::High, text), pages);
            }
        }
        for c in &report.cookies {
            let name = &c.cookie.name;
            if self.deny.cookies.contains(name) && !self.allow.cookies.contains(name) {
                let text = format!("denied cookie {name} ({})", c.cookie.domain);
                let r = reason("deny.cookies", Severity::High, text);
                let pages = [c.first_seen_page.as_str()];
                match engine.match_cookie(name, &c.cookie.domain) {
                    Some(v) => causes.add_vendor(&v.id, r, &pages),
                    None => causes.add(
                        format!("cookie:{name}"),
                        || format!("cookie {name}"),
                        r,
                        &pages,
                    ),
                }
            }
        }
        self.findings(report, &mut causes);
        if let (true, Some(d)) = (self.deny.drift, drift) {
            for item in &d.added {
                drift_item(item, &mut causes);
            }
        }
        causes.finish()
    }

    /// Denied findings, one reason per (kind, vendor, rule) with its pages and first evidence.
    fn findings(&self, report: &ScanReport, causes: &mut Causes<'_>) {
        let mut groups: BTreeMap<GroupKey, (Severity, &crate::model::Finding, Vec<&str>)> =
            BTreeMap::new();
        for f in &report.findings {
            if !self.deny.finding_kinds.contains(&f.kind) || f.severity > self.deny.min_severity {
                continue;
            }
            if f.vendor
                .as_ref()
                .is_some_and(|v| self.allow.vendors.contains(v))
            {
                continue;
            }
            let g = groups
                .entry((f.kind.as_str(), f.vendor.as_deref(), f.rule.as_str()))
                .or_insert((f.severity, f, Vec::new()));
            g.0 = g.0.min(f.severity);
            push_page(&mut g.2, &f.page);
        }
        for ((kind, vendor, rule), (severity, first, pages)) in groups {
            let r = Reason {
                rule: "deny.finding_kinds".into(),
                severity,
                text: format!("{kind} [rule {rule}] on {} page(s)", pages.len()),
                evidence: Some(crate::report::untrusted::evidence(
                    &first.evidence,
                    first.matched.as_deref(),
                )),
                matched: first.matched.clone(),
            };
            let host = first
                .request_url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| u.host_str().map(str::to_string));
            match (vendor, host) {
                (Some(v), _) => causes.add_vendor(v, r, &pages),
                (None, Some(h)) => causes.add_host(&h, r, &pages),
                (None, None) => causes.add(
                    format!("finding:{kind}:{rule}"),
                    || format!("{kind} [rule {rule}]"),
                    r,
                    &pages,
                ),
            }
        }
    }
}

/// A drift item as a reason, under the cause it belongs to, with the severity of what drifted:
/// a finding keeps its own; anything of a known vendor takes the vendor's; other third-party
/// hosts, scripts, cookies and storage are medium (one cause per host); the site's own cookies
/// and storage are low (one cause each: they come from the site's own code).
fn drift_item(item: &crate::diff::DriftItem, causes: &mut Causes<'_>) {
    let pages: Vec<&str> = item.pages.iter().map(String::as_str).collect();
    let text = format!("new since the baseline: {} {}", item.category, item.key);
    let vendor_severity = |id: &str| {
        causes
            .engine
            .vendor(id)
            .map(|v| v.severity)
            .unwrap_or(Severity::Medium)
    };
    let host_severity = |causes: &Causes<'_>, host: &str| match causes.host_cause(host).1 {
        Some(v) => v.severity,
        None => Severity::Medium,
    };
    match item.category.as_str() {
        "finding" => {
            // "<severity> <kind> <vendor> [<rule>]"
            let mut parts = item.key.splitn(3, ' ');
            let severity = parts
                .next()
                .and_then(|s| serde_json::from_value(serde_json::json!(s)).ok())
                .unwrap_or(Severity::High);
            let kind = parts.next().unwrap_or_default().to_string();
            let vendor = parts
                .next()
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or("-")
                .to_string();
            let r = reason("drift", severity, text);
            if vendor == "-" {
                let key = item.key.clone();
                causes.add(format!("finding:{kind}"), || key, r, &pages);
            } else {
                causes.add_vendor(&vendor, r, &pages);
            }
        }
        "vendor" => {
            let r = reason("drift", vendor_severity(&item.key), text);
            causes.add_vendor(&item.key, r, &pages);
        }
        "tracker_host" | "third_party_host" => {
            let r = reason("drift", host_severity(causes, &item.key), text);
            causes.add_host(&item.key, r, &pages);
        }
        "third_party_script" => {
            let host = url::Url::parse(&item.key)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| item.key.clone());
            let r = reason("drift", host_severity(causes, &host), text);
            causes.add_host(&host, r, &pages);
        }
        "cookie" => {
            let (name, domain) = item.key.rsplit_once(" @ ").unwrap_or((&item.key, ""));
            if let Some(v) = causes.engine.match_cookie(name, domain) {
                let (id, severity) = (v.id.clone(), v.severity);
                causes.add_vendor(&id, reason("drift", severity, text), &pages);
            } else if crate::diff::is_site_relative(domain) {
                // The site's own cookies come from its own code: one cause.
                let r = reason("drift", Severity::Low, text);
                causes.add(
                    "first-party:cookie".into(),
                    || "the site's own cookies".into(),
                    r,
                    &pages,
                );
            } else {
                causes.add_host(domain, reason("drift", Severity::Medium, text), &pages);
            }
        }
        _ => {
            // Storage ("<origin> <kind> <key>") and anything newer.
            let origin = item.key.split(' ').next().unwrap_or_default();
            let host = url::Url::parse(origin)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string));
            match host.filter(|h| !crate::diff::is_site_relative(h)) {
                Some(h) => causes.add_host(&h, reason("drift", Severity::Medium, text), &pages),
                None => {
                    let r = reason("drift", Severity::Low, text);
                    let category = item.category.clone();
                    causes.add(
                        format!("first-party:{category}"),
                        || format!("the site's own {category}"),
                        r,
                        &pages,
                    );
                }
            }
        }
    }
}

/// (kind, vendor, rule) of a group of findings.
type GroupKey<'a> = (&'a str, Option<&'a str>, &'a str);

fn push_page<'a>(pages: &mut Vec<&'a str>, page: &'a str) {
    if !pages.contains(&page) {
        pages.push(page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{Baseline, diff};
    use crate::model::{Finding, Page, Request};

    #[test]
    fn a_typo_in_a_kind_or_category_is_an_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.toml");
        for (text, needle) in [
            ("[deny]\nfinding_kinds = [\"phi_leek\"]\n", "phi_leek"),
            ("[deny]\ncategories = [\"advertizing\"]\n", "advertizing"),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = Policy::read(&file).unwrap_err().to_string();
            assert!(e.contains("line 2") && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn one_new_pixel_is_one_violation_with_the_severity_of_what_drifted() {
        let before = crate::report::empty_report("https://c.test/");
        let mut after = before.clone();
        after.pages = vec![Page {
            url: "https://c.test/book".into(),
            requests: vec![Request {
                url: "https://analytics.tiktok.com/i18n/pixel/events.js".into(),
                host: "analytics.tiktok.com".into(),
                third_party: true,
                vendor: Some("tiktok".into()),
                ..Default::default()
            }],
            storage: vec![crate::model::StorageEntry {
                origin: "https://c.test".into(),
                kind: "local".into(),
                key: "cart".into(),
                ..Default::default()
            }],
            ..Default::default()
        }];
        after.findings = ["tracker", "no_consent"]
            .iter()
            .map(|kind| Finding {
                kind: kind.parse().unwrap(),
                severity: Severity::High,
                vendor: Some("tiktok".into()),
                page: "https://c.test/book".into(),
                request_url: None,
                evidence: String::new(),
                rule: format!("r:{kind}"),
                matched: None,
            })
            .collect();
        let drift = diff(&Baseline::from_scan(&before), &after);
        let v = Policy::default().evaluate(&after, Some(&drift), &Engine::bundled());
        assert_eq!(v.len(), 2, "{v:#?}");
        let pixel = &v[0];
        assert_eq!(pixel.cause, "vendor:tiktok");
        assert_eq!(
            pixel.severity,
            Severity::Critical,
            "the vendor's own severity"
        );
        assert_eq!(
            pixel.rules,
            ["deny.categories", "deny.finding_kinds", "drift"]
        );
        assert_eq!(pixel.pages, ["https://c.test/book"]);
        assert!(pixel.reasons.len() >= 5, "{pixel:#?}");
        let storage = &v[1];
        assert_eq!(
            (storage.cause.as_str(), storage.severity),
            ("first-party:storage", Severity::Low)
        );
        // Without drift, the same pixel is still one violation.
        let v = Policy::default().evaluate(&after, None, &Engine::bundled());
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policy.toml");
        std::fs::write(
            &p,
            "[allow]\nvendors = [\"stripe\"]\n\n[deny]\ncategoriez = [\"x\"]\n",
        )
        .unwrap();
        let e = Policy::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("policy.toml") && e.contains("line 5") && e.contains("categoriez"),
            "{e}"
        );
        std::fs::write(&p, "[allow]\nvendors = [\"meta\"]\n").unwrap();
        let ok = Policy::read(&p).unwrap();
        assert_eq!(ok.allow.vendors, vec!["meta"]);
        assert_eq!(ok.deny, Deny::default());
    }
}
