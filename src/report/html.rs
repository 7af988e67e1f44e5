//! A self-contained HTML report for the person who must act (no scripts, no external resources;
//! opens offline): the verdict first, severity counts, a vendor table with BAA status, the drift
//! (with `diff --html`), a history chart when the database has one, findings grouped by cause
//! with their pages in collapsible lists and the matched term highlighted, then the per-page
//! record.
//!
//! Everything taken from the scanned site goes through [`untrusted::html`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::untrusted::{self, esc, html as h};
use super::verdict::{self, SEVERITIES};
use crate::diff::Drift;
use crate::diff::mutes::Mute;
use crate::model::ScanReport;
use crate::rules::Engine;
use crate::store::ScanRow;

/// Most drift items per category, evidence excerpts per cause, pages per list.
const MAX_DRIFT: usize = 50;
const MAX_EXCERPTS: usize = 3;
const MAX_PAGES: usize = 500;
/// Characters of a URL shown in the request tables.
const URL_MAX: usize = 300;

/// What a report is made from.
pub struct Context<'a> {
    pub report: &'a ScanReport,
    /// The drift against the approved baseline, shown right after the verdict.
    pub drift: Option<&'a Drift>,
    /// Names, categories and BAA status of vendors.
    pub engine: &'a Engine,
    /// Earlier scans of the site, oldest first (empty without a database): the history chart.
    pub history: &'a [ScanRow],
    /// Vendor id -> when the database first saw it on the site.
    pub first_seen: &'a BTreeMap<String, String>,
    /// The site's mutes in force: each muted cause says so, and the drift lists what they kept
    /// out of it.
    pub mutes: &'a [Mute],
    /// Where the report links pages' screenshots from (`--screenshots`): the directory as an
    /// href relative to the report, ending in `/`. Without it a screenshot is named, not linked.
    pub screenshots: Option<&'a str>,
}

impl<'a> Context<'a> {
    /// A context without history (a report not backed by a database).
    pub fn new(report: &'a ScanReport, engine: &'a Engine) -> Context<'a> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        Context {
            report,
            drift: None,
            engine,
            history: &[],
            first_seen: &NONE,
            mutes: &[],
            screenshots: None,
        }
    }
}

const STYLE: &str = "*{box-sizing:border-box}body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;color:#1d2330;padding:.8rem}\
header h1{font-size:1.1rem;margin:.2rem 0}header p{margin:.1rem 0;color:#555;font-size:.85rem;overflow-wrap:anywhere}\
.verdict{border-left:.45rem solid #2b8a3e;background:#ebfbee;padding:.7rem .9rem;margin:.6rem 0;font-size:1.25rem;font-weight:600;overflow-wrap:anywhere}\
.verdict.critical{border-color:#a4161a;background:#fff0f0}.verdict.high{border-color:#d9480f;background:#fff4e6}.verdict.medium{border-color:#e09f3e;background:#fff9db}\
h2{font-size:1.15rem;margin-top:1.6rem;border-bottom:1px solid #ccd;padding-bottom:.2rem}\
ul.counts{display:flex;flex-wrap:wrap;gap:.4rem;list-style:none;padding:0;margin:.4rem 0}ul.counts li{border:1px solid #dde;border-radius:.4rem;padding:.25rem .6rem;min-width:5.5rem}\
ul.counts b{display:block;font-size:1.3rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;margin:.4rem 0;table-layout:fixed}\
th,td{border:1px solid #dde;padding:.3rem .45rem;text-align:left;vertical-align:top;overflow-wrap:anywhere;word-break:break-word}\
th{background:#f2f4f8}table.vendors,table.drift,table.pages,table.requests{min-width:40rem}code,.ev,.url{font-family:ui-monospace,monospace;font-size:.8rem;overflow-wrap:anywhere;word-break:break-all}\
.sev{font-weight:600;padding:.05rem .4rem;border-radius:.25rem;color:#fff;white-space:nowrap}.sev.critical{background:#a4161a}.sev.high{background:#d9480f}\
.sev.medium{background:#e09f3e;color:#222}.sev.low{background:#5c7cfa}.sev.info{background:#868e96}\
.cause{border:1px solid #dde;border-radius:.4rem;padding:.5rem .7rem;margin:.6rem 0}.cause h3{font-size:1rem;margin:.1rem 0 .3rem}\
.ev{background:#f8f9fa;padding:.3rem .45rem;margin:.25rem 0;border-radius:.25rem}mark{background:#ffe066;padding:0 .1rem}\
tr.added td{background:#fff3bf}tr.muted td,.muted{color:#555;font-style:italic}tr.removed td{background:#e9ecef;text-decoration:line-through}.err{color:#a4161a}\
details{margin:.3rem 0}summary{cursor:pointer}ul.pages{margin:.3rem 0;padding-left:1.2rem}ul.pages li{overflow-wrap:anywhere}\
svg{max-width:100%;height:auto}footer{margin-top:2rem;color:#666;font-size:.8rem}";

