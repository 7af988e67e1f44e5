//! A self-contained HTML report (no scripts, no external resources; opens offline): summary,
//! findings worst first with evidence, drift highlighted, and per-page tables. Everything taken
//! from the scanned site is escaped.

use std::fmt::Write as _;

use crate::diff::Drift;
use crate::model::ScanReport;

/// Escapes text for HTML (element content and quoted attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:80rem;color:#1d2330;padding:0 1rem}\
h1{font-size:1.5rem}h2{margin-top:2rem;border-bottom:1px solid #ccd;padding-bottom:.2rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border:1px solid #dde;padding:.3rem .45rem;text-align:left;vertical-align:top}\
th{background:#f2f4f8}td.ev{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}\
.sev{font-weight:600;padding:.05rem .4rem;border-radius:.25rem;color:#fff}.critical{background:#a4161a}.high{background:#d9480f}\
.medium{background:#e09f3e;color:#222}.low{background:#5c7cfa}.info{background:#868e96}\
.cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{border:1px solid #dde;border-radius:.4rem;padding:.5rem .8rem;min-width:8rem}\
.card b{display:block;font-size:1.4rem}tr.added td{background:#fff3bf}tr.removed td{background:#e9ecef;text-decoration:line-through}\
.err{color:#a4161a}details{margin:.3rem 0}summary{cursor:pointer}";

/// The report as one HTML document; with `drift`, the drift section comes first.
pub fn render(report: &ScanReport, drift: Option<&Drift>) -> String {
    let s = &report.summary;
    let mut h = String::new();
    let title = format!("pixelwatch report: {}", report.site);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let id = report
        .id
        .map(|i| format!(" · scan #{i}"))
        .unwrap_or_default();
    let _ = write!(
        h,
        "<h1>{}</h1><p>Scanned {} to {} · consent mode <code>{}</code>{}</p>",
        esc(&title),
        esc(&report.started_at),
        esc(&report.finished_at),
        esc(&report.consent_mode),
        esc(&id)
    );
    h.push_str("<div class=\"cards\" id=\"summary\">");
    for (label, n) in [
        ("pages", s.pages),
        ("pages with errors", s.pages_errored),
        ("findings", report.findings.len()),
        ("third-party hosts", s.third_party_hosts.len()),
        ("cookies", s.cookies),
        ("third-party cookies", s.third_party_cookies),
        ("storage keys", s.storage_entries),
        ("requests", s.requests),
    ] {
        let _ = write!(h, "<div class=\"card\"><b>{n}</b>{label}</div>");
    }
    h.push_str("</div>");

    if let Some(d) = drift {
        h.push_str("<h2 id=\"drift\">Drift against the baseline</h2>");
        if d.is_empty() {
            h.push_str("<p>No drift: the site matches its approved baseline.</p>");
        } else {
            h.push_str(
                "<table><tr><th>change</th><th>what</th><th>identity</th><th>pages</th></tr>",
            );
            for (class, sign, items) in [
                ("added", "+ added", &d.added),
                ("removed", "− removed", &d.removed),
            ] {
                for i in items {
                    let _ = write!(
                        h,
                        "<tr class=\"{class}\"><td>{sign}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&i.category),
                        esc(&i.key),
                        i.pages
                            .iter()
                            .map(|p| esc(p))
                            .collect::<Vec<_>>()
                            .join("<br>")
                    );
                }
            }
            h.push_str("</table>");
        }
    }

    h.push_str("<h2 id=\"findings\">Findings, worst first</h2>");
    if report.findings.is_empty() {
        h.push_str("<p>No findings.</p>");
    } else {
        let mut findings: Vec<_> = report.findings.iter().collect();
        findings.sort_by(|a, b| {
            (a.severity, &a.kind, &a.vendor, &a.page)
                .cmp(&(b.severity, &b.kind, &b.vendor, &b.page))
        });
        h.push_str("<table class=\"findings\"><tr><th>severity</th><th>kind</th><th>vendor</th><th>page</th><th>evidence</th><th>rule</th></tr>");
        for f in findings {
            let sev = f.severity.as_str();
            let _ = write!(
                h,
                "<tr class=\"finding\"><td><span class=\"sev {sev}\">{sev}</span></td><td>{}</td><td>{}</td><td>{}</td><td class=\"ev\">{}</td><td>{}</td></tr>",
                esc(&f.kind),
                esc(f.vendor.as_deref().unwrap_or("-")),
                esc(&f.page),
                esc(&f.evidence),
                esc(&f.rule)
            );
        }
        h.push_str("</table>");
    }

    if !s.third_party_hosts.is_empty() {
        h.push_str("<h2>Third-party hosts</h2><table><tr><th>host</th><th>requests</th></tr>");
        let mut hosts: Vec<_> = s.third_party_hosts.iter().collect();
        hosts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (host, n) in hosts {
            let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", esc(host));
        }
        h.push_str("</table>");
    }

    h.push_str("<h2 id=\"pages\">Pages</h2><table class=\"pages\"><tr><th>page</th><th>status</th><th>requests</th><th>third-party</th><th>cookies</th><th>storage</th><th>error</th></tr>");
    for p in &report.pages {
        let third = p.requests.iter().filter(|r| r.third_party).count();
        let _ = write!(
            h,
            "<tr class=\"page\"><td>{}</td><td>{}</td><td>{}</td><td>{third}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            esc(&p.url),
            p.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            p.requests.len(),
            p.cookies.len(),
            p.storage.len(),
            esc(p.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table><h2>Requests per page</h2>");
    for p in &report.pages {
        let _ = write!(
            h,
            "<details><summary>{} ({} requests)</summary><table><tr><th>method</th><th>type</th><th>URL</th><th>status</th><th>vendor</th><th>phase</th></tr>",
            esc(&p.url),
            p.requests.len()
        );
        for r in &p.requests {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"ev\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.method),
                esc(&r.resource_type),
                esc(&r.url),
                r.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                esc(r.vendor.as_deref().unwrap_or("")),
                esc(&r.phase)
            );
        }
        h.push_str("</table></details>");
    }
    h.push_str("<p><small>Generated by pixelwatch. Cookie and storage values are never recorded.</small></p></body></html>\n");
    h
}
