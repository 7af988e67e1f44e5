//! Outputs for CI systems from a `check`: JUnit XML, SARIF 2.1.0 (GitHub code scanning) and
//! Markdown (job summaries, PR comments).

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::diff::Drift;
use crate::model::{ScanReport, Severity};
use crate::policy::Violation;

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// JUnit XML: one test case per page (failing with that page's violations) and one for the
/// site as a whole (vendors, drift).
pub fn junit(report: &ScanReport, violations: &[Violation]) -> String {
    let mut cases: Vec<(String, Vec<&Violation>)> = report
        .pages
        .iter()
        .map(|p| (p.url.clone(), Vec::new()))
        .collect();
    let mut site_wide = Vec::new();
    for v in violations {
        let mut placed = false;
        for page in &v.pages {
            if let Some(case) = cases.iter_mut().find(|(u, _)| u == page) {
                case.1.push(v);
                placed = true;
            }
        }
        if !placed {
            site_wide.push(v);
        }
    }
    cases.push(("site policy".into(), site_wide));
    let failures = cases.iter().filter(|(_, v)| !v.is_empty()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"pixelwatch\" tests=\"{}\" failures=\"{failures}\">",
        cases.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"pixelwatch check {}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">",
        xml_escape(&report.site),
        cases.len()
    );
    for (name, vs) in &cases {
        let _ = write!(
            out,
            "    <testcase classname=\"pixelwatch.policy\" name=\"{}\"",
            xml_escape(name)
        );
        if vs.is_empty() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        let first = vs[0];
        let body: Vec<String> = vs
            .iter()
            .map(|v| format!("[{}] {}: {}", v.severity.as_str(), v.rule, v.message))
            .collect();
        let _ = writeln!(
            out,
            "      <failure message=\"{}\" type=\"{}\">{}</failure>",
            xml_escape(&first.message),
            xml_escape(&first.rule),
            xml_escape(&body.join("\n"))
        );
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// SARIF 2.1.0 with one rule per policy rule and one result per violation and page.
pub fn sarif(report: &ScanReport, violations: &[Violation]) -> Value {
    let mut rule_ids: Vec<&str> = violations.iter().map(|v| v.rule.as_str()).collect();
    rule_ids.sort();
    rule_ids.dedup();
    let rules: Vec<Value> = rule_ids
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "name": id.replace('.', "_"),
                "shortDescription": {"text": rule_text(id)},
                "fullDescription": {"text": rule_text(id)},
                "helpUri": "https://github.com/pixelwatch/pixelwatch#the-ci-gate",
                "properties": {"tags": ["privacy", "hipaa", "tracking"]},
            })
        })
        .collect();
    let mut results = Vec::new();
    for v in violations {
        let pages: Vec<&str> = if v.pages.is_empty() {
            vec![report.site.as_str()]
        } else {
            v.pages.iter().map(String::as_str).collect()
        };
        for page in pages {
            results.push(json!({
                "ruleId": v.rule,
                "ruleIndex": rule_ids.iter().position(|r| *r == v.rule).unwrap_or(0),
                "level": sarif_level(v.severity),
                "message": {"text": format!("{} (page {page})", v.message)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": page},
                        "region": {"startLine": 1}
                    }
                }],
                "properties": {"severity": v.severity.as_str()},
            }));
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "pixelwatch",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/pixelwatch/pixelwatch",
                "rules": rules,
            }},
            "results": results,
            "properties": {"site": report.site, "scanStartedAt": report.started_at},
        }]
    })
}

fn rule_text(id: &str) -> &'static str {
    match id {
        "deny.categories" => {
            "A vendor of a denied category (e.g. an advertising pixel) is on the site"
        }
        "deny.vendors" => "A denied vendor is on the site",
        "deny.hosts" => "The site sends requests to a denied host",
        "deny.cookies" => "The site sets a denied cookie",
        "deny.finding_kinds" => "A denied finding (e.g. health information sent to a tracker)",
        "drift" => "Something new since the approved baseline",
        _ => "pixelwatch policy rule",
    }
}

/// Markdown for job summaries and PR comments.
pub fn markdown(report: &ScanReport, violations: &[Violation], drift: Option<&Drift>) -> String {
    let mut out = String::new();
    let verdict = if violations.is_empty() {
        "passed"
    } else {
        "failed"
    };
    let _ = writeln!(out, "## pixelwatch check {verdict}: {}\n", report.site);
    let _ = writeln!(
        out,
        "Scanned {} pages ({} with errors), {} third-party hosts, {} cookies, {} findings.\n",
        report.summary.pages,
        report.summary.pages_errored,
        report.summary.third_party_hosts.len(),
        report.summary.cookies,
        report.summary.findings
    );
    if !violations.is_empty() {
        let _ = writeln!(out, "| severity | rule | what | pages |\n|---|---|---|---|");
        for v in violations {
            let more = if v.pages_total > 3 {
                format!(" (+{} more)", v.pages_total - 3)
            } else {
                String::new()
            };
            let pages: Vec<String> = v.pages.iter().take(3).map(|p| format!("`{p}`")).collect();
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {}{more} |",
                v.severity.as_str(),
                v.rule,
                v.message.replace('|', "\\|"),
                pages.join(", ")
            );
        }
        out.push('\n');
    }
    if let Some(d) = drift {
        if d.is_empty() {
            let _ = writeln!(out, "No drift against the baseline.");
        } else {
            let _ = writeln!(out, "### Drift against the baseline\n\n```diff");
            for i in &d.added {
                let _ = writeln!(out, "+ {} {}", i.category, i.key);
            }
            for i in &d.removed {
                let _ = writeln!(out, "- {} {}", i.category, i.key);
            }
            let _ = writeln!(out, "```");
        }
    }
    out
}
