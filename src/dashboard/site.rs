//! A site's page: its verdict, the drift against the approved baseline, the latest findings by
//! cause (the reports' grouping, `report::verdict::causes`) with the pages and requests behind
//! each, its mutes, the scan history with the drift between consecutive scans and links to each
//! stored report, the pages of the latest scan, and what people did on it.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::App;
use super::auth::Signed;
use super::status::{self, SiteStatus};
use super::views::{self, badge, outcome, sev, t};
use crate::diff::mutes::Mute;
use crate::diff::{Baseline, Drift, DriftItem};
use crate::model::ScanReport;
use crate::report::untrusted;
use crate::report::verdict::{self, Cause};
use crate::store::audit::Action;
use crate::store::{ScanRow, StoreError};

/// Scans in the history table.
const HISTORY: usize = 20;
/// Drift items shown per direction.
const MAX_DRIFT: usize = 50;
/// Findings listed per cause, and pages in the pages table.
const MAX_ROWS: usize = 100;
/// Characters of a URL in tables.
const URL_MAX: usize = 300;

#[derive(Deserialize)]
pub(super) struct SiteQuery {
    #[serde(default)]
    url: String,
}

/// Everything the page shows.
struct Data {
    status: SiteStatus,
    history: Vec<(ScanRow, Option<Arc<Drift>>)>,
    latest: Option<ScanReport>,
    baseline: Option<Baseline>,
    approved_by: Option<Action>,
    mutes: Vec<Mute>,
    actions: Vec<Action>,
    running: Option<String>,
}

async fn gather(app: &App, site: &str) -> Result<Option<Data>, StoreError> {
    let Some(status) = status::all(app, Some(site)).await?.into_iter().next() else {
        return Ok(None);
    };
    let rows = app.store.list_scans(Some(site), HISTORY + 1).await?;
    let mut history = Vec::new();
    for (i, row) in rows.iter().take(HISTORY).enumerate() {
        let step = match rows.get(i + 1) {
            Some(prev) => Some(app.cache.step(&app.store, prev.id, row.id).await?),
            None => None,
        };
        history.push((row.clone(), step));
    }
    let latest = match rows.first() {
        Some(r) => Some(app.store.load_scan(r.id).await?),
        None => None,
    };
    let baseline = match app.store.baseline(site).await {
        Ok(b) => Some(b),
        Err(StoreError::NoBaseline(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(Some(Data {
        status,
        history,
        latest,
        baseline,
        approved_by: app.store.last_action(site, "approve_baseline").await?,
        mutes: app.store.mutes(site).await?,
        actions: app.store.actions(Some(site), 30).await?,
        running: app.running.lock().expect("not poisoned").get(site).cloned(),
    }))
}

/// `GET /site?url=`.
pub(super) async fn page(
    State(app): State<App>,
    Extension(who): Extension<Signed>,
    Query(q): Query<SiteQuery>,
) -> Response {
    match gather(&app, &q.url).await {
        Ok(Some(d)) => render(&who, &d, &app).into_response(),
        Ok(None) => views::message(
            StatusCode::NOT_FOUND,
            "No such site",
            "The store has no scan and no stored site with this URL.",
        ),
        Err(e) => views::store_error(&e),
    }
}

/// A hidden field pair for every action form: the session's token and the site.
fn form_base(who: &Signed, site: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(who.csrf);
        input type="hidden" name="site" value=(site);
    }
}

fn render(who: &Signed, d: &Data, app: &App) -> Markup {
    let s = &d.status;
    let site = s.site.as_str();
    let now = crate::scan::now_rfc3339();
    let active: Vec<Mute> = d
        .mutes
        .iter()
        .filter(|m| m.is_active(&now))
        .cloned()
        .collect();
    let main = html! {
        h1 #site { (t(site)) }
        div #verdict class={ "verdict-line " (s.verdict.class()) } {
            (badge(s.verdict)) " " (t(&s.detail))
            @if let Some(j) = &s.judgement {
                @if j.sentence != s.detail { div.detail #sentence { (t(&j.sentence)) } }
            }
        }
        (actions_bar(who, d, site))
        (baseline_section(d))
        @if let Some(j) = &s.judgement {
            @if s.has_baseline { (drift_table("drift", "Changes since the approved baseline", &j.drift)) }
        }
        @if let Some(report) = &d.latest {
            (findings(who, report, &active, app))
        }
        (mutes_section(who, site, &d.mutes, &now))
        (history(who, d))
        @if let Some(report) = &d.latest { (pages(report)) }
        (activity(&d.actions))
    };
    views::layout(&format!("Site {}", t(site)), "site", Some(who), main)
}

fn actions_bar(who: &Signed, d: &Data, site: &str) -> Markup {
    let latest = d.history.first().map(|(r, _)| r);
    html! {
        div.actions #actions {
            @if who.may_act() {
                form.inline method="post" action="/site/scan" {
                    (form_base(who, site))
                    button #scan-now type="submit" { "Scan now" }
                }
                @if let Some(l) = latest {
                    @if d.baseline.as_ref().and_then(|b| b.scan_id) != Some(l.id) {
                        form.inline method="post" action="/site/approve" {
                            (form_base(who, site))
                            input type="hidden" name="scan" value=(l.id);
                            button.primary #approve-latest type="submit" { "Approve scan #" (l.id) " as the baseline" }
                        }
                    }
                }
            } @else {
                span.detail #viewer-note { "Your role (" (who.role.as_str()) ") can look, not approve, scan or mute." }
            }
            @if let Some(at) = &d.running { span.detail #running { "A scan started here at " (at) " is running." } }
            @if let Some(n) = &d.status.next { span.detail { "Next scan: " (n) } }
        }
    }
}

fn baseline_section(d: &Data) -> Markup {
    html! {
        h2 #baseline { "Approved baseline" }
        @match &d.baseline {
            Some(b) => p #baseline-info {
                "Scan #" (b.scan_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()))
                ", approved " (b.approved_at)
                @if let Some(a) = &d.approved_by { " by " strong { (t(&a.actor)) } }
                "."
            },
            None => p #baseline-info { "No baseline approved yet: everything the site carries counts as new." },
        }
    }
}