/// The report as one HTML document.
pub fn render(cx: &Context<'_>) -> String {
    let report = cx.report;
    let mut out = String::new();
    let title = format!("pixelwatch report: {}", report.site);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>",
        h(&title)
    );
    let id = report
        .id
        .map(|i| format!(" · scan #{i}"))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<header><h1>{}</h1><p>{} pages scanned {} to {} · consent mode <code>{}</code>{}</p></header>",
        h(&title),
        report.pages.len(),
        h(&report.started_at),
        h(&report.finished_at),
        h(&report.consent_mode),
        esc(&id)
    );
    let worst = report.findings.iter().map(|f| f.severity).min();
    let _ = write!(
        out,
        "<section id=\"verdict\" class=\"verdict {}\">{}</section>",
        worst.map(|s| s.as_str()).unwrap_or("clean"),
        h(&verdict::sentence(report, cx.engine))
    );
    out.push_str("<ul class=\"counts\" id=\"severity-counts\">");
    for (sev, n) in SEVERITIES.iter().zip(verdict::severity_counts(report)) {
        let _ = write!(
            out,
            "<li class=\"{0}\"><b>{n}</b><span class=\"sev {0}\">{0}</span></li>",
            sev.as_str()
        );
    }
    let _ = write!(
        out,
        "<li><b>{}</b>pages with errors</li>",
        report.summary.pages_errored
    );
    if report.summary.probes_skipped > 0 {
        let _ = write!(
            out,
            "<li><b>{}</b>form pages not probed</li>",
            report.summary.probes_skipped
        );
    }
    out.push_str("</ul>");
    vendor_table(&mut out, cx);
    if let Some(d) = cx.drift {
        drift_section(&mut out, d);
    }
    history_chart(&mut out, cx.history);
    findings_section(&mut out, cx);
    pages_section(&mut out, cx);
    out.push_str("<footer>Generated by pixelwatch. Cookie and storage values are never recorded; evidence is excerpted around what matched.</footer></body></html>\n");
    out
}

