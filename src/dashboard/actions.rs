//! What an approver does from a site's page: approve a scan as the baseline, scan now (queued for
//! the workers on PostgreSQL, run by the dashboard itself on SQLite), mute a finding's cause with
//! a reason and an expiry, lift a mute. Each is a CSRF-checked POST ([`Checked`]), needs the
//! `approver` role, and is recorded with who and when in the same transaction as its write.

// A refusal here is the response the handler sends, built once: not worth a box.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{Checked, CsrfForm, Signed};
use super::{App, views};
use crate::diff::Baseline;
use crate::store::{StoreError, audit, jobs, mutes};

/// Attempts of a job queued from the dashboard.
const JOB_ATTEMPTS: u32 = 3;
/// The longest mute, in days.
const MAX_MUTE_DAYS: i64 = 365;

macro_rules! csrf_form {
    ($($t:ty),*) => {$(
        impl CsrfForm for $t {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        }
    )*};
}

#[derive(Deserialize)]
pub(super) struct ApproveForm {
    #[serde(default)]
    csrf: String,
    site: String,
    scan: i64,
}

#[derive(Deserialize)]
pub(super) struct SiteForm {
    #[serde(default)]
    csrf: String,
    site: String,
}

#[derive(Deserialize)]
pub(super) struct MuteForm {
    #[serde(default)]
    csrf: String,
    site: String,
    kind: crate::model::FindingKind,
    #[serde(default)]
    vendor: String,
    rule: String,
    #[serde(default)]
    reason: String,
    days: i64,
}

#[derive(Deserialize)]
pub(super) struct UnmuteForm {
    #[serde(default)]
    csrf: String,
    site: String,
    id: i64,
}

csrf_form!(ApproveForm, SiteForm, MuteForm, UnmuteForm);

/// Refuses a viewer.
fn approver(who: &Signed, what: &str) -> Result<(), Response> {
    if who.may_act() {
        return Ok(());
    }
    tracing::warn!(user = %who.user, action = what, "refused: the account is a viewer");
    Err(views::message(
        StatusCode::FORBIDDEN,
        "Not allowed",
        &format!("Only an approver may {what}; your account is a viewer."),
    ))
}

/// Back to the site's page, at `section`.
fn back(site: &str, section: &str) -> Response {
    Redirect::to(&format!("{}#{section}", views::site_href(site))).into_response()
}

fn done<T>(r: Result<T, StoreError>) -> Result<T, Response> {
    r.map_err(|e| views::store_error(&e))
}

/// `POST /site/approve`: scan `scan` becomes the approved baseline of its site.
pub(super) async fn approve(
    State(app): State<App>,
    Checked(who, f): Checked<ApproveForm>,
) -> Response {
    if let Err(r) = approver(&who, "approve a baseline") {
        return r;
    }
    let report = match app.store.load_scan(f.scan).await {
        Ok(r) if r.site == f.site => r,
        Ok(_) | Err(StoreError::NotFound(_)) => {
            return views::message(
                StatusCode::NOT_FOUND,
                "No such scan",
                &format!("Scan #{} is not a scan of this site.", f.scan),
            );
        }
        Err(e) => return views::store_error(&e),
    };
    if let Some(reason) = report.unscannable() {
        return views::message(
            StatusCode::BAD_REQUEST,
            "Cannot approve",
            &format!(
                "Scan #{} cannot be a baseline: {}.",
                f.scan,
                views::t(&reason)
            ),
        );
    }
    if let Err(e) = app
        .store
        .approve_baseline_by(&Baseline::from_scan(&report), &who.user)
        .await
    {
        return views::store_error(&e);
    }
    tracing::info!(user = %who.user, site = %report.site, scan = f.scan, "baseline approved");
    back(&f.site, "baseline")
}

/// `POST /site/scan`: scan the site now.
pub(super) async fn scan_now(
    State(app): State<App>,
    Checked(who, f): Checked<SiteForm>,
) -> Response {
    if let Err(r) = approver(&who, "start a scan") {
        return r;
    }
    let outcome = if app.store.db().is_postgres() {
        queue(&app, &who, &f.site).await
    } else {
        run_here(&app, &who, &f.site).await
    };
    match outcome {
        Ok(()) => back(&f.site, "actions"),
        Err(r) => r,
    }
}