fn drift_rows(class: &str, sign: &str, items: &[DriftItem]) -> Markup {
    html! {
        @for i in items.iter().take(MAX_DRIFT) {
            tr class=(class) {
                td { (sign) } td { (i.category) } td.ev { (t(&i.key)) }
                td.url { (untrusted::list_more(&i.pages, 3, t)) }
            }
        }
        @if items.len() > MAX_DRIFT { tr { td colspan="4" { "and " (items.len() - MAX_DRIFT) " more" } } }
    }
}

/// A drift as a table: added, removed, then muted findings.
fn drift_table(id: &str, title: &str, d: &Drift) -> Markup {
    html! {
        h2 id=(id) { (title) }
        @if d.is_empty() && d.muted.is_empty() {
            p { "No drift." }
        } @else {
            div.scroll { table.drift {
                tr { th { "change" } th { "what" } th { "identity" } th { "pages" } }
                (drift_rows("added", "+ added", &d.added))
                (drift_rows("removed", "− removed", &d.removed))
                @for m in d.muted.iter().take(MAX_DRIFT) {
                    tr.muted {
                        td { "muted" } td { (m.item.category) } td.ev { (t(&m.item.key)) }
                        td { "by " (t(&m.muted_by)) " until " (m.expires_at) ": " (t(&m.reason)) }
                    }
                }
            } }
        }
    }
}

fn findings(who: &Signed, report: &ScanReport, active: &[Mute], app: &App) -> Markup {
    let causes = verdict::causes(report);
    html! {
        h2 #findings { "Findings of scan #" (report.id.unwrap_or(0)) ", by cause" }
        @if causes.is_empty() { p { "No findings." } }
        @for c in &causes { (cause(who, report, c, active, app)) }
    }
}

fn cause(who: &Signed, report: &ScanReport, c: &Cause<'_>, active: &[Mute], app: &App) -> Markup {
    let mute = active.iter().find(|m| m.covers(c.kind, c.vendor, c.rule));
    let mut excerpts: Vec<(String, Option<&str>)> = Vec::new();
    for f in &c.findings {
        let ev = untrusted::evidence(&f.evidence, f.matched.as_deref());
        if excerpts.len() < 3 && !excerpts.iter().any(|(e, _)| *e == ev) {
            excerpts.push((ev, f.matched.as_deref()));
        }
    }
    html! {
        article.cause data-kind=(c.kind) data-muted=(mute.is_some()) {
            h3 { (sev(c.severity)) " " (c.kind) " → " (t(&verdict::recipient(&app.engine, c.vendor)))
                " " small { "rule " code { (t(c.rule)) } } }
            p { (c.findings.len()) " finding(s) on " (c.pages.len()) " page(s)" }
            @if let Some(m) = mute {
                p.muted { "Muted by " (t(&m.created_by)) " until " (m.expires_at) ": " (t(&m.reason)) }
            }
            @for (ev, matched) in &excerpts {
                // `html_marked` escapes the excerpt itself (the untrusted-text rule for HTML).
                div.ev { (PreEscaped(untrusted::html_marked(ev, *matched))) }
            }
            details {
                summary { "Pages and requests behind it" }
                div.scroll { table.behind {
                    tr { th { "page" } th { "request" } th { "evidence" } }
                    @for f in c.findings.iter().take(MAX_ROWS) {
                        tr {
                            td.url { (untrusted::html_text(&f.page, URL_MAX)) }
                            td.url { (untrusted::html_text(f.request_url.as_deref().unwrap_or("-"), URL_MAX)) }
                            td.ev { (PreEscaped(untrusted::html_marked(
                                &untrusted::evidence(&f.evidence, f.matched.as_deref()), f.matched.as_deref()))) }
                        }
                    }
                    @if c.findings.len() > MAX_ROWS { tr { td colspan="3" { "and " (c.findings.len() - MAX_ROWS) " more" } } }
                } }
            }
            @if who.may_act() && mute.is_none() {
                form.mute method="post" action="/site/mute" {
                    (form_base(who, &report.site))
                    input type="hidden" name="kind" value=(c.kind);
                    input type="hidden" name="vendor" value=(c.vendor.unwrap_or(""));
                    input type="hidden" name="rule" value=(c.rule);
                    label { "Reason" input name="reason" required maxlength="500" size="40"; }
                    label { "Days" input name="days" type="number" min="1" max="365" value="30" required; }
                    button type="submit" { "Mute" }
                }
            }
        }
    }
}

