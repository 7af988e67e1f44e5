//! The end-of-scan summary people read in a terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::untrusted::{self, plain, terminal};
use crate::model::{Finding, ScanReport, Severity};
use crate::rules::Engine;
use crate::store::ScanRow;

/// (severity, kind, vendor, rule) of a group of findings.
type Group<'a> = (Severity, &'a str, Option<&'a str>, &'a str);

/// A plain-text summary (every page-derived string made safe for a terminal): the verdict,
/// pages, third-party hosts by count, cookies, storage, findings worst first, errors.
pub fn summary(report: &ScanReport, engine: &Engine) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let id = report
        .id
        .map(|i| format!(" (scan #{i})"))
        .unwrap_or_default();
    let _ = writeln!(out, "pixelwatch scan of {}{id}", terminal(&report.site));
    let _ = writeln!(
        out,
        "  Verdict: {}",
        plain(&super::verdict::sentence(report, engine))
    );
    let _ = writeln!(
        out,
        "  {} pages ({} with errors) in {:.1}s, {} requests ({} third-party), {} skipped",
        s.pages,
        s.pages_errored,
        s.duration_ms as f64 / 1000.0,
        s.requests,
        s.third_party_requests,
        s.skipped
    );
    let _ = writeln!(
        out,
        "  {} cookies ({} third-party), {} storage keys, {} scripts, {} frames",
        s.cookies, s.third_party_cookies, s.storage_entries, s.scripts, s.frames
    );
    let cut = |reason: &str| s.settle_reasons.get(reason).copied().unwrap_or(0);
    if cut("max") + cut("timeout") > 0 {
        let _ = writeln!(
            out,
            "  {} pages watched until --settle-max, {} never finished loading (late tags there may be missed)",
            cut("max"),
            cut("timeout")
        );
    }
    if s.probes_skipped > 0 {
        let _ = writeln!(
            out,
            "  the form probe could not run on {} page(s) with forms (see pages[].probe_skipped): what their forms send was not checked",
            s.probes_skipped
        );
    }
    if !s.third_party_hosts.is_empty() {
        let _ = writeln!(out, "\nThird-party hosts (requests):");
        let mut hosts: Vec<_> = s.third_party_hosts.iter().collect();
        hosts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (host, n) in hosts.iter().take(25) {
            let _ = writeln!(out, "  {n:>5}  {}", terminal(host));
        }
        if hosts.len() > 25 {
            let _ = writeln!(out, "  ... and {} more", hosts.len() - 25);
        }
    }
    if !report.findings.is_empty() {
        let _ = writeln!(out, "\nFindings, worst first:");
        // One group per (severity, kind, vendor, rule), so 200 pages with one pixel read as one.
        let mut groups: BTreeMap<Group<'_>, Vec<&Finding>> = BTreeMap::new();
        for f in &report.findings {
            groups
                .entry((f.severity, f.kind.as_str(), f.vendor.as_deref(), &f.rule))
                .or_default()
                .push(f);
        }
        for ((severity, kind, vendor, rule), fs) in groups {
            let mut pages: Vec<&str> = fs.iter().map(|f| f.page.as_str()).collect();
            pages.sort();
            pages.dedup();
            let f = fs[0];
            let _ = writeln!(
                out,
                "  [{}] {} {}: on {} page{} (e.g. {})",
                severity.as_str().to_uppercase(),
                terminal(kind),
                terminal(vendor.unwrap_or("-")),
                pages.len(),
                if pages.len() == 1 { "" } else { "s" },
                terminal(pages[0])
            );
            let _ = writeln!(
                out,
                "      {}  [rule {}]",
                plain(&untrusted::evidence(&f.evidence, f.matched.as_deref())),
                terminal(rule)
            );
        }
    }
    let errored: Vec<_> = report.pages.iter().filter(|p| p.error.is_some()).collect();
    if !errored.is_empty() {
        let _ = writeln!(out, "\nPages with errors:");
        for p in errored.iter().take(20) {
            let _ = writeln!(
                out,
                "  {}: {}",
                terminal(&p.url),
                terminal(p.error.as_deref().unwrap_or_default())
            );
        }
        if errored.len() > 20 {
            let _ = writeln!(out, "  ... and {} more", errored.len() - 20);
        }
    }
    if s.cdp_decode_failures > 0 {
        let _ = writeln!(
            out,
            "\nWarning: {} browser protocol messages could not be decoded; results may be incomplete.",
            s.cdp_decode_failures
        );
    }
    out
}

/// `scans list` as a table.
pub fn scan_table(rows: &[ScanRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:<20}  {:>5}  {:>6}  {:>9}  {:>7}  {:>8}  {:<8}  site",
        "id", "finished", "pages", "errors", "3p hosts", "cookies", "findings", "worst"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>5}  {:<20}  {:>5}  {:>6}  {:>9}  {:>7}  {:>8}  {:<8}  {}",
            r.id,
            r.finished_at,
            r.pages,
            r.pages_errored,
            r.third_party_hosts,
            r.cookies,
            r.findings,
            r.worst_severity.as_deref().unwrap_or("-"),
            terminal(&r.site)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_group_per_cause_even_when_pages_interleave_rules() {
        let f = |page: &str, rule: &str, evidence: &str| Finding {
            kind: crate::model::FindingKind::PhiLeak,
            severity: Severity::Critical,
            vendor: Some("meta".into()),
            page: page.into(),
            request_url: None,
            evidence: evidence.into(),
            rule: rule.into(),
            matched: None,
        };
        let report = ScanReport {
            pages: vec![],
            findings: vec![
                f("https://c.test/a", "health-terms.toml:glp1_drug", "x"),
                f("https://c.test/b", "builtin:an_email_address", "y\u{1b}[2J"),
                f("https://c.test/c", "health-terms.toml:glp1_drug", "x"),
            ],
            ..crate::report::empty_report("https://c.test/")
        };
        let s = summary(&report, &Engine::bundled());
        assert_eq!(s.matches("glp1_drug").count(), 1, "{s}");
        assert!(
            s.contains("[CRITICAL] phi_leak meta: on 2 pages (e.g. https://c.test/a)"),
            "{s}"
        );
        assert!(s.contains("y\\x1b[2J") && !s.contains('\u{1b}'), "{s}");
    }
}
