//! The dashboard's templates (maud: everything inserted is escaped) shared by every page: the
//! layout, the sign-in form, messages, the sites overview and the sparkline. Page-derived text
//! goes through [`t`] first (controls visible, bounded).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::auth::Signed;
use super::status::{SiteStatus, Verdict};
use crate::report::untrusted::{self, TEXT_MAX};
use crate::store::audit::Action;
use crate::store::{ScanRow, StoreError};

const STYLE: &str = include_str!("dashboard.css");

/// `GET /static/dashboard.css`.
pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// Page-derived text for a template: visible controls, at most [`TEXT_MAX`] characters.
pub(super) fn t(s: &str) -> String {
    untrusted::html_text(s, TEXT_MAX)
}

/// A whole page. `page` names it for tests (`body[data-page]`).
pub(super) fn layout(title: &str, page: &str, who: Option<&Signed>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) " · pixelwatch" }
                link rel="stylesheet" href="/static/dashboard.css";
                // No favicon request (it would need a session).
                link rel="icon" href="data:,";
            }
            body data-page=(page) {
                header.top {
                    a.brand href="/" { "pixelwatch" }
                    @if let Some(s) = who {
                        a.nav href="/activity" { "Activity" }
                        span.who { (t(&s.user)) " · " (s.role.as_str()) }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (main) }
            }
        }
    }
}

/// A page with one message.
pub(super) fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let page = layout(
        title,
        "message",
        None,
        html! { h1 { (title) } p #message { (text) } p { a href="/" { "Back to the sites" } } },
    );
    (status, page).into_response()
}

/// A store failure: logged in full, shown in short.
pub(super) fn store_error(e: &StoreError) -> Response {
    tracing::error!(error = %e, "dashboard: the store failed");
    let status = if e.is_usage() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    message(status, "The store failed", &t(&e.to_string()))
}

/// The sign-in form.
pub(super) fn login(next: &str, token: &str, error: Option<&str>) -> Response {
    layout(
        "Sign in",
        "login",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p.error #login-error { (e) } }
            form.login method="post" action="/login" {
                input type="hidden" name="login_csrf" value=(token);
                input type="hidden" name="next" value=(next);
                label { "Name" input name="user" autocomplete="username" required; }
                label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
        },
    )
    .into_response()
}

/// A verdict badge.
pub(super) fn badge(v: Verdict) -> Markup {
    html! { span class={ "verdict " (v.class()) } { (v.as_str()) } }
}

/// A severity label.
pub(super) fn sev(s: crate::model::Severity) -> Markup {
    html! { span class={ "sev " (s.as_str()) } { (s.as_str()) } }
}

/// Findings per scan as a line (oldest left), the last point coloured by its worst severity.
pub(super) fn sparkline(scans: &[ScanRow]) -> Markup {
    let (w, h) = (120.0_f64, 28.0_f64);
    if scans.is_empty() {
        return html! { span.none { "-" } };
    }
    let max = scans.iter().map(|s| s.findings).max().unwrap_or(0).max(1) as f64;
    let step = if scans.len() > 1 {
        (w - 4.0) / (scans.len() - 1) as f64
    } else {
        0.0
    };
    let pt = |i: usize, n: i64| {
        (
            2.0 + i as f64 * step,
            h - 3.0 - (n as f64 / max) * (h - 6.0),
        )
    };
    let points: Vec<String> = scans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (x, y) = pt(i, s.findings);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let last = scans.last().expect("not empty");
    let (lx, ly) = pt(scans.len() - 1, last.findings);
    let label = format!(
        "findings in the last {} scans: {}",
        scans.len(),
        scans
            .iter()
            .map(|s| s.findings.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    html! {
        svg.spark role="img" aria-label=(label) viewBox={ "0 0 " (w) " " (h) } width=(w) height=(h)
            xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            polyline points=(points.join(" ")) fill="none" stroke="#5c6b80" stroke-width="1.5" {}
            circle cx={ (format!("{lx:.1}")) } cy={ (format!("{ly:.1}")) } r="2.5"
                class={ "dot " (last.worst_severity.as_deref().unwrap_or("none")) } {}
        }
    }
}

/// The link to a site's page.
pub(super) fn site_href(site: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("url", site)
        .finish();
    format!("/site?{q}")
}

/// How a scan ended, in a few words.
pub(super) fn outcome(row: &ScanRow) -> String {
    match (row.pages, row.pages_errored) {
        (p, e) if p > 0 && e >= p => "no page loaded".into(),
        (p, 0) => format!("ok, {p} page{}", if p == 1 { "" } else { "s" }),
        (p, e) => format!("{e} of {p} pages errored"),
    }
}

/// The sites overview.
pub(super) fn overview(
    who: &Signed,
    rows: &[SiteStatus],
    total: usize,
    q: &str,
    sort: &str,
) -> Markup {
    let sort_link = |key: &str, label: &str| {
        let href = format!(
            "/?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("sort", key)
                .append_pair("q", q)
                .finish()
        );
        html! { a href=(href) class=[(sort == key).then_some("sorted")] { (label) } }
    };
    let main = html! {
        h1 { "Sites" }
        form.filter method="get" action="/" {
            input type="hidden" name="sort" value=(sort);
            label { "Filter " input type="search" name="q" value=(q) placeholder="site, verdict, vendor"; }
            button type="submit" { "Filter" }
            @if !q.is_empty() { " " a href="/" { "clear" } }
        }
        p.count #site-count { (rows.len()) " of " (total) " site" @if total != 1 { "s" } }
        @if rows.is_empty() {
            p #no-sites { "No site matches. Sites appear here after their first scan, or when stored with "
                code { "pixelwatch sites add" } "." }
        } @else {
            table.sites #sites {
                thead { tr {
                    th { (sort_link("site", "Site")) }
                    th { (sort_link("severity", "Verdict")) }
                    th { "Worst finding" }
                    th { "No BAA" }
                    th { (sort_link("last", "Last scan")) }
                    th { "Next scan" }
                    th { "Findings, last 30 scans" }
                } }
                tbody {
                    @for r in rows { (overview_row(r)) }
                }
            }
        }
    };
    layout("Sites", "overview", Some(who), main)
}

