//! The end-of-scan summary people read in a terminal.

use std::fmt::Write as _;

use crate::model::ScanReport;
use crate::store::ScanRow;

/// A plain-text summary: pages, third-party hosts by count, cookies, storage, findings worst
/// first, errors.
pub fn summary(report: &ScanReport) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let id = report
        .id
        .map(|i| format!(" (scan #{i})"))
        .unwrap_or_default();
    let _ = writeln!(out, "pixelwatch scan of {}{id}", report.site);
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
    if !s.third_party_hosts.is_empty() {
        let _ = writeln!(out, "\nThird-party hosts (requests):");
        let mut hosts: Vec<_> = s.third_party_hosts.iter().collect();
        hosts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (host, n) in hosts.iter().take(25) {
            let _ = writeln!(out, "  {n:>5}  {host}");
        }
        if hosts.len() > 25 {
            let _ = writeln!(out, "  ... and {} more", hosts.len() - 25);
        }
    }
    if !report.findings.is_empty() {
        let _ = writeln!(out, "\nFindings, worst first:");
        let mut findings: Vec<_> = report.findings.iter().collect();
        findings.sort_by(|a, b| {
            (a.severity, &a.kind, &a.vendor, &a.page)
                .cmp(&(b.severity, &b.kind, &b.vendor, &b.page))
        });
        // Group identical (severity, kind, vendor, rule) so 200 pages with one pixel read as one.
        let mut i = 0;
        while i < findings.len() {
            let f = findings[i];
            let mut j = i;
            while j < findings.len()
                && findings[j].severity == f.severity
                && findings[j].kind == f.kind
                && findings[j].vendor == f.vendor
                && findings[j].rule == f.rule
            {
                j += 1;
            }
            let pages = j - i;
            let _ = writeln!(
                out,
                "  [{}] {} {}: on {} page{} (e.g. {})",
                f.severity.as_str().to_uppercase(),
                f.kind,
                f.vendor.as_deref().unwrap_or("-"),
                pages,
                if pages == 1 { "" } else { "s" },
                f.page
            );
            let _ = writeln!(out, "      {}  [rule {}]", f.evidence, f.rule);
            i = j;
        }
    }
    let errored: Vec<_> = report.pages.iter().filter(|p| p.error.is_some()).collect();
    if !errored.is_empty() {
        let _ = writeln!(out, "\nPages with errors:");
        for p in errored.iter().take(20) {
            let _ = writeln!(
                out,
                "  {}: {}",
                p.url,
                p.error.as_deref().unwrap_or_default()
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
            r.site
        );
    }
    out
}
