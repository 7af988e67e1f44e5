//! What an alert says: subject, plain text and HTML for drift, a site that is down, and a test.

use std::fmt::Write as _;

use crate::diff::{Baseline, Drift, DriftItem};
use crate::model::{Finding, ScanReport, Severity};

/// Most findings listed per finding identity.
const MAX_FINDINGS_PER_KEY: usize = 5;
/// Most pages listed per drifted item.
const MAX_PAGES: usize = 5;
/// Evidence longer than this is cut.
const MAX_EVIDENCE: usize = 300;

/// The identity of a finding as the drift inventory spells it (`diff::inventory`).
fn finding_key(f: &Finding) -> String {
    let vendor = f.vendor.as_deref().unwrap_or("-");
    format!("{} {} {} [{}]", f.severity.as_str(), f.kind, vendor, f.rule)
}

/// A new finding identity with the findings behind it.
pub(crate) struct NewFinding<'a> {
    pub key: &'a str,
    pub findings: Vec<&'a Finding>,
}

/// New findings (drift items of category "finding") with their evidence from the report.
pub(crate) fn new_findings<'a>(drift: &'a Drift, report: &'a ScanReport) -> Vec<NewFinding<'a>> {
    drift
        .added
        .iter()
        .filter(|i| i.category == "finding")
        .map(|i| NewFinding {
            key: &i.key,
            findings: report
                .findings
                .iter()
                .filter(|f| finding_key(f) == i.key)
                .collect(),
        })
        .collect()
}

/// The worst severity among new findings (low when only inventory items appeared).
pub(crate) fn worst(new: &[NewFinding<'_>]) -> Severity {
    new.iter()
        .flat_map(|n| n.findings.iter().map(|f| f.severity))
        .min()
        .unwrap_or(Severity::Low)
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}...")
}

