//! Baselines, drift and the CI gate, run as a user would: scan, approve, export, change the
//! site, then `diff` and `check` must name exactly what changed; the README's staging flow (a
//! production baseline checks staging on another host); one new pixel is one violation.

mod outputs_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use outputs_support::{assert_exit, run, s, scan_command, text};
use pixelwatch::fixture::{FixtureServer, Response, Site};
use serde_json::Value;

const HOST: &str = "www.clinic.test";

/// Version 1, or (after `changed` is set) version 2: a TikTok pixel added on one deep page, a
/// cookie added, a widget script moved to another host, the Meta pixel removed. Every load
/// also varies what must not count as drift: cache-busting query strings and cookie/storage values.
fn site(changed: Arc<AtomicBool>) -> Site {
    let loads = Arc::new(AtomicUsize::new(0));
    Site::new()
        .handler(HOST, "/", move |req| {
            let v2 = changed.load(Ordering::SeqCst);
            let n = loads.fetch_add(1, Ordering::SeqCst);
            let path = req.target.split('?').next().unwrap_or("/");
            let widget = if v2 {
                "https://cdn.widget-b.test/w2.js".to_string()
            } else {
                format!("https://cdn.widget-a.test/w.js?cb={n}")
            };
            let mut head = format!(
                r#"<script src="{widget}"></script><script>localStorage.setItem('visit', '{n}'); document.cookie = 'fp=' + Math.random() + '; path=/';</script>"#
            );
            if !v2 && path == "/" {
                head.push_str(r#"<script src="https://connect.facebook.net/en_US/fbevents.js"></script>"#);
            }
            if v2 && path == "/services/deep/booking" {
                head.push_str(r#"<script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script>"#);
            }
            let body = match path {
                "/" => r#"<a href="/services">Services</a>"#,
                "/services" => r#"<a href="/services/deep/booking">Book</a>"#,
                "/services/deep/booking" => "<h1>Book</h1>",
                _ => return Response::status(404),
            };
            let mut resp = Response::html(format!("<html><head>{head}</head><body>{body}</body></html>"));
            if v2 && path == "/services" {
                resp = resp.header("set-cookie", "newcookie=1; Path=/");
            }
            resp
        })
        .route("cdn.widget-a.test", "/w.js", Response::js("1;"))
        .route("cdn.widget-b.test", "/w2.js", Response::js("2;"))
        .route("connect.facebook.net", "/en_US/fbevents.js", Response::js("3;"))
        .route("analytics.tiktok.com", "/i18n/pixel/events.js", Response::js("4;"))
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_change_diff_and_check_name_exactly_what_changed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let changed = Arc::new(AtomicBool::new(false));
    let server = FixtureServer::start(site(changed.clone())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db").display().to_string();
    let path = |f: &str| dir.path().join(f).display().to_string();
    let mut scan = scan_command("scan", "https://www.clinic.test/", &db, &server);
    scan.push("--quiet".into());

    // Scan v1, approve it, export it.
    assert_eq!(run(&scan).await.status.code(), Some(0));
    let approve = run(&s(&[
        "baseline",
        "approve",
        "--site",
        "https://www.clinic.test",
        "--db",
        &db,
    ]))
    .await;
    assert_eq!(approve.status.code(), Some(0), "{}", text(&approve.stderr));
    let export = run(&s(&["baseline", "export", &path("base.json"), "--db", &db])).await;
    assert_eq!(export.status.code(), Some(0), "{}", text(&export.stderr));
    let base: Value = serde_json::from_slice(&std::fs::read(path("base.json")).unwrap()).unwrap();
    assert_eq!(base["schema"], "pixelwatch.baseline/v2");

    // An unchanged rescan has no drift, although query strings and values differ.
    assert_eq!(run(&scan).await.status.code(), Some(0));
    let same = run(&s(&["diff", "--db", &db])).await;
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stdout));
    assert!(text(&same.stdout).contains("No drift"));

    // Change the site: the gate fails, naming exactly the changes.
    changed.store(true, Ordering::SeqCst);
    // A policy that allows every vendor, so only drift can fail the check.
    std::fs::write(
        path("policy.toml"),
        "[allow]\nvendors = [\"tiktok\", \"meta\"]\n",
    )
    .unwrap();
    let mut check = scan.clone();
    check[0] = "check".into();
    check.retain(|a| a != "--quiet");
    check.extend(s(&[
        "--policy",
        &path("policy.toml"),
        "--baseline",
        &path("base.json"),
        "--sarif",
        &path("out.sarif"),
        "--junit",
        &path("out.xml"),
        "--markdown",
        &path("out.md"),
    ]));
    let out = run(&check).await;
    assert_exit(&out, 2);
    // One violation per cause: the TikTok pixel, the widget's new host, the site's own cookie.
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("check FAILED: 3 policy violation(s)"),
        "{stdout}"
    );
    // Drift inherits the severity of what drifted: the pixel is critical, the cookie low.
    assert!(stdout.contains("[CRITICAL] TikTok Pixel"), "{stdout}");
    assert!(stdout.contains("[LOW] the site's own cookies"), "{stdout}");

    let diff = run(&s(&["diff", "--db", &db, "--json", &path("drift.json")])).await;
    assert_eq!(diff.status.code(), Some(2));
    let drift: Value = serde_json::from_slice(&std::fs::read(path("drift.json")).unwrap()).unwrap();
    let items = |k: &str| -> BTreeSet<String> {
        drift[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{} {}",
                    i["category"].as_str().unwrap(),
                    i["key"].as_str().unwrap()
                )
            })
            .collect()
    };
    let expected_added: BTreeSet<String> = [
        "vendor tiktok",
        "tracker_host analytics.tiktok.com",
        "third_party_host analytics.tiktok.com",
        "third_party_host cdn.widget-b.test",
        "third_party_script https://analytics.tiktok.com/i18n/pixel/events.js",
        "third_party_script https://cdn.widget-b.test/w2.js",
        "cookie newcookie @ {site}",
        "finding critical tracker tiktok [vendors.toml:tiktok]",
        "finding high no_consent tiktok [consent:none]",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    assert_eq!(items("added"), expected_added);
    let expected_removed: BTreeSet<String> = [
        "vendor meta",
        "tracker_host connect.facebook.net",
        "third_party_host connect.facebook.net",
        "third_party_host cdn.widget-a.test",
        "third_party_script https://connect.facebook.net/en_US/fbevents.js",
        "third_party_script https://cdn.widget-a.test/w.js",
        "finding critical tracker meta [vendors.toml:meta]",
        "finding high no_consent meta [consent:none]",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    assert_eq!(items("removed"), expected_removed);
    // The new pixel is reported on the one deep page where it appeared.
    let pixel = drift["added"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "tiktok")
        .unwrap();
    assert_eq!(
        pixel["pages"],
        serde_json::json!(["https://www.clinic.test/services/deep/booking"])
    );

    // SARIF that code scanning accepts: valid against the schema, GitHub's upload rules met
    // (scheme-less relative URIs), one result per violation, the full URL in message and
    // properties, a fingerprint per cause.
    outputs_support::assert_sarif_schema_valid(std::path::Path::new(&path("out.sarif")));
    let sarif: Value = serde_json::from_slice(&std::fs::read(path("out.sarif")).unwrap()).unwrap();
    outputs_support::assert_github_accepts(&sarif);
    let run0 = &sarif["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "pixelwatch");
    let results = run0["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["ruleId"] == "drift"));
    let tiktok = results
        .iter()
        .find(|r| r["properties"]["cause"] == "vendor:tiktok")
        .expect("the TikTok violation");
    assert_eq!(
        tiktok["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "www.clinic.test/services/deep/booking"
    );
    assert_eq!(
        tiktok["properties"]["url"],
        "https://www.clinic.test/services/deep/booking"
    );
    let message = tiktok["message"]["text"].as_str().unwrap();
    assert!(
        message.contains("new since the baseline: vendor tiktok")
            && message.contains("Page: https://www.clinic.test/services/deep/booking"),
        "{message}"
    );
    assert_eq!(tiktok["level"], "error");
    let fingerprint = tiktok["partialFingerprints"]["primaryLocationLineHash"].clone();
    let rule_ids: Vec<&str> = run0["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rule_ids, vec!["drift"]);
    let junit = text(&std::fs::read(path("out.xml")).unwrap());
    assert!(
        junit.starts_with("<?xml")
            && junit.contains("<failure")
            && junit.contains("services/deep/booking")
    );
    assert_eq!(junit.matches("<testcase").count(), 4, "{junit}");
    let md = text(&std::fs::read(path("out.md")).unwrap());
    assert!(
        md.contains("pixelwatch check failed")
            && md.contains("+ vendor tiktok")
            && md.contains("- vendor meta"),
        "{md}"
    );

    // The same cause is the same code-scanning alert on the next run.
    let out = run(&check).await;
    assert_eq!(out.status.code(), Some(2));
    let again: Value = serde_json::from_slice(&std::fs::read(path("out.sarif")).unwrap()).unwrap();
    let again = again["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["properties"]["cause"] == "vendor:tiktok")
        .unwrap()["partialFingerprints"]["primaryLocationLineHash"]
        .clone();
    assert_eq!(again, fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_fails_an_advertising_pixel_and_bad_inputs_exit_3() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = FixtureServer::start(site(Arc::new(AtomicBool::new(false))))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db").display().to_string();
    let mut check = s(&[
        "check",
        "https://www.clinic.test/",
        "--no-sitemap",
        "--settle-quiet",
        "200",
        "--db",
        &db,
    ]);
    for a in server.browser_args() {
        check.push(format!("--browser-arg={a}"));
    }
    let out = run(&check).await;
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("deny.categories") && stdout.contains("Meta Pixel"),
        "{stdout}"
    );

    let bad_policy = dir.path().join("p.toml");
    std::fs::write(&bad_policy, "[deny]\nvendor = [\"x\"]\n").unwrap();
    let mut c = check.clone();
    c.extend(s(&["--policy", bad_policy.to_str().unwrap()]));
    let out = run(&c).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("p.toml") && text(&out.stderr).contains("line 2"),
        "{}",
        text(&out.stderr)
    );
    let mut c = check.clone();
    c.extend(s(&["--baseline", "/nonexistent/base.json"]));
    let out = run(&c).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("/nonexistent/base.json"));
    let none = run(&s(&["diff", "--db", &db])).await;
    assert_eq!(none.status.code(), Some(3));
    assert!(
        text(&none.stderr).contains("no approved baseline"),
        "{}",
        text(&none.stderr)
    );
}

/// The same clinic on its production host and on a staging host of another domain; with
/// `pixel` set, staging loads the TikTok pixel on one page. Every load varies what must not
/// count: a timestamped storage key, a UUID-named session key, the first-party host itself.
fn environments(pixel: Arc<AtomicBool>) -> Site {
    let page = move |req: &pixelwatch::fixture::LoggedRequest| {
        let path = req.target.split('?').next().unwrap_or("/");
        let tiktok = pixel.load(Ordering::SeqCst)
            && req.host == "staging.clinic-preview.test"
            && path == "/services";
        let head = format!(
            r#"<script src="https://cdn.widget-a.test/w.js"></script>
            <script>localStorage.setItem('cache_' + Date.now(), '1');
            sessionStorage.setItem('sess_' + crypto.randomUUID(), '1');
            document.cookie = 'pref=1; path=/';</script>{}"#,
            if tiktok {
                r#"<script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script>"#
            } else {
                ""
            }
        );
        let body = match path {
            "/" => r#"<a href="/services">Services</a> <a href="/about">About</a>"#,
            "/services" | "/about" => "<h1>Page</h1>",
            _ => return Response::status(404),
        };
        Response::html(format!(
            "<html><head>{head}</head><body>{body}</body></html>"
        ))
        .header("set-cookie", "sid=1; Path=/")
    };
    let page = Arc::new(page);
    let (a, b) = (page.clone(), page);
    Site::new()
        .handler(HOST, "/", move |r| a(r))
        .handler("staging.clinic-preview.test", "/", move |r| b(r))
        .route("cdn.widget-a.test", "/w.js", Response::js("1;"))
        .route(
            "analytics.tiktok.com",
            "/i18n/pixel/events.js",
            Response::js("4;"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_baseline_checks_staging_and_one_new_pixel_is_one_violation() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let pixel = Arc::new(AtomicBool::new(false));
    let server = FixtureServer::start(environments(pixel.clone()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    let db = path("h.db");
    let common = |cmd: &str, url: &str| scan_command(cmd, url, &db, &server);
    // The README's flow: scan production, approve, export.
    let out = run(&common("scan", "https://www.clinic.test/")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&s(&[
        "baseline",
        "approve",
        "--site",
        "https://www.clinic.test/",
        "--db",
        &db,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&s(&[
        "baseline",
        "export",
        &path("baseline.json"),
        "--db",
        &db,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Staging, identical content on another host: clean. Not quiet, so the drift is printed.
    let mut check = common("check", "https://staging.clinic-preview.test/");
    check.extend(s(&[
        "--baseline",
        &path("baseline.json"),
        "--sarif",
        &path("s.sarif"),
    ]));
    let out = run(&check).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("No drift") && stdout.contains("check passed"),
        "{stdout}"
    );

    // Staging adds one pixel: one violation, naming it, its pages and every reason.
    pixel.store(true, Ordering::SeqCst);
    let out = run(&check).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("check FAILED: 1 policy violation(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[CRITICAL] TikTok Pixel (tiktok, advertising, offers no BAA) — deny.categories, deny.finding_kinds, drift (on 1 page: https://staging.clinic-preview.test/services)"),
        "{stdout}"
    );
    for reason in [
        "new since the baseline: vendor tiktok",
        "no_consent [rule consent:none]",
    ] {
        assert!(stdout.contains(reason), "{reason}: {stdout}");
    }
    let sarif: Value = serde_json::from_slice(&std::fs::read(path("s.sarif")).unwrap()).unwrap();
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), 1);

    // -q: nothing on success, the verdict line alone on failure.
    let mut quiet = check.clone();
    quiet.push("-q".into());
    let out = run(&quiet).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "check FAILED: 1 policy violation(s) on https://staging.clinic-preview.test/\n"
    );
    pixel.store(false, Ordering::SeqCst);
    let out = run(&quiet).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
}