fn drift_section(out: &mut String, d: &Drift) {
    out.push_str("<h2 id=\"drift\">Changes since the approved baseline</h2>");
    if d.is_empty() && d.muted.is_empty() {
        out.push_str("<p>No drift: the site matches its approved baseline.</p>");
        return;
    }
    out.push_str("<div class=\"scroll\"><table class=\"drift\"><colgroup><col style=\"width:7rem\"><col style=\"width:9rem\"><col><col style=\"width:35%\"></colgroup><tr><th>change</th><th>what</th><th>identity</th><th>pages</th></tr>");
    for (class, sign, items) in [
        ("added", "+ added", &d.added),
        ("removed", "− removed", &d.removed),
    ] {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for i in items {
            let n = per.entry(i.category.as_str()).or_default();
            *n += 1;
            if *n > MAX_DRIFT {
                continue;
            }
            let _ = write!(
                out,
                "<tr class=\"{class}\"><td>{sign}</td><td>{}</td><td class=\"ev\">{}</td><td class=\"url\">{}</td></tr>",
                esc(&i.category),
                h(&i.key),
                untrusted::list_more(&i.pages, 5, h)
            );
        }
        for (cat, n) in per.into_iter().filter(|(_, n)| *n > MAX_DRIFT) {
            let _ = write!(
                out,
                "<tr class=\"{class}\"><td>{sign}</td><td>{}</td><td colspan=\"2\">and {} more</td></tr>",
                esc(cat),
                n - MAX_DRIFT
            );
        }
    }
    for m in d.muted.iter().take(MAX_DRIFT) {
        let _ = write!(
            out,
            "<tr class=\"muted\"><td>muted</td><td>{}</td><td class=\"ev\">{}</td><td>muted by {} until {}: {}</td></tr>",
            esc(&m.item.category),
            h(&m.item.key),
            h(&m.muted_by),
            h(&m.expires_at),
            h(&m.reason)
        );
    }
    out.push_str("</table></div>");
}

fn vendor_table(out: &mut String, cx: &Context<'_>) {
    let rows = verdict::vendors(cx.report, cx.engine);
    out.push_str("<h2 id=\"vendors\">Vendors</h2>");
    if rows.is_empty() {
        out.push_str("<p>No vendor from the rules was seen.</p>");
        return;
    }
    out.push_str("<div class=\"scroll\"><table class=\"vendors\"><colgroup><col style=\"width:22%\"><col style=\"width:13%\"><col style=\"width:10%\"><col style=\"width:8%\"><col style=\"width:10%\"><col><col style=\"width:14%\"></colgroup><tr><th>vendor</th><th>category</th><th>BAA offered</th><th>pages</th><th>leaks</th><th>tracking cookies</th><th>first seen</th></tr>");
    for r in rows {
        let baa = match r.baa {
            Some(true) => "yes",
            Some(false) => "<b>no</b>",
            None => "unknown",
        };
        let leaks = if r.leaks == 0 {
            "0".to_string()
        } else {
            format!(
                "<b>{}</b> on {} page{}",
                r.leaks,
                r.leak_pages,
                if r.leak_pages == 1 { "" } else { "s" }
            )
        };
        let sev = r
            .worst
            .map(|s| format!(" <span class=\"sev {0}\">{0}</span>", s.as_str()))
            .unwrap_or_default();
        let first = cx
            .first_seen
            .get(&r.id)
            .map(|s| h(s))
            .unwrap_or_else(|| "this scan".into());
        let _ = write!(
            out,
            "<tr class=\"vendor\" data-vendor=\"{}\"><td>{}{sev}</td><td>{}</td><td>{baa}</td><td>{}</td><td>{leaks}</td><td class=\"ev\">{}</td><td>{first}</td></tr>",
            h(&r.id),
            h(&r.name),
            h(&r.category),
            r.pages,
            if r.cookies.is_empty() {
                "-".to_string()
            } else {
                untrusted::list_more(&r.cookies, 8, h)
            }
        );
    }
    out.push_str("</table></div>");
}