fn pages_line(item: &DriftItem) -> String {
    let shown: Vec<&str> = item
        .pages
        .iter()
        .take(MAX_PAGES)
        .map(String::as_str)
        .collect();
    let more = item.pages.len().saturating_sub(MAX_PAGES);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

pub(crate) use crate::report::html::esc;

/// Subject, text and HTML of a drift alert.
pub(crate) fn drift(
    drift: &Drift,
    report: &ScanReport,
    baseline: Option<&Baseline>,
    new: &[NewFinding<'_>],
    severity: Severity,
) -> (String, String, String) {
    let sev = severity.as_str().to_uppercase();
    let vendors: Vec<&str> = drift
        .added
        .iter()
        .filter(|i| i.category == "vendor")
        .map(|i| i.key.as_str())
        .collect();
    let what = if vendors.is_empty() {
        format!("{} new item(s)", drift.added.len())
    } else {
        vendors.join(", ")
    };
    let subject = format!(
        "[pixelwatch] {sev}: new tracking on {} ({what})",
        drift.site
    );
    let scan = report
        .id
        .map(|i| format!("#{i}"))
        .unwrap_or_else(|| "-".into());
    let approve = format!(
        "pixelwatch baseline approve --site {}{}",
        drift.site,
        report
            .id
            .map(|i| format!(" --scan {i}"))
            .unwrap_or_default()
    );

    let mut t = String::new();
    let _ = writeln!(t, "New tracking on {}", drift.site);
    let _ = writeln!(t, "Highest severity: {sev}");
    let _ = writeln!(t, "Scan {scan} finished {}.", report.finished_at);
    match baseline {
        Some(b) => {
            let _ = writeln!(
                t,
                "Compared with the baseline approved {}{}.",
                b.approved_at,
                b.scan_id
                    .map(|i| format!(" (scan #{i})"))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(
                t,
                "The site has no approved baseline yet, so everything this scan found is listed."
            );
        }
    }
    if !new.is_empty() {
        let _ = writeln!(t, "\nNew findings ({}):", new.len());
        for n in new {
            let _ = writeln!(t, "  {}", n.key);
            for f in n.findings.iter().take(MAX_FINDINGS_PER_KEY) {
                let _ = writeln!(
                    t,
                    "    [{}] page: {}",
                    f.severity.as_str().to_uppercase(),
                    f.page
                );
                if let Some(r) = &f.request_url {
                    let _ = writeln!(t, "      request:  {}", cut(r, MAX_EVIDENCE));
                }
                let _ = writeln!(t, "      evidence: {}", cut(&f.evidence, MAX_EVIDENCE));
            }
            if n.findings.len() > MAX_FINDINGS_PER_KEY {
                let _ = writeln!(
                    t,
                    "    ... and {} more",
                    n.findings.len() - MAX_FINDINGS_PER_KEY
                );
            }
        }
    }
    let _ = writeln!(t, "\nWhat appeared ({}):", drift.added.len());
    for i in &drift.added {
        let _ = writeln!(
            t,
            "  + {:<18} {}  (on {})",
            i.category,
            i.key,
            pages_line(i)
        );
    }
    if !drift.removed.is_empty() {
        let _ = writeln!(
            t,
            "\nGone since the baseline: {} item(s); see `pixelwatch diff{}`.",
            drift.removed.len(),
            report
                .id
                .map(|i| format!(" --scan {i}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        t,
        "\nThis drift is not sent again until it changes. If the change is intended, approve it:\n  {approve}"
    );

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\n<h2>New tracking on {}</h2>\n<p>Highest severity: <strong>{sev}</strong><br>Scan {scan} finished {}.<br>",
        esc(&drift.site),
        esc(&report.finished_at)
    );
    match baseline {
        Some(b) => {
            let _ = writeln!(
                h,
                "Compared with the baseline approved {}{}.</p>",
                esc(&b.approved_at),
                b.scan_id
                    .map(|i| format!(" (scan #{i})"))
                    .unwrap_or_default()
            );
        }
        None => h.push_str(
            "The site has no approved baseline yet, so everything this scan found is listed.</p>\n",
        ),
    }
    if !new.is_empty() {
        let _ = writeln!(h, "<h3>New findings ({})</h3>", new.len());
        h.push_str("<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n<tr><th>Severity</th><th>Finding</th><th>Page</th><th>Request</th><th>Evidence</th></tr>\n");
        for n in new {
            for f in n.findings.iter().take(MAX_FINDINGS_PER_KEY) {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    f.severity.as_str().to_uppercase(),
                    esc(n.key),
                    esc(&f.page),
                    esc(&cut(f.request_url.as_deref().unwrap_or("-"), MAX_EVIDENCE)),
                    esc(&cut(&f.evidence, MAX_EVIDENCE))
                );
            }
        }
        h.push_str("</table>\n");
    }
    let _ = writeln!(h, "<h3>What appeared ({})</h3>\n<ul>", drift.added.len());
    for i in &drift.added {
        let _ = writeln!(
            h,
            "<li>{} <code>{}</code> on {}</li>",
            esc(&i.category),
            esc(&i.key),
            esc(&pages_line(i))
        );
    }
    h.push_str("</ul>\n");
    if !drift.removed.is_empty() {
        let _ = writeln!(
            h,
            "<p>Gone since the baseline: {} item(s).</p>",
            drift.removed.len()
        );
    }
    let _ = writeln!(
        h,
        "<p>This drift is not sent again until it changes. If the change is intended, approve it:<br><code>{}</code></p>\n</body></html>",
        esc(&approve)
    );
    (subject, t, h)
}

/// Subject, text and HTML of "the site could not be scanned N times in a row".
pub(crate) fn site_down(site: &str, failures: u32, error: &str) -> (String, String, String) {
    let subject = format!("[pixelwatch] {site} could not be scanned {failures} times in a row");
    let text = format!(
        "pixelwatch could not scan {site} {failures} times in a row.\nLast error: {error}\n\nWatching goes on; no further alert is sent until a scan succeeds and fails again.\n"
    );
    let html = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\"><h2>{} could not be scanned {failures} times in a row</h2><p>Last error: {}</p><p>Watching goes on; no further alert is sent until a scan succeeds and fails again.</p></body></html>\n",
        esc(site),
        esc(error)
    );
    (subject, text, html)
}

/// Subject, text and HTML of `pixelwatch alert test`.
pub(crate) fn test(at: &str) -> (String, String, String) {
    let subject = "[pixelwatch] test alert".to_string();
    let text = format!(
        "This is a test alert from pixelwatch, sent {at}.\nIf you can read it, alerts reach you.\n"
    );
    let html = format!(
        "<!DOCTYPE html><html><body><p>This is a test alert from pixelwatch, sent {}.</p><p>If you can read it, alerts reach you.</p></body></html>\n",
        esc(at)
    );
    (subject, text, html)
}
