//! Read-only pages: `/healthz`, the sites overview, and each stored scan's JSON and HTML report.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Signed;
use super::status::{self, SiteStatus};
use super::{App, views};

/// `GET /healthz`: 200 while the store answers (no sign-in, no data).
pub(super) async fn healthz(axum::extract::State(app): State<App>) -> Response {
    match app.store.db().query("SELECT 1", &[]).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "healthz: the store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store does not answer\n",
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
pub(super) struct OverviewQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
}

/// Whether a row matches the filter text (site, verdict, its reason, worst finding, vendors).
fn matches(r: &SiteStatus, q: &str) -> bool {
    let q = q.trim().to_lowercase();
    if q.is_empty() {
        return true;
    }
    let mut hay = format!("{} {} {}", r.site, r.verdict.as_str(), r.detail);
    if let Some(j) = &r.judgement {
        if let Some((s, kind, who)) = &j.worst {
            hay.push_str(&format!(" {} {kind} {who}", s.as_str()));
        }
        hay.push(' ');
        hay.push_str(&j.no_baa.join(" "));
    }
    hay.to_lowercase().contains(&q)
}

/// `GET /?q=&sort=`: one row per site; sorted by severity (verdict, then worst finding) unless
/// `sort` is `site` or `last`.
pub(super) async fn overview(
    State(app): State<App>,
    Extension(who): Extension<Signed>,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let mut rows = match status::all(&app, None).await {
        Ok(r) => r,
        Err(e) => return views::store_error(&e),
    };
    let total = rows.len();
    rows.retain(|r| matches(r, &q.q));
    let sort = match q.sort.as_str() {
        "site" => {
            rows.sort_by(|a, b| a.site.cmp(&b.site));
            "site"
        }
        "last" => {
            rows.sort_by(|a, b| {
                let at = |r: &SiteStatus| r.last.as_ref().map(|l| l.finished_at.clone());
                at(b).cmp(&at(a)).then(a.site.cmp(&b.site))
            });
            "last"
        }
        _ => {
            rows.sort_by(|a, b| {
                (a.verdict, a.worst(), &a.site).cmp(&(b.verdict, b.worst(), &b.site))
            });
            "severity"
        }
    };
    views::overview(&who, &rows, total, &q.q, sort).into_response()
}

/// `GET /scan/{id}/report.json`: the stored `pixelwatch.scan/v1` report (shown, or saved under
/// its own name).
pub(super) async fn report_json(State(app): State<App>, Path(id): Path<i64>) -> Response {
    match app.store.load_scan(id).await {
        Ok(r) => (
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"pixelwatch-scan-{id}.json\""),
                ),
            ],
            serde_json::to_string_pretty(&r).expect("a report always serializes"),
        )
            .into_response(),
        Err(e) => views::store_error(&e),
    }
}

/// The HTML report carries its own stylesheet inline and no script: it gets a policy of its own,
/// in a sandbox.
const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'; sandbox";

/// `GET /scan/{id}/report.html`: the HTML report of a stored scan, with its drift against the
/// approved baseline, the site's history and the mutes in force (as `diff --html` writes it).
pub(super) async fn report_html(State(app): State<App>, Path(id): Path<i64>) -> Response {
    let made = async {
        let report = app.store.load_scan(id).await?;
        let mut drift = match app.store.baseline(&report.site).await {
            Ok(b) => Some(crate::diff::diff(&b, &report)),
            Err(crate::store::StoreError::NoBaseline(_)) => None,
            Err(e) => return Err(e),
        };
        let mutes = app.store.active_mutes(&report.site).await?;
        if let Some(d) = drift.as_mut() {
            crate::diff::mutes::apply(d, &mutes);
        }
        let mut history = app.store.list_scans(Some(&report.site), 30).await?;
        history.retain(|r| r.id <= id);
        history.reverse();
        let first_seen = app.store.vendors_first_seen(&report.site).await?;
        let cx = crate::report::html::Context {
            drift: drift.as_ref(),
            history: &history,
            first_seen: &first_seen,
            mutes: &mutes,
            ..crate::report::html::Context::new(&report, &app.engine)
        };
        Ok(crate::report::html::render(&cx))
    }
    .await;
    match made {
        Ok(html) => {
            let mut res =
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
            res.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(REPORT_CSP),
            );
            res
        }
        Err(e) => views::store_error(&e),
    }
}

/// Actions on the activity page.
const ACTIVITY: usize = 200;

/// `GET /activity`: the recent actions of everyone, on every site.
pub(super) async fn activity(
    State(app): State<App>,
    Extension(who): Extension<Signed>,
) -> Response {
    match app.store.actions(None, ACTIVITY).await {
        Ok(actions) => views::activity(&who, &actions, ACTIVITY).into_response(),
        Err(e) => views::store_error(&e),
    }
}