/// Bars of findings per scan, coloured by the scan's worst severity (oldest left).
fn history_chart(out: &mut String, history: &[ScanRow]) {
    if history.len() < 2 {
        return;
    }
    let max = history.iter().map(|r| r.findings).max().unwrap_or(0).max(1);
    let (w, hgt, pad) = (640.0_f64, 160.0_f64, 24.0_f64);
    let step = (w - pad * 2.0) / history.len() as f64;
    let _ = write!(
        out,
        "<h2 id=\"history\">Findings per scan</h2><svg id=\"history-chart\" role=\"img\" aria-label=\"findings in the last {n} scans\" viewBox=\"0 0 {w} {hgt}\" width=\"{w}\" height=\"{hgt}\" xmlns=\"http://www.w3.org/2000/svg\"><line x1=\"{pad}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" stroke=\"#999\"/>",
        n = history.len(),
        base = hgt - pad,
        right = w - pad
    );
    for (i, r) in history.iter().enumerate() {
        let bar = (r.findings as f64 / max as f64) * (hgt - pad * 2.0);
        let color = match r.worst_severity.as_deref() {
            Some("critical") => "#a4161a",
            Some("high") => "#d9480f",
            Some("medium") => "#e09f3e",
            Some("low") => "#5c7cfa",
            _ => "#868e96",
        };
        let _ = write!(
            out,
            "<rect class=\"scan\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>scan #{} {}: {} findings (worst {})</title></rect>",
            pad + i as f64 * step + step * 0.15,
            hgt - pad - bar,
            step * 0.7,
            bar.max(1.0),
            r.id,
            h(&r.finished_at),
            r.findings,
            h(r.worst_severity.as_deref().unwrap_or("none"))
        );
    }
    let (first, last) = (&history[0], &history[history.len() - 1]);
    let _ = write!(
        out,
        "<text x=\"{pad}\" y=\"{}\" font-size=\"11\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text><text x=\"2\" y=\"{}\" font-size=\"11\">{max}</text></svg>",
        hgt - 6.0,
        h(first.finished_at.get(..10).unwrap_or(&first.finished_at)),
        w - pad,
        hgt - 6.0,
        h(last.finished_at.get(..10).unwrap_or(&last.finished_at)),
        pad - 8.0
    );
}

fn findings_section(out: &mut String, cx: &Context<'_>) {
    let report = cx.report;
    out.push_str("<h2 id=\"findings\">Findings by cause</h2>");
    if report.findings.is_empty() {
        out.push_str("<p>No findings.</p>");
        return;
    }
    let shots: BTreeMap<&str, &str> = report
        .pages
        .iter()
        .filter_map(|p| Some((p.url.as_str(), p.screenshot.as_deref()?)))
        .collect();
    for c in verdict::causes(report) {
        let pages = &c.pages;
        let _ = write!(
            out,
            "<article class=\"cause\" data-kind=\"{kind}\"><h3><span class=\"sev {sev}\">{sev}</span> {kind} → {who} <small>rule <code>{rule}</code></small></h3><p>on {n} page{s}</p>",
            kind = h(c.kind.as_str()),
            sev = c.severity.as_str(),
            who = h(&verdict::recipient(cx.engine, c.vendor)),
            rule = h(c.rule),
            n = pages.len(),
            s = if pages.len() == 1 { "" } else { "s" }
        );
        if let Some(m) = cx.mutes.iter().find(|m| m.covers(c.kind, c.vendor, c.rule)) {
            let _ = write!(
                out,
                "<p class=\"muted\">Muted by {} until {}: {}</p>",
                h(&m.created_by),
                h(&m.expires_at),
                h(&m.reason)
            );
        }
        let mut shown: Vec<String> = Vec::new();
        for f in &c.findings {
            let ev = untrusted::evidence(&f.evidence, f.matched.as_deref());
            if shown.len() < MAX_EXCERPTS && !shown.contains(&ev) {
                let _ = write!(
                    out,
                    "<div class=\"ev\">{}</div>",
                    untrusted::html_marked(&ev, f.matched.as_deref())
                );
                shown.push(ev);
            }
        }
        let _ = write!(
            out,
            "<details><summary>{} page{}</summary><ul class=\"pages\">",
            pages.len(),
            if pages.len() == 1 { "" } else { "s" }
        );
        for p in pages.iter().take(MAX_PAGES) {
            let _ = write!(
                out,
                "<li class=\"url\">{}{}</li>",
                h(p),
                screenshot_link(cx, shots.get(&p[..]).copied())
            );
        }
        if pages.len() > MAX_PAGES {
            let _ = write!(out, "<li>and {} more</li>", pages.len() - MAX_PAGES);
        }
        out.push_str("</ul></details></article>");
    }
}

