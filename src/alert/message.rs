//! What an alert says: subject, plain text and HTML for drift, a site that is down, and a test.
//!
//! Page-derived text goes through `report::untrusted` ([`plain`]/[`terminal`] for the text part,
//! [`h`] for HTML); each kind of drift lists at most [`MAX_ITEMS_PER_KIND`] items, then "and K
//! more"; evidence is excerpted.

use std::fmt::Write as _;

use crate::diff::{Baseline, Drift, DriftItem, by_category};
use crate::model::{Finding, ScanReport, Severity};
use crate::report::untrusted::{self, html as h, plain, terminal};

/// Most findings listed per finding identity.
const MAX_FINDINGS_PER_KEY: usize = 5;
/// Most new finding identities listed.
const MAX_NEW_FINDINGS: usize = 20;
/// Most pages listed per drifted item.
const MAX_PAGES: usize = 5;
/// Most drift items listed per kind (vendor, cookie, storage, ...).
pub(crate) const MAX_ITEMS_PER_KIND: usize = 10;

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

fn pages_line(item: &DriftItem, render: impl Fn(&str) -> String) -> String {
    untrusted::list_more(&item.pages, MAX_PAGES, render)
}

fn evidence(f: &Finding) -> String {
    untrusted::evidence(&f.evidence, f.matched.as_deref())
}

pub(crate) use crate::report::untrusted::esc;

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
        untrusted::list_more(&vendors, 5, terminal)
    };
    let subject = format!(
        "[pixelwatch] {sev}: new tracking on {} ({what})",
        terminal(&drift.site)
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
    let _ = writeln!(t, "New tracking on {}", terminal(&drift.site));
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
        for n in new.iter().take(MAX_NEW_FINDINGS) {
            let _ = writeln!(t, "  {}", terminal(n.key));
            for f in n.findings.iter().take(MAX_FINDINGS_PER_KEY) {
                let _ = writeln!(
                    t,
                    "    [{}] page: {}",
                    f.severity.as_str().to_uppercase(),
                    terminal(&f.page)
                );
                if let Some(r) = &f.request_url {
                    let _ = writeln!(t, "      request:  {}", terminal(r));
                }
                let _ = writeln!(t, "      evidence: {}", plain(&evidence(f)));
            }
            if n.findings.len() > MAX_FINDINGS_PER_KEY {
                let _ = writeln!(
                    t,
                    "    ... and {} more",
                    n.findings.len() - MAX_FINDINGS_PER_KEY
                );
            }
        }
        if new.len() > MAX_NEW_FINDINGS {
            let _ = writeln!(t, "  ... and {} more", new.len() - MAX_NEW_FINDINGS);
        }
    }
    let _ = writeln!(t, "\nWhat appeared ({}):", drift.added.len());
    for (category, items) in by_category(&drift.added) {
        for i in items.iter().take(MAX_ITEMS_PER_KIND) {
            let _ = writeln!(
                t,
                "  + {:<18} {}  (on {})",
                category,
                terminal(&i.key),
                pages_line(i, terminal)
            );
        }
        if items.len() > MAX_ITEMS_PER_KIND {
            let _ = writeln!(
                t,
                "  + {:<18} ... and {} more",
                category,
                items.len() - MAX_ITEMS_PER_KIND
            );
        }
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

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\n<h2>New tracking on {}</h2>\n<p>Highest severity: <strong>{sev}</strong><br>Scan {scan} finished {}.<br>",
        h(&drift.site),
        h(&report.finished_at)
    );
    match baseline {
        Some(b) => {
            let _ = writeln!(
                html,
                "Compared with the baseline approved {}{}.</p>",
                esc(&b.approved_at),
                b.scan_id
                    .map(|i| format!(" (scan #{i})"))
                    .unwrap_or_default()
            );
        }
        None => html.push_str(
            "The site has no approved baseline yet, so everything this scan found is listed.</p>\n",
        ),
    }
    if !new.is_empty() {
        let _ = writeln!(html, "<h3>New findings ({})</h3>", new.len());
        html.push_str("<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n<tr><th>Severity</th><th>Finding</th><th>Page</th><th>Request</th><th>Evidence</th></tr>\n");
        for n in new.iter().take(MAX_NEW_FINDINGS) {
            for f in n.findings.iter().take(MAX_FINDINGS_PER_KEY) {
                let _ = writeln!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    f.severity.as_str().to_uppercase(),
                    h(n.key),
                    h(&untrusted::cut(&f.page, untrusted::TEXT_MAX)),
                    h(&untrusted::cut(
                        f.request_url.as_deref().unwrap_or("-"),
                        untrusted::TEXT_MAX
                    )),
                    untrusted::html_marked(&evidence(f), f.matched.as_deref())
                );
            }
        }
        html.push_str("</table>\n");
    }
    let _ = writeln!(html, "<h3>What appeared ({})</h3>\n<ul>", drift.added.len());
    for (category, items) in by_category(&drift.added) {
        for i in items.iter().take(MAX_ITEMS_PER_KIND) {
            let _ = writeln!(
                html,
                "<li>{} <code>{}</code> on {}</li>",
                esc(category),
                h(&untrusted::cut(&i.key, untrusted::TEXT_MAX)),
                pages_line(i, |p| h(&untrusted::cut(p, untrusted::TEXT_MAX)))
            );
        }
        if items.len() > MAX_ITEMS_PER_KIND {
            let _ = writeln!(
                html,
                "<li>{} and {} more</li>",
                esc(category),
                items.len() - MAX_ITEMS_PER_KIND
            );
        }
    }
    html.push_str("</ul>\n");
    if !drift.removed.is_empty() {
        let _ = writeln!(
            html,
            "<p>Gone since the baseline: {} item(s).</p>",
            drift.removed.len()
        );
    }
    let _ = writeln!(
        html,
        "<p>This drift is not sent again until it changes. If the change is intended, approve it:<br><code>{}</code></p>\n</body></html>",
        esc(&approve)
    );
    (subject, t, html)
}

/// Subject, text and HTML of "the site could not be scanned N times in a row".
pub(crate) fn site_down(site: &str, failures: u32, error: &str) -> (String, String, String) {
    let (site_t, error_t) = (terminal(site), terminal(error));
    let subject = format!("[pixelwatch] {site_t} could not be scanned {failures} times in a row");
    let text = format!(
        "pixelwatch could not scan {site_t} {failures} times in a row.\nLast error: {error_t}\n\nWatching goes on; no further alert is sent until a scan succeeds and fails again.\n"
    );
    let html = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\"><h2>{} could not be scanned {failures} times in a row</h2><p>Last error: {}</p><p>Watching goes on; no further alert is sent until a scan succeeds and fails again.</p></body></html>\n",
        h(&untrusted::cut(site, untrusted::TEXT_MAX)),
        h(&untrusted::cut(error, untrusted::TEXT_MAX))
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
