//! The dashboard over a fleet's PostgreSQL (started by the harness on a free loopback port),
//! spoken to over HTTP as a browser would (cookies by hand): password sign-in, the overview of a
//! real scan, "Scan now" queued as a job for the workers, approval, a viewer refused, a forged
//! token refused, sign-in delegated to a reverse proxy's header; and a mute applied by the
//! alert judgement a worker or `watch` runs.

mod pg_support;

use std::sync::Arc;

use pg_support::PgServer;
use pixelwatch::dashboard::{self, Options, auth};
use pixelwatch::model::{Finding, FindingKind, Severity};
use pixelwatch::scan::{self, Silent};
use pixelwatch::settings::ScanSettings;
use pixelwatch::store::accounts::Role;
use pixelwatch::store::mutes::NewMute;
use pixelwatch::store::{DbTarget, Store};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};

const DEMO: &str = pixelwatch::demo::DEMO_URL;

async fn pg_store() -> Store {
    let url = PgServer::shared().fresh_db().await;
    Store::open(&url.parse::<DbTarget>().unwrap())
        .await
        .unwrap()
}

/// Serves the dashboard on a free loopback port; its base URL.
async fn serve(store: Store, opts: Options) -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(dashboard::serve(
        store,
        opts,
        "127.0.0.1:0".parse().unwrap(),
        Some(tx),
        std::future::pending(),
    ));
    format!("http://{}", rx.await.unwrap())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` set by `res`.
fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Signs in with a password; the session cookie header.
async fn sign_in(base: &str, user: &str, password: &str) -> String {
    let http = client();
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    let token = set_cookie(&form, "__Host-pixelwatch_login").unwrap();
    let res = http
        .post(format!("{base}/login"))
        .header(COOKIE, format!("__Host-pixelwatch_login={token}"))
        .form(&[
            ("user", user),
            ("password", password),
            ("login_csrf", &token),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{user} signs in");
    let session = set_cookie(&res, auth::SESSION_COOKIE).expect("a session cookie");
    format!("{}={session}", auth::SESSION_COOKIE)
}

/// A signed-in GET: status and body.
async fn get(base: &str, cookie: &str, path: &str) -> (StatusCode, String) {
    let res = client()
        .get(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

/// A signed-in POST of a form: status and body.
async fn post(base: &str, cookie: &str, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
    let res = client()
        .post(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

/// The CSRF token the signed-in page's forms carry.
fn csrf(page: &str) -> String {
    regex::Regex::new(r#"name="csrf" value="([0-9a-f]{64})""#)
        .unwrap()
        .captures(page)
        .expect("a form with a CSRF token")[1]
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_scan_now_queues_a_job_and_approval_needs_an_approver() {
    let store = pg_store().await;
    // A real scan of the demo clinic, stored as a worker would.
    let server = pixelwatch::demo::serve().await.unwrap();
    let mut report = scan::run(&pixelwatch::demo::scan_options(&server), Arc::new(Silent))
        .await
        .unwrap();
    let scan_id = store.save_scan(&mut report).await.unwrap();
    store
        .add_site(DEMO, "0 3 * * *", &ScanSettings::default())
        .await
        .unwrap();
    for (name, role) in [("ann", Role::Approver), ("vic", Role::Viewer)] {
        let hash = auth::hash_password(&format!("{name}-password-1")).unwrap();
        assert!(store.add_user(name, Some(&hash), role).await.unwrap());
    }
    let base = serve(store.clone(), Options::default()).await;

    // Wrong password: no session.
    let http = client();
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    let token = set_cookie(&form, "__Host-pixelwatch_login").unwrap();
    let res = http
        .post(format!("{base}/login"))
        .header(COOKIE, format!("__Host-pixelwatch_login={token}"))
        .form(&[
            ("user", "ann"),
            ("password", "wrong-password"),
            ("login_csrf", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&res, auth::SESSION_COOKIE).is_none());

    let ann = sign_in(&base, "ann", "ann-password-1").await;
    let (status, page) = get(&base, &ann, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"data-verdict="leaking""#), "{page}");
    assert!(
        page.contains("0 3 * * *"),
        "next scan from the stored schedule: {page}"
    );
    let site_path = format!("/site?url={}", urlencode(DEMO));
    let (status, page) = get(&base, &ann, &site_path).await;
    assert_eq!(status, StatusCode::OK);
    let token = csrf(&page);

    // Scan now: a job due now for the workers, recorded with who.
    let (status, _) = post(
        &base,
        &ann,
        "/site/scan",
        &[("csrf", &token), ("site", DEMO)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let jobs = store.next_jobs().await.unwrap();
    assert_eq!(
        jobs.get(DEMO).map(|(_, s)| s.as_str()),
        Some("queued"),
        "{jobs:?}"
    );
    let (_, page) = get(&base, &ann, "/").await;
    assert!(page.contains("queued for"), "{page}");

    // A forged token and a viewer are refused; the approver approves.
    let (status, _) = post(
        &base,
        &ann,
        "/site/approve",
        &[
            ("csrf", &"0".repeat(64)),
            ("site", DEMO),
            ("scan", &scan_id.to_string()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let vic = sign_in(&base, "vic", "vic-password-1").await;
    let (_, page) = get(&base, &vic, &site_path).await;
    assert!(
        !page.contains("/site/approve"),
        "a viewer is offered no approval"
    );
    let vic_token = csrf(&page);
    for (path, form) in [
        ("/site/approve", vec![("scan", scan_id.to_string())]),
        ("/site/scan", vec![]),
    ] {
        let mut f: Vec<(&str, &str)> = vec![("csrf", &vic_token), ("site", DEMO)];
        f.extend(form.iter().map(|(k, v)| (*k, v.as_str())));
        let (status, body) = post(&base, &vic, path, &f).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(body.contains("Only an approver"), "{body}");
    }
    assert!(store.baseline(DEMO).await.is_err(), "nothing approved yet");
    let (status, _) = post(
        &base,
        &ann,
        "/site/approve",
        &[
            ("csrf", &token),
            ("site", DEMO),
            ("scan", &scan_id.to_string()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(store.baseline(DEMO).await.unwrap().scan_id, Some(scan_id));
    let (_, page) = get(&base, &ann, "/").await;
    assert!(!page.contains(r#"data-verdict="drifted""#), "{page}");

    let actions = store.actions(Some(DEMO), 20).await.unwrap();
    let did: Vec<(&str, &str)> = actions
        .iter()
        .map(|a| (a.actor.as_str(), a.action.as_str()))
        .collect();
    assert!(did.contains(&("ann", "scan_now")), "{did:?}");
    assert!(did.contains(&("ann", "approve_baseline")), "{did:?}");
    assert!(!did.iter().any(|(who, _)| *who == "vic"), "{did:?}");

    // Signed out: the session no longer works.
    let (status, _) = post(&base, &ann, "/logout", &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = get(&base, &ann, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_its_header_names_the_account_and_nothing_else_signs_in() {
    let store = pg_store().await;
    let base = serve(
        store.clone(),
        Options {
            auth_header: Some("X-Forwarded-User".into()),
            ..Default::default()
        },
    )
    .await;
    let http = client();
    let res = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "no header, no entry"
    );
    let res = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = http
        .post(format!("{base}/login"))
        .form(&[("user", "x"), ("password", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "password sign-in is off"
    );
    let res = http
        .get(format!("{base}/"))
        .header("X-Forwarded-User", "pat@clinic.test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookie(&res, auth::SESSION_COOKIE).is_some());
    let page = res.text().await.unwrap();
    assert!(page.contains("pat@clinic.test · viewer"), "{page}");
    let users = store.users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(
        (users[0].name.as_str(), users[0].role),
        ("pat@clinic.test", Role::Viewer)
    );
    let res = http
        .get(format!("{base}/"))
        .header("X-Forwarded-User", " ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_finding_raises_no_drift_alert_until_the_mute_is_lifted() {
    let store = pg_store().await;
    let server = pixelwatch::demo::serve().await.unwrap();
    let mut first = scan::run(&pixelwatch::demo::scan_options(&server), Arc::new(Silent))
        .await
        .unwrap();
    let site = first.site.clone();
    let site = site.as_str();
    store.save_scan(&mut first).await.unwrap();
    store
        .approve_baseline(&pixelwatch::diff::Baseline::from_scan(&first))
        .await
        .unwrap();
    // The next scan has one new finding and nothing else new.
    let mut next = first.clone();
    next.id = None;
    next.findings.push(Finding {
        kind: FindingKind::PhiLeak,
        severity: Severity::Critical,
        vendor: Some("tiktok".into()),
        page: format!("{site}new-page"),
        request_url: None,
        evidence: "query: glp-1".into(),
        rule: "health-terms.toml:glp1".into(),
        matched: None,
    });
    let expires = (chrono::Utc::now() + chrono::Duration::days(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut tx = store.db().begin().await.unwrap();
    let mute_id = pixelwatch::store::mutes::add_in(
        &mut tx,
        &NewMute {
            site,
            kind: FindingKind::PhiLeak,
            vendor: Some("tiktok"),
            rule: "health-terms.toml:glp1",
            reason: "vendor signed a BAA",
            expires_at: &expires,
            created_by: "ann",
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let judge = |mut report: pixelwatch::model::ScanReport| {
        let store = store.clone();
        async move {
            let mut tx = store.db().begin().await.unwrap();
            let j = pixelwatch::alert::judge::record_scan(&mut tx, &mut report, &["email"], 3)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            j
        }
    };
    let muted = judge(next.clone()).await;
    assert_eq!(muted.drift_added, 0, "{muted:?}");
    assert_eq!(
        muted.decision,
        pixelwatch::alert::history::Decision::NothingNew
    );

    let mut tx = store.db().begin().await.unwrap();
    assert!(
        pixelwatch::store::mutes::lift_in(&mut tx, site, mute_id, "ann")
            .await
            .unwrap()
            .is_some()
    );
    tx.commit().await.unwrap();
    let alerted = judge(next).await;
    assert_eq!(alerted.drift_added, 1, "{alerted:?}");
    assert!(
        matches!(alerted.decision, pixelwatch::alert::history::Decision::Recorded(ref ids) if ids.len() == 1),
        "{alerted:?}"
    );
}