fn pages_section(out: &mut String, cx: &Context<'_>) {
    let report = cx.report;
    if !report.summary.third_party_hosts.is_empty() {
        out.push_str("<h2>Third-party hosts</h2><table class=\"hosts\"><colgroup><col><col style=\"width:6rem\"></colgroup><tr><th>host</th><th>requests</th></tr>");
        let mut hosts: Vec<_> = report.summary.third_party_hosts.iter().collect();
        hosts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (host, n) in hosts {
            let _ = write!(
                out,
                "<tr><td class=\"url\">{}</td><td>{n}</td></tr>",
                h(host)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2 id=\"pages\">Pages</h2><div class=\"scroll\"><table class=\"pages\"><colgroup><col style=\"width:40%\"><col><col><col><col><col><col style=\"width:22%\"></colgroup><tr><th>page</th><th>status</th><th>requests</th><th>third-party</th><th>cookies</th><th>storage</th><th>error</th></tr>");
    for p in &report.pages {
        let third = p.requests.iter().filter(|r| r.third_party).count();
        let _ = write!(
            out,
            "<tr class=\"page\"><td class=\"url\">{}{}</td><td>{}</td><td>{}</td><td>{third}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            h(&untrusted::cut(&p.url, URL_MAX)),
            screenshot_link(cx, p.screenshot.as_deref()),
            p.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            p.requests.len(),
            p.cookies.len(),
            p.storage.len(),
            h(&untrusted::cut(p.error.as_deref().unwrap_or(""), URL_MAX))
        );
    }
    out.push_str("</table></div><h2>Requests per page</h2>");
    for p in &report.pages {
        let _ = write!(
            out,
            "<details><summary class=\"url\">{} ({} requests)</summary><div class=\"scroll\"><table class=\"requests\"><colgroup><col style=\"width:4.5rem\"><col style=\"width:6rem\"><col><col style=\"width:4rem\"><col style=\"width:7rem\"><col style=\"width:5rem\"></colgroup><tr><th>method</th><th>type</th><th>URL</th><th>status</th><th>vendor</th><th>phase</th></tr>",
            h(&untrusted::cut(&p.url, URL_MAX)),
            p.requests.len()
        );
        for r in &p.requests {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"url\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                h(&r.method),
                h(&r.resource_type),
                h(&untrusted::cut(&r.url, URL_MAX)),
                r.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                h(r.vendor.as_deref().unwrap_or("")),
                h(r.phase.as_str())
            );
        }
        out.push_str("</table></div></details>");
    }
}

/// " screenshot" after a page that has one: a link into the screenshots directory, or the
/// file name when the report does not know where that directory is. Names are pixelwatch's own
/// (`[a-z0-9.-]`, see `crate::screenshots`), never a page's.
fn screenshot_link(cx: &Context<'_>, name: Option<&str>) -> String {
    let Some(name) = name else {
        return String::new();
    };
    match cx.screenshots {
        Some(dir) => format!(
            " <a class=\"shot\" href=\"{}{}\">screenshot</a>",
            esc(dir),
            esc(name)
        ),
        None => format!(" <small class=\"shot\">screenshot {}</small>", esc(name)),
    }
}

/// `dir` as an href relative to the directory of the report file `report` (both resolved on
/// disk), ending in `/`; an absolute `file://` URL when no relative one can be made.
pub fn href_to(dir: &Path, report: &Path) -> String {
    let from = report
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let url = |p: &Path| {
        let p = p.canonicalize().or_else(|_| std::path::absolute(p)).ok()?;
        url::Url::from_directory_path(p).ok()
    };
    match (url(from), url(dir)) {
        (Some(from), Some(to)) => from.make_relative(&to).unwrap_or_else(|| to.into()),
        (_, to) => to.map(String::from).unwrap_or_default(),
    }
}