/// PostgreSQL: a job due now, for the workers.
async fn queue(app: &App, who: &Signed, site: &str) -> Result<(), Response> {
    let row = match app.store.site(site).await {
        Ok(r) => r,
        Err(StoreError::NoSite(_)) => {
            return Err(views::message(
                StatusCode::CONFLICT,
                "Site not stored",
                "Workers scan stored sites only: store it with `pixelwatch sites add URL --schedule CRON`.",
            ));
        }
        Err(e) => return Err(views::store_error(&e)),
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut tx = done(app.store.db().begin().await)?;
    done(jobs::enqueue_in(&mut tx, site, &now, &row.settings, JOB_ATTEMPTS).await)?;
    done(
        audit::record_in(
            &mut tx,
            &who.user,
            "scan_now",
            Some(site),
            "queued for the workers",
        )
        .await,
    )?;
    done(tx.commit().await)?;
    tracing::info!(user = %who.user, site, "scan queued");
    Ok(())
}

/// SQLite: the dashboard runs the scan itself, one per site at a time, and stores it.
async fn run_here(app: &App, who: &Signed, site: &str) -> Result<(), Response> {
    let settings = match app.store.site(site).await {
        Ok(r) => r.settings,
        Err(StoreError::NoSite(_)) => app
            .opts
            .config
            .as_ref()
            .and_then(|c| c.sites.iter().find(|s| s.site_key() == site))
            .map(|s| s.settings.clone())
            .unwrap_or_default(),
        Err(e) => return Err(views::store_error(&e)),
    };
    {
        let mut running = app.running.lock().expect("not poisoned");
        if running.contains_key(site) {
            return Err(views::message(
                StatusCode::CONFLICT,
                "Already scanning",
                "A scan of this site started from the dashboard is still running.",
            ));
        }
        running.insert(site.to_string(), crate::scan::now_rfc3339());
    }
    if let Err(e) = app
        .store
        .record_action(&who.user, "scan_now", Some(site), "run by the dashboard")
        .await
    {
        app.running.lock().expect("not poisoned").remove(site);
        return Err(views::store_error(&e));
    }
    let opts = settings.to_options(site, app.opts.browser.clone());
    let (store, running, site) = (app.store.clone(), app.running.clone(), site.to_string());
    tracing::info!(user = %who.user, site, "scan started from the dashboard");
    tokio::spawn(async move {
        match crate::scan::run(&opts, Arc::new(crate::scan::Silent)).await {
            Ok(mut report) => match store.save_scan(&mut report).await {
                Ok(id) => tracing::info!(%site, scan = id, "dashboard scan stored"),
                Err(e) => tracing::error!(%site, error = %e, "dashboard scan could not be stored"),
            },
            Err(e) => tracing::error!(%site, error = %e, "dashboard scan failed"),
        }
        running.lock().expect("not poisoned").remove(&site);
    });
    Ok(())
}

/// `POST /site/mute`: mutes the findings of one cause on the site for `days`.
pub(super) async fn mute(State(app): State<App>, Checked(who, f): Checked<MuteForm>) -> Response {
    if let Err(r) = approver(&who, "mute a finding") {
        return r;
    }
    let reason = f.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || !(1..=MAX_MUTE_DAYS).contains(&f.days) {
        return views::message(
            StatusCode::BAD_REQUEST,
            "Cannot mute",
            &format!(
                "A mute needs a reason (at most 500 characters) and 1 to {MAX_MUTE_DAYS} days."
            ),
        );
    }
    let expires = (chrono::Utc::now() + chrono::Duration::days(f.days))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let vendor = (!f.vendor.is_empty()).then_some(f.vendor.as_str());
    let m = mutes::NewMute {
        site: &f.site,
        kind: f.kind,
        vendor,
        rule: &f.rule,
        reason,
        expires_at: &expires,
        created_by: &who.user,
    };
    let detail = format!(
        "{} → {} [{}] until {expires}: {reason}",
        f.kind,
        vendor.unwrap_or("-"),
        f.rule
    );
    let written = async {
        let mut tx = app.store.db().begin().await?;
        let id = mutes::add_in(&mut tx, &m).await?;
        audit::record_in(
            &mut tx,
            &who.user,
            "mute",
            Some(&f.site),
            &format!("#{id} {detail}"),
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = written {
        return views::store_error(&e);
    }
    tracing::info!(user = %who.user, site = %f.site, kind = %f.kind, rule = %f.rule, days = f.days, "finding muted");
    back(&f.site, "mutes")
}

/// `POST /site/unmute`: lifts a mute before it expires.
pub(super) async fn unmute(
    State(app): State<App>,
    Checked(who, f): Checked<UnmuteForm>,
) -> Response {
    if let Err(r) = approver(&who, "lift a mute") {
        return r;
    }
    let lifted = async {
        let mut tx = app.store.db().begin().await?;
        let m = mutes::lift_in(&mut tx, &f.site, f.id, &who.user).await?;
        if let Some(m) = &m {
            let detail = format!(
                "#{} {} → {} [{}]",
                m.id,
                m.kind,
                m.vendor.as_deref().unwrap_or("-"),
                m.rule
            );
            audit::record_in(&mut tx, &who.user, "unmute", Some(&f.site), &detail).await?;
        }
        tx.commit().await?;
        Ok::<_, StoreError>(m)
    }
    .await;
    match lifted {
        Ok(Some(_)) => back(&f.site, "mutes"),
        Ok(None) => views::message(
            StatusCode::NOT_FOUND,
            "No such mute",
            "This mute is not in force (lifted, expired, or of another site).",
        ),
        Err(e) => views::store_error(&e),
    }
}
