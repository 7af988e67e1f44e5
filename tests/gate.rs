//! Baselines, drift and the CI gate, run as a user would: scan, approve, export, change the
//! site, then `diff` and `check` must name exactly what changed.

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pixelwatch::fixture::{FixtureServer, Response, Site};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pixelwatch");
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

async fn run(args: &[String]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("PIXELWATCH_DB")
        .output()
        .await
        .expect("binary runs")
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_change_diff_and_check_name_exactly_what_changed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let changed = Arc::new(AtomicBool::new(false));
    let server = FixtureServer::start(site(changed.clone())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db").display().to_string();
    let path = |f: &str| dir.path().join(f).display().to_string();
    let mut scan = s(&[
        "scan",
        "https://www.clinic.test/",
        "--quiet",
        "--no-sitemap",
        "--settle-quiet",
        "200",
        "--settle-max",
        "1500",
        "--db",
        &db,
    ]);
    for a in server.browser_args() {
        scan.push(format!("--browser-arg={a}"));
    }

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
    assert_eq!(base["schema"], "pixelwatch.baseline/v1");

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
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

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
        "cookie newcookie @ www.clinic.test",
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

    // SARIF that code scanning accepts: 2.1.0, rules, a result per violation with a location.
    let sarif: Value = serde_json::from_slice(&std::fs::read(path("out.sarif")).unwrap()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run0 = &sarif["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "pixelwatch");
    let results = run0["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["ruleId"] == "drift"
        && r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].is_string()));
    assert!(results.iter().any(|r| {
        r["message"]["text"]
            .as_str()
            .unwrap()
            .contains("vendor tiktok (page https://www.clinic.test/services/deep/booking)")
    }));
    // Valid against the SARIF 2.1.0 schema.
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sarif-2.1.0-rtm.5.json"
    );
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))); print('valid')",
            &path("out.sarif"),
            schema,
        ])
        .output()
        .expect("python3 runs (scripts/setup.sh --test installs jsonschema)");
    assert!(
        check.status.success(),
        "SARIF is not valid: {}",
        text(&check.stderr)
    );
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
        "--quiet",
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