fn mutes_section(who: &Signed, site: &str, mutes: &[Mute], now: &str) -> Markup {
    html! {
        h2 #mutes { "Mutes" }
        @if mutes.is_empty() {
            p { "No finding is muted. Muted findings are not judged by " code { "check" } ", " code { "diff" }
                " and alerts, and every report lists them." }
        } @else {
            div.scroll { table.mutes {
                tr { th { "cause" } th { "reason" } th { "by" } th { "until" } th { "state" } }
                @for m in mutes {
                    tr data-mute=(m.id) {
                        td { (m.kind) " → " (t(m.vendor.as_deref().unwrap_or("-"))) " " code { (t(&m.rule)) } }
                        td { (t(&m.reason)) }
                        td { (t(&m.created_by)) " " span.detail { (m.created_at) } }
                        td { (m.expires_at) }
                        td {
                            @if let (Some(by), Some(at)) = (&m.lifted_by, &m.lifted_at) {
                                "lifted by " (t(by)) " " span.detail { (at) }
                            } @else if m.is_active(now) {
                                "in force"
                                @if who.may_act() {
                                    form.inline method="post" action="/site/unmute" {
                                        (form_base(who, site))
                                        input type="hidden" name="id" value=(m.id);
                                        " " button type="submit" { "Lift" }
                                    }
                                }
                            } @else { "expired" }
                        }
                    }
                }
            } }
        }
    }
}

fn history(who: &Signed, d: &Data) -> Markup {
    let base_scan = d.baseline.as_ref().and_then(|b| b.scan_id);
    html! {
        h2 #history { "Scans" }
        div.scroll { table.history {
            tr { th { "scan" } th { "finished" } th { "outcome" } th { "findings" } th { "change from the scan before" } th { "reports" } }
            @for (row, step) in &d.history {
                tr.scan data-scan=(row.id) class=[(base_scan == Some(row.id)).then_some("baseline")] {
                    td { "#" (row.id) @if base_scan == Some(row.id) { div.detail { "baseline" } } }
                    td { (row.finished_at) }
                    td { (outcome(row)) }
                    td { (row.findings) @if let Some(w) = &row.worst_severity { " " span class={ "sev " (w) } { (w) } } }
                    td {
                        @match step {
                            Some(s) if s.is_empty() => span.none { "no change" },
                            Some(s) => details {
                                summary { "+" (s.added.len()) " / −" (s.removed.len()) }
                                ul { @for i in s.added.iter().chain(&s.removed).take(MAX_DRIFT) {
                                    li.ev { @if s.added.contains(i) { "+ " } @else { "− " } (i.category) " " (t(&i.key)) }
                                } }
                            },
                            None => span.none { "first scan" },
                        }
                    }
                    td {
                        a href={ "/scan/" (row.id) "/report.html" } { "HTML" } " · "
                        a href={ "/scan/" (row.id) "/report.json" } { "JSON" }
                        @if who.may_act() && base_scan != Some(row.id) && row.pages_errored < row.pages {
                            form.inline method="post" action="/site/approve" {
                                (form_base(who, &row.site))
                                input type="hidden" name="scan" value=(row.id);
                                " " button type="submit" { "Approve" }
                            }
                        }
                    }
                }
            }
        } }
    }
}

fn pages(report: &ScanReport) -> Markup {
    html! {
        h2 #pages { "Pages of scan #" (report.id.unwrap_or(0)) }
        div.scroll { table.pages {
            tr { th { "page" } th { "title" } th { "status" } th { "requests" } th { "error" } }
            @for p in report.pages.iter().take(MAX_ROWS) {
                tr.page {
                    td.url { (untrusted::html_text(&p.url, URL_MAX)) }
                    td.title { (t(p.title.as_deref().unwrap_or(""))) }
                    td { (p.status.map(|s| s.to_string()).unwrap_or_else(|| "-".into())) }
                    td { (p.requests.len()) }
                    td.error { (t(p.error.as_deref().unwrap_or(""))) }
                }
            }
            @if report.pages.len() > MAX_ROWS { tr { td colspan="5" { "and " (report.pages.len() - MAX_ROWS) " more" } } }
        } }
    }
}

fn activity(actions: &[Action]) -> Markup {
    html! {
        h2 #activity { "Activity" }
        (views::activity_table(actions, false))
    }
}