fn overview_row(r: &SiteStatus) -> Markup {
    let j = r.judgement.as_deref();
    html! {
        tr.site data-site=(t(&r.site)) data-verdict=(r.verdict.as_str()) {
            td.name data-label="Site" { a href=(site_href(&r.site)) { (t(&r.site)) } }
            td data-label="Verdict" { (badge(r.verdict)) div.detail { (t(&r.detail)) } }
            td data-label="Worst finding" {
                @match j.and_then(|j| j.worst.as_ref()) {
                    Some((s, kind, who)) => { (sev(*s)) " " (kind) " → " (t(who)) },
                    None => span.none { "none" },
                }
                @if let Some(j) = j { @if j.muted > 0 { div.muted { (j.muted) " muted" } } }
            }
            td data-label="No BAA" {
                @match j.map(|j| &j.no_baa) {
                    Some(v) if !v.is_empty() => { (v.join(", ")) },
                    _ => span.none { "-" },
                }
            }
            td data-label="Last scan" {
                @match &r.last {
                    Some(l) => { (l.finished_at) div.detail { "#" (l.id) ", " (outcome(l)) } },
                    None => span.none { "never" },
                }
                @if r.failures > 0 { div.error { (r.failures) " failed run(s) in a row" } }
            }
            td data-label="Next scan" {
                @match &r.next { Some(n) => { (n) }, None => span.none { "not scheduled" } }
            }
            td data-label="Findings" { (sparkline(&r.spark)) }
        }
    }
}

/// Actions, newest first; `with_site` adds a column linking each action's site.
pub(super) fn activity_table(actions: &[Action], with_site: bool) -> Markup {
    html! {
        @if actions.is_empty() { p { "Nothing done here yet." } }
        @else {
            div.scroll { table.activity {
                tr { th { "when" } th { "who" } th { "what" } @if with_site { th { "site" } } th { "detail" } }
                @for a in actions {
                    tr {
                        td { (a.at) } td { (t(&a.actor)) } td { (a.action) }
                        @if with_site {
                            td { @match &a.site {
                                Some(site) => a href=(site_href(site)) { (t(site)) },
                                None => span.none { "-" },
                            } }
                        }
                        td { (t(&a.detail)) }
                    }
                }
            } }
        }
    }
}

/// The activity page: recent actions on every site and on the accounts.
pub(super) fn activity(who: &Signed, actions: &[Action], limit: usize) -> Markup {
    let main = html! {
        h1 { "Activity" }
        p.detail { "The last " (limit) " actions: sign-ins, approvals, scans started, mutes, accounts." }
        (activity_table(actions, true))
    };
    layout("Activity", "activity", Some(who), main)
}
