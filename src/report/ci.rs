//! Outputs for CI systems from a `check`: JUnit XML, SARIF 2.1.0 (GitHub code scanning) and
//! Markdown (job summaries, PR comments). Page-derived text goes through [`untrusted`]: XML
//! escaping for JUnit, visible escapes for SARIF messages, code spans for Markdown.

use std::fmt::Write as _;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::untrusted::{self, md_cell, md_code, md_fence, xml};
use crate::diff::Drift;
use crate::model::{ScanReport, Severity};
use crate::policy::Violation;
use crate::rules::Engine;

/// Most violations in a Markdown table, reasons per violation, drift lines per category.
const MD_MAX_VIOLATIONS: usize = 50;
const MAX_REASONS: usize = 5;
const MD_MAX_DRIFT: usize = 20;
/// GitHub shows at most 10 locations of a result; the rest of the pages go to properties.
const SARIF_MAX_LOCATIONS: usize = 10;
/// Characters of a SARIF message.
const SARIF_MESSAGE_MAX: usize = 1000;

/// JUnit XML: one test case per page (failing with the violations on that page) and one for the
/// site as a whole (violations with no page).
pub fn junit(report: &ScanReport, violations: &[Violation]) -> String {
    let mut cases: Vec<(&str, Vec<&Violation>)> = report
        .pages
        .iter()
        .map(|p| (p.url.as_str(), Vec::new()))
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
    cases.push(("site policy", site_wide));
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
        xml(&untrusted::cut(&report.site, untrusted::TEXT_MAX)),
        cases.len()
    );
    for (name, vs) in &cases {
        let _ = write!(
            out,
            "    <testcase classname=\"pixelwatch.policy\" name=\"{}\"",
            xml(&untrusted::cut(name, untrusted::TEXT_MAX))
        );
        let Some(first) = vs.first() else {
            out.push_str("/>\n");
            continue;
        };
        out.push_str(">\n");
        let mut body = String::new();
        for v in vs {
            let _ = writeln!(body, "[{}] {}", v.severity.as_str(), one_line(v));
            for r in v.reasons.iter().take(MAX_REASONS) {
                if let Some(e) = &r.evidence {
                    let _ = writeln!(
                        body,
                        "    evidence: {}",
                        untrusted::plain(&untrusted::evidence(e, r.matched.as_deref()))
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "      <failure message=\"{}\" type=\"{}\">{}</failure>",
            xml(&untrusted::cut(&one_line(first), 500)),
            xml(&first.rule),
            // Lines of the body stay lines: escape each, join with real newlines.
            body.lines().map(xml).collect::<Vec<_>>().join("\n")
        );
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// A violation in one line (page-derived text made visible-safe): title and up to
/// [`MAX_REASONS`] reasons, each cut.
fn one_line(v: &Violation) -> String {
    let reasons: Vec<&str> = v.reasons.iter().map(|r| r.text.as_str()).collect();
    format!(
        "{}: {} [{}]",
        untrusted::terminal(&v.title),
        untrusted::list_more(&reasons, MAX_REASONS, untrusted::terminal),
        v.rules.join(", ")
    )
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// A page URL as a scheme-less relative URI reference (`host/path?query`), which GitHub code
/// scanning accepts (an `https:` URI fails the whole upload against its `file:` checkout). A port
/// keeps its colon percent-encoded, so the host is never read as a scheme; anything RFC 3986 does
/// not allow in a reference is percent-encoded.
pub fn sarif_uri(page: &str) -> String {
    let (authority, rest) = match url::Url::parse(page) {
        Ok(u) if u.host_str().is_some() => {
            let host = u.host_str().unwrap_or_default().to_string();
            let authority = match u.port() {
                Some(p) => format!("{host}%3A{p}"),
                None => host,
            };
            let mut rest = u.path().to_string();
            if let Some(q) = u.query() {
                rest.push('?');
                rest.push_str(q);
            }
            (authority, rest)
        }
        _ => (page.replace(':', "%3A"), String::new()),
    };
    let mut out = String::new();
    for (i, part) in [authority, rest].iter().enumerate() {
        for b in part.bytes() {
            let keep = b.is_ascii_alphanumeric()
                || b"-._~!$&'()*+,;=@/?%".contains(&b)
                || (b == b':' && i == 1);
            if keep {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The stable identity of a violation for code scanning: the same cause is the same alert
/// across runs (whatever page it is first seen on).
pub fn fingerprint(v: &Violation) -> String {
    hex::encode(Sha256::digest(format!("pixelwatch\n{}", v.cause)))
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

/// SARIF 2.1.0 for GitHub code scanning: one result per violation (cause), located at its first
/// page as a scheme-less URI with the other pages as related locations, the full URLs in the
/// message and properties, and a `partialFingerprints` that is stable across runs.
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
                "help": {
                    "text": format!("{}. See the policy file reference: https://github.com/pixelwatch/pixelwatch#the-ci-gate-baselines-and-drift", rule_text(id)),
                },
                "helpUri": "https://github.com/pixelwatch/pixelwatch#the-ci-gate-baselines-and-drift",
                "properties": {"tags": ["privacy", "hipaa", "tracking"]},
            })
        })
        .collect();
    let results: Vec<Value> = violations
        .iter()
        .map(|v| {
            let pages: Vec<&str> = if v.pages.is_empty() {
                vec![report.site.as_str()]
            } else {
                v.pages.iter().map(String::as_str).collect()
            };
            let location = |id: usize, page: &str| {
                json!({
                    "id": id,
                    "physicalLocation": {
                        "artifactLocation": {"uri": sarif_uri(page)},
                        "region": {"startLine": 1, "startColumn": 1, "endLine": 1, "endColumn": 2},
                    },
                    "message": {"text": untrusted::plain(&untrusted::cut(page, SARIF_MESSAGE_MAX))},
                })
            };
            let more = v.pages_total.saturating_sub(1);
            let text = format!(
                "{}. Page: {}{}",
                one_line(v),
                pages[0],
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
            let fp = fingerprint(v);
            json!({
                "ruleId": v.rule,
                "ruleIndex": rule_ids.iter().position(|r| *r == v.rule).unwrap_or(0),
                "level": sarif_level(v.severity),
                "message": {"text": untrusted::plain(&untrusted::cut(&text, SARIF_MESSAGE_MAX))},
                "locations": [location(0, pages[0])],
                "relatedLocations": pages.iter().skip(1).take(SARIF_MAX_LOCATIONS - 1).enumerate()
                    .map(|(i, p)| location(i + 1, p)).collect::<Vec<_>>(),
                "partialFingerprints": {
                    "primaryLocationLineHash": format!("{}:1", &fp[..16]),
                    "pixelwatchCause/v1": fp,
                },
                "properties": {
                    "severity": v.severity.as_str(),
                    "cause": untrusted::plain(&v.cause),
                    "rules": v.rules,
                    "url": pages[0],
                    "pages": pages,
                    "pagesTotal": v.pages_total,
                },
            })
        })
        .collect();
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

/// Markdown for job summaries and PR comments: the verdict, one table row per violation, the
/// drift as a diff block. Nothing from a page leaves a code span or the code block.
pub fn markdown(
    report: &ScanReport,
    violations: &[Violation],
    drift: Option<&Drift>,
    engine: &Engine,
) -> String {
    let mut out = String::new();
    let verdict = if violations.is_empty() {
        "passed"
    } else {
        "failed"
    };
    let _ = writeln!(
        out,
        "## pixelwatch check {verdict}: {}\n",
        md_code(&report.site)
    );
    let _ = writeln!(
        out,
        "**Verdict:** {}\n",
        md_code(&super::verdict::sentence(report, engine))
    );
    let _ = writeln!(
        out,
        "Scanned {} pages ({} with errors), {} third-party hosts, {} cookies, {} findings; {} policy violation(s).\n",
        report.summary.pages,
        report.summary.pages_errored,
        report.summary.third_party_hosts.len(),
        report.summary.cookies,
        report.summary.findings,
        violations.len()
    );
    if report.summary.probes_skipped > 0 {
        let _ = writeln!(
            out,
            "The form probe could not run on {} page(s) with forms: what those forms send was not checked.\n",
            report.summary.probes_skipped
        );
    }
    if !violations.is_empty() {
        let _ = writeln!(out, "| severity | cause | why | pages |\n|---|---|---|---|");
        for v in violations.iter().take(MD_MAX_VIOLATIONS) {
            let mut why: Vec<String> = v
                .reasons
                .iter()
                .take(MAX_REASONS)
                .map(|r| {
                    let mut s = format!("{} {}", r.rule, md_cell(&r.text));
                    if let Some(e) = &r.evidence {
                        let _ = write!(
                            s,
                            ": {}",
                            md_cell(&untrusted::evidence(e, r.matched.as_deref()))
                        );
                    }
                    s
                })
                .collect();
            if v.reasons.len() > MAX_REASONS {
                why.push(format!("and {} more", v.reasons.len() - MAX_REASONS));
            }
            let pages: Vec<String> = v.pages.iter().take(3).map(|p| md_cell(p)).collect();
            let more = v.pages_total.saturating_sub(pages.len());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}{} |",
                v.severity.as_str(),
                md_cell(&v.title),
                why.join("<br>"),
                pages.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
        if violations.len() > MD_MAX_VIOLATIONS {
            let _ = writeln!(
                out,
                "\nand {} more violations (see the SARIF or JUnit output).",
                violations.len() - MD_MAX_VIOLATIONS
            );
        }
        out.push('\n');
    }
    if let Some(d) = drift {
        if d.is_empty() {
            let _ = writeln!(out, "No drift against the baseline.");
        } else {
            let mut body = String::new();
            for (sign, items) in [("+", &d.added), ("-", &d.removed)] {
                for (category, items) in crate::diff::by_category(items) {
                    for i in items.iter().take(MD_MAX_DRIFT) {
                        let _ = writeln!(body, "{sign} {category} {}", md_fence(&i.key));
                    }
                    if items.len() > MD_MAX_DRIFT {
                        let _ = writeln!(
                            body,
                            "{sign} {category} ... and {} more",
                            items.len() - MD_MAX_DRIFT
                        );
                    }
                }
            }
            let fence = untrusted::fence_for(&body);
            let _ = writeln!(
                out,
                "### Drift against the baseline\n\n{fence}diff\n{body}{fence}"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Finding, Page, Request};
    use crate::policy::Policy;

    /// A page with a TikTok pixel whose event name carries a health term and page markup.
    fn leaky() -> ScanReport {
        let mut r = crate::report::empty_report("https://c.test/");
        r.pages = vec![Page {
            url: "https://c.test/book".into(),
            requests: vec![Request {
                url: "https://analytics.tiktok.com/api/v2/pixel".into(),
                host: "analytics.tiktok.com".into(),
                third_party: true,
                vendor: Some("tiktok".into()),
                ..Default::default()
            }],
            ..Default::default()
        }];
        r.findings = vec![Finding {
            kind: crate::model::FindingKind::PhiLeak,
            severity: Severity::Critical,
            vendor: Some("tiktok".into()),
            page: "https://c.test/book".into(),
            request_url: Some("https://analytics.tiktok.com/api/v2/pixel".into()),
            evidence: "event name 'Ozempic|`@here`\n# x' in body field 'event' contains the health term 'ozempic' (glp1_drug)".into(),
            rule: "vendors.toml:tiktok:event_name".into(),
            matched: Some("ozempic".into()),
        }];
        r.summary.pages = 1;
        r.summary.findings = 1;
        r
    }

    const MARKDOWN: &str = "## pixelwatch check failed: `https://c.test/`

**Verdict:** `TikTok pixel, which signs no BAA, receives health information on 1 page.`

Scanned 1 pages (0 with errors), 0 third-party hosts, 0 cookies, 1 findings; 1 policy violation(s).

| severity | cause | why | pages |
|---|---|---|---|
| critical | `TikTok Pixel (tiktok, advertising, offers no BAA)` | deny.categories `advertising vendor on 1 page(s)`<br>deny.finding_kinds `phi_leak [rule vendors.toml:tiktok:event_name] on 1 page(s)`: ``event name 'Ozempic\\|`@here`\\\\n# x' in body field 'event' contains the health term 'ozempic' (glp1_drug)`` | `https://c.test/book` |

";

    #[test]
    fn markdown_snapshot_keeps_page_text_in_code() {
        let r = leaky();
        let engine = Engine::bundled();
        let v = Policy::default().evaluate(&r, None, &engine);
        assert_eq!(v.len(), 1);
        let md = markdown(&r, &v, None, &engine);
        assert_eq!(md, MARKDOWN, "{md}");
    }

    const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="pixelwatch" tests="2" failures="1">
  <testsuite name="pixelwatch check https://c.test/" tests="2" failures="1" errors="0" skipped="0">
    <testcase classname="pixelwatch.policy" name="https://c.test/book">
      <failure message="TikTok Pixel (tiktok, advertising, offers no BAA): advertising vendor on 1 page(s), phi_leak [rule vendors.toml:tiktok:event_name] on 1 page(s) [deny.categories, deny.finding_kinds]" type="deny.categories">[critical] TikTok Pixel (tiktok, advertising, offers no BAA): advertising vendor on 1 page(s), phi_leak [rule vendors.toml:tiktok:event_name] on 1 page(s) [deny.categories, deny.finding_kinds]
    evidence: event name &apos;Ozempic|`@here`\n# x&apos; in body field &apos;event&apos; contains the health term &apos;ozempic&apos; (glp1_drug)</failure>
    </testcase>
    <testcase classname="pixelwatch.policy" name="site policy"/>
  </testsuite>
</testsuites>
"#;

    #[test]
    fn junit_snapshot() {
        let r = leaky();
        let engine = Engine::bundled();
        let v = Policy::default().evaluate(&r, None, &engine);
        let x = junit(&r, &v);
        assert_eq!(x, JUNIT, "{x}");
    }

    #[test]
    fn sarif_uris_have_no_scheme_and_stay_references() {
        assert_eq!(
            sarif_uri("https://www.clinic.test/a/b?x=1"),
            "www.clinic.test/a/b?x=1"
        );
        assert_eq!(
            sarif_uri("https://www.clinic.test:8443/"),
            "www.clinic.test%3A8443/"
        );
        assert_eq!(sarif_uri("https://c.test/a|b%1B"), "c.test/a%7Cb%1B");
        assert_eq!(sarif_uri("not a url"), "not%20a%20url");
    }
}
