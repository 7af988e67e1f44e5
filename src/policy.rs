//! The CI gate's policy: what a site may and may never carry. A TOML file committed in the
//! site's repository; unknown keys are errors. Without a file the default applies: no
//! advertising pixel, no `phi_leak`, no `no_consent`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diff::Drift;
use crate::model::{ScanReport, Severity};
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
    pub categories: Vec<String>,
    pub vendors: Vec<String>,
    pub hosts: Vec<String>,
    pub cookies: Vec<String>,
    /// Finding kinds ("phi_leak", "no_consent", ...).
    pub finding_kinds: Vec<String>,
    /// Findings less severe than this are not violations.
    pub min_severity: Severity,
    /// Whether drift against a baseline (`--baseline`) fails the check.
    pub drift: bool,
}

impl Default for Deny {
    fn default() -> Self {
        Deny {
            categories: vec!["advertising".into()],
            vendors: vec![],
            hosts: vec![],
            cookies: vec![],
            finding_kinds: vec!["phi_leak".into(), "no_consent".into()],
            min_severity: Severity::Medium,
            drift: true,
        }
    }
}

/// One reason the check fails.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// Which policy rule: "deny.categories", "deny.finding_kinds", "drift", ...
    pub rule: String,
    pub severity: Severity,
    pub message: String,
    /// Pages where it happens (at most a few, see `pages_total`).
    pub pages: Vec<String>,
    pub pages_total: usize,
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

    /// Every violation of this policy by a scan (and its drift, when a baseline was given).
    pub fn evaluate(
        &self,
        report: &ScanReport,
        drift: Option<&Drift>,
        engine: &Engine,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        // Vendors present, with their pages.
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
            let by_category = self.deny.categories.contains(&v.category);
            let by_id = self.deny.vendors.iter().any(|d| d == id);
            if by_category || by_id {
                let rule = if by_id {
                    "deny.vendors"
                } else {
                    "deny.categories"
                };
                out.push(violation(
                    rule,
                    v.severity,
                    format!("{} ({}, {}) is on the site", v.name, v.id, v.category),
                    pages,
                ));
            }
        }
        for (host, pages) in &hosts {
            if self.deny.hosts.iter().any(|h| h == host)
                && !self.allow.hosts.iter().any(|h| h == host)
            {
                out.push(violation(
                    "deny.hosts",
                    Severity::High,
                    format!("requests to denied host {host}"),
                    pages,
                ));
            }
        }
        for c in &report.cookies {
            let name = &c.cookie.name;
            if self.deny.cookies.contains(name) && !self.allow.cookies.contains(name) {
                out.push(violation(
                    "deny.cookies",
                    Severity::High,
                    format!("denied cookie {name} ({})", c.cookie.domain),
                    &[c.first_seen_page.as_str()],
                ));
            }
        }
        // Findings, grouped by (kind, vendor, rule).
        let mut groups: BTreeMap<GroupKey, (Severity, &str, Vec<&str>)> = BTreeMap::new();
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
                .or_insert((f.severity, f.evidence.as_str(), Vec::new()));
            g.0 = g.0.min(f.severity);
            push_page(&mut g.2, &f.page);
        }
        for ((kind, vendor, rule), (severity, evidence, pages)) in groups {
            out.push(violation(
                "deny.finding_kinds",
                severity,
                format!(
                    "{kind} to {}: {evidence} [rule {rule}]",
                    vendor.unwrap_or("-")
                ),
                &pages,
            ));
        }
        if let (true, Some(d)) = (self.deny.drift, drift) {
            for item in &d.added {
                let pages: Vec<&str> = item.pages.iter().map(String::as_str).collect();
                out.push(violation(
                    "drift",
                    Severity::High,
                    format!("new since the baseline: {} {}", item.category, item.key),
                    &pages,
                ));
            }
        }
        out.sort_by(|a, b| {
            (a.severity, &a.rule, &a.message).cmp(&(b.severity, &b.rule, &b.message))
        });
        out
    }
}

/// (kind, vendor, rule) of a group of findings.
type GroupKey<'a> = (&'a str, Option<&'a str>, &'a str);

fn push_page<'a>(pages: &mut Vec<&'a str>, page: &'a str) {
    if !pages.contains(&page) {
        pages.push(page);
    }
}

fn violation(rule: &str, severity: Severity, message: String, pages: &[&str]) -> Violation {
    Violation {
        rule: rule.into(),
        severity,
        message,
        pages: pages.iter().take(10).map(|p| p.to_string()).collect(),
        pages_total: pages.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
