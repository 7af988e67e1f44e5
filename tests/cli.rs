//! The `pixelwatch` binary as a user runs it: exit codes, the JSON report contract, stored
//! history, and bad input that must fail clearly without losing the scan.

mod outputs_support;

use std::path::Path;
use std::process::Output;

use pixelwatch::fixture::{FixtureServer, Response, Site};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pixelwatch");

fn site() -> Site {
    Site::new()
        .route(
            "www.clinic.test",
            "/",
            Response::html(
                r#"<html><body><a href="/services/semaglutide">Semaglutide</a>
                <iframe src="https://booking.widget-example.test/embed"></iframe>
                <script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script>
                <script>sessionStorage.setItem('k', '1'); document.cookie = 'c1=1; path=/';</script>
                </body></html>"#,
            )
            .header("set-cookie", "sid=1; Path=/"),
        )
        .page(
            "www.clinic.test",
            "/services/semaglutide",
            "<html><body><script>navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', '{\"event\":\"ViewContent\"}')</script></body></html>",
        )
        .page("booking.widget-example.test", "/embed", "<html><body>widget</body></html>")
        .route(
            "analytics.tiktok.com",
            "/i18n/pixel/events.js",
            Response::js("window.ttq = {};"),
        )
        .route("analytics.tiktok.com", "/api/v2/pixel", Response::status(204))
}

/// One browser at a time in this binary: parallel Chromiums on 2 cores only add noise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(args: &[&str]) -> Output {
    let _turn = ONE_AT_A_TIME.lock().await;
    outputs_support::run(&outputs_support::s(args)).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scan_args<'a>(server_args: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = vec![
        "scan",
        "https://www.clinic.test/",
        "--settle-quiet",
        "200",
        "--settle-max",
        "1500",
    ];
    for a in server_args {
        v.push("--browser-arg");
        v.push(a);
    }
    v.extend_from_slice(extra);
    v
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn assert_has(v: &Value, fields: &[&str], what: &str) {
    for f in fields {
        assert!(v.get(f).is_some(), "{what} lacks `{f}`; has {:?}", keys(v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_writes_the_report_contract_and_stores_history() {
    let server = FixtureServer::start(site()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let har = dir.path().join("report.har");
    let sargs = server.browser_args();
    let out = run(&scan_args(
        &sargs,
        &[
            "--db",
            db.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
            "--har",
            har.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // Every report file is written the same way, with the same permissions.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&json), mode(&html));
    assert_eq!(mode(&json), mode(&har));
    // Not a terminal: no progress bar, nothing on stderr; the summary on stdout.
    assert_eq!(text(&out.stderr), "");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("2 pages (0 with errors)"), "{stdout}");
    assert!(stdout.contains("analytics.tiktok.com"), "{stdout}");
    assert!(stdout.contains("[CRITICAL] tracker tiktok"), "{stdout}");

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], "pixelwatch.scan/v1");
    assert_has(
        &report,
        &[
            "schema",
            "site",
            "started_at",
            "finished_at",
            "consent_mode",
            "pages",
            "findings",
            "summary",
        ],
        "report",
    );
    assert_eq!(report["consent_mode"], "none");
    let home = report["pages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["url"] == "https://www.clinic.test/")
        .unwrap();
    assert_has(
        home,
        &[
            "url",
            "final_url",
            "status",
            "error",
            "requests",
            "cookies",
            "storage",
            "scripts",
            "frames",
        ],
        "page",
    );
    assert_has(
        &home["requests"][0],
        &[
            "url",
            "host",
            "method",
            "resource_type",
            "initiator",
            "status",
            "third_party",
            "post_data",
            "vendor",
        ],
        "request",
    );
    assert_has(
        &home["cookies"][0],
        &[
            "name",
            "domain",
            "path",
            "expires",
            "http_only",
            "secure",
            "same_site",
            "third_party",
            "set_by",
        ],
        "cookie",
    );
    assert_has(&home["storage"][0], &["origin", "kind", "key"], "storage");
    assert_has(
        &home["scripts"][0],
        &["url", "sha256", "third_party"],
        "script",
    );
    assert_has(&home["frames"][0], &["url", "third_party"], "frame");
    assert_has(
        &report["findings"][0],
        &[
            "kind",
            "severity",
            "vendor",
            "page",
            "request_url",
            "evidence",
            "rule",
        ],
        "finding",
    );
    // The inline script is recorded by hash; the pixel script by URL and hash.
    let scripts = home["scripts"].as_array().unwrap();
    assert!(
        scripts
            .iter()
            .any(|s| s["url"].is_null() && s["sha256"].as_str().is_some_and(|h| h.len() == 64))
    );
    let pixel = scripts
        .iter()
        .find(|s| s["url"] == "https://analytics.tiktok.com/i18n/pixel/events.js")
        .unwrap();
    assert_eq!(
        pixel["sha256"],
        pixelwatch::browser::capture::sha256_hex(b"window.ttq = {};")
    );
    assert_eq!(pixel["third_party"], true);
    // Cookie and storage values are never recorded, only names and lengths.
    for p in report["pages"].as_array().unwrap() {
        for item in p["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .chain(p["storage"].as_array().unwrap())
        {
            assert!(item.get("value").is_none(), "{item}");
        }
    }
    assert!(
        report["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("value").is_none())
    );

    // History: list and show.
    let list = run(&["scans", "list", "--db", db.to_str().unwrap()]).await;
    assert_eq!(list.status.code(), Some(0));
    let listed = text(&list.stdout);
    assert!(
        listed.contains("https://www.clinic.test/") && listed.contains("critical"),
        "{listed}"
    );
    let shown = run(&["scans", "show", "1", "--json", "--db", db.to_str().unwrap()]).await;
    assert_eq!(shown.status.code(), Some(0));
    let stored: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(stored["id"], 1);
    assert_eq!(stored["pages"], report["pages"]);
    assert_eq!(stored["findings"], report["findings"]);
    let missing = run(&["scans", "show", "99", "--db", db.to_str().unwrap()]).await;
    assert_eq!(missing.status.code(), Some(3));
    assert!(text(&missing.stderr).contains("no scan with id 99"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_3_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let db = db.to_str().unwrap();
    for (args, needle) in [
        (vec!["scan", "not-a-url", "--db", db], "not an http(s) URL"),
        (
            vec!["scan", "ftp://clinic.test/", "--db", db],
            "not an http(s) URL",
        ),
        (
            vec![
                "scan",
                "https://clinic.test/",
                "--exclude",
                "([",
                "--db",
                db,
            ],
            "bad --exclude pattern",
        ),
        (
            vec![
                "scan",
                "https://clinic.test/",
                "--concurrency",
                "0",
                "--db",
                db,
            ],
            "--concurrency must be at least 1",
        ),
        (
            vec![
                "scan",
                "https://clinic.test/",
                "--browser",
                "/nonexistent/chrome",
                "--db",
                db,
            ],
            "/nonexistent/chrome",
        ),
        (
            vec!["scan", "https://clinic.test/", "--max-pages", "many"],
            "invalid value",
        ),
        (vec!["frobnicate"], "unrecognized subcommand"),
        (
            vec!["scan", "www.clinic.test", "--db", db],
            "did you mean https://www.clinic.test/",
        ),
        (
            vec!["diff", "--site", "clinic.test", "--db", db],
            "did you mean https://clinic.test/",
        ),
    ] {
        let out = run(&args).await;
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_site_is_a_run_error_that_names_the_cause() {
    let server = FixtureServer::start(site()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let json = dir.path().join("r.json");
    let mut args: Vec<String> = server.browser_args();
    // Map nothing for this host: it does not resolve.
    args.retain(|a| !a.starts_with("--host-resolver-rules"));
    args.push("--host-resolver-rules=MAP * ~NOTFOUND".into());
    let mut v = vec![
        "scan",
        "https://www.unreachable-clinic.test/",
        "--db",
        db.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--quiet",
    ];
    for a in &args {
        v.push("--browser-arg");
        v.push(a);
    }
    let out = run(&v).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("ERR_NAME_NOT_RESOLVED"), "{err}");
    // The (failed) scan is still on record.
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["summary"]["pages_errored"], 1);
    // ...but a scan whose every page errored is no baseline.
    let approve = run(&["baseline", "approve", "--db", db.to_str().unwrap()]).await;
    assert_eq!(approve.status.code(), Some(3));
    let err = text(&approve.stderr);
    assert!(
        err.contains("scan #1 cannot be a baseline") && err.contains("ERR_NAME_NOT_RESOLVED"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_is_a_run_error_not_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    // Not a database at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let out = run(&["scans", "list", "--db", junk.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("junk.db"));
    // A database whose stored report is unreadable.
    let db = dir.path().join("h.db");
    drop(pixelwatch::store::Store::open(&db).await.unwrap());
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO scans (site, started_at, finished_at, consent_mode, pages, pages_errored, requests,
            third_party_hosts, cookies, findings, worst_severity, report_json)
         VALUES ('https://c.test/', 'a', 'b', 'none', 1, 0, 0, 0, 0, 0, NULL, '{not json');",
    )
    .unwrap();
    drop(conn);
    for args in [
        vec!["scans", "show", "1"],
        vec!["diff", "--against", "1"],
        vec!["baseline", "approve"],
    ] {
        let mut v = args.clone();
        v.extend(["--db", db.to_str().unwrap()]);
        let out = run(&v).await;
        assert_eq!(out.status.code(), Some(1), "{v:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("unreadable report"),
            "{v:?}: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_named_and_the_report_is_kept() {
    let server = FixtureServer::start(site()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("locked.db");
    // Another process holds an exclusive lock for the whole scan.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder
        .execute_batch("CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
        .unwrap();
    let sargs = server.browser_args();
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tokio::process::Command::new(BIN)
        .args(scan_args(
            &sargs,
            &["--db", db.to_str().unwrap(), "--quiet"],
        ))
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("locked.db") && err.contains("locked by another process"),
        "{err}"
    );
    assert!(
        err.contains("the report was saved to pixelwatch-scan-"),
        "{err}"
    );
    let saved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pixelwatch-scan-")
        })
        .collect();
    assert_eq!(saved.len(), 1);
    let report: Value = serde_json::from_slice(&std::fs::read(saved[0].path()).unwrap()).unwrap();
    assert_eq!(report["summary"]["pages"], 2);
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_check_and_explain() {
    let ok = run(&["rules", "check"]).await;
    assert_eq!(ok.status.code(), Some(0));
    assert!(text(&ok.stdout).contains("rules OK"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("mine.toml");
    std::fs::write(
        &bad,
        "[[vendor]]\nid = \"x\"\nname = \"X\"\ncategory = \"advertising\"\nhots = [\"a.com\"]\n",
    )
    .unwrap();
    let out = run(&["rules", "check", dir.path().to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("line 5") && err.contains("hots"),
        "{err}"
    );
    let explain = run(&[
        "rules",
        "explain",
        "https://analytics.tiktok.com/api/v2/pixel",
    ])
    .await;
    let s = text(&explain.stdout);
    assert!(
        s.contains("TikTok Pixel")
            && s.contains("vendors.toml:tiktok")
            && s.contains("not offered"),
        "{s}"
    );
    assert!(Path::new(BIN).exists());
}

/// The RGB of the pixel in the middle of a PNG.
fn centre_colour(png: &Path) -> [u8; 3] {
    let decoder = png::Decoder::new(std::fs::File::open(png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let channels = info.color_type.samples();
    let at =
        ((info.height / 2) as usize * info.width as usize + (info.width / 2) as usize) * channels;
    [buf[at], buf[at + 1], buf[at + 2]]
}

/// `--screenshots DIR`: a PNG of each page with a finding, none of a clean page, each named on
/// its page in the JSON report and linked from the HTML report relative to where it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_are_kept_for_pages_with_a_finding_and_linked_from_the_report() {
    let site = Site::new()
        .page(
            "www.clinic.test",
            "/",
            r#"<html><body style="background:#c00"><h1>Home</h1><a href="/about">About</a>
            <a href="/book">Book</a>
            <script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script></body></html>"#,
        )
        .page(
            "www.clinic.test",
            "/about",
            r#"<html><body style="background:#0c0"><h1>About us</h1></body></html>"#,
        )
        .page(
            "www.clinic.test",
            "/book",
            r#"<html><body style="background:#00c"><h1>Book</h1>
            <form action="/book/send" method="post"><input type="email" name="email"><button>Book</button></form>
            <script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script></body></html>"#,
        )
        .route(
            "analytics.tiktok.com",
            "/i18n/pixel/events.js",
            Response::js("window.ttq = {};"),
        );
    let server = FixtureServer::start(site).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let json = dir.path().join("report.json");
    let html = dir.path().join("out/report.html");
    std::fs::create_dir(dir.path().join("out")).unwrap();
    // A directory that does not exist yet, beside the report's.
    let shots = dir.path().join("evidence/shots");
    let sargs = server.browser_args();
    let out = run(&scan_args(
        &sargs,
        &[
            "--db",
            db.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
            "--screenshots",
            shots.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Screenshots of the 2 pages with a finding"),
        "{}",
        text(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let shot_of = |path: &str| {
        let url = format!("https://www.clinic.test{path}");
        let page = report["pages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["url"] == url)
            .unwrap_or_else(|| panic!("no page {url}"));
        page["screenshot"].as_str().map(str::to_string)
    };
    assert_eq!(shot_of("/about"), None, "a clean page keeps no picture");
    let home = shot_of("/").expect("the home page has a finding and a picture");
    let book = shot_of("/book").expect("/book has a finding and a picture");
    let mut files: Vec<String> = std::fs::read_dir(&shots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut named = vec![home.clone(), book.clone()];
    named.sort();
    assert_eq!(files, named, "only the pictures the report names are left");
    assert!(
        home.starts_with("www-clinic-test-") && home.ends_with(".png"),
        "{home}"
    );
    for f in &files {
        let png = shots.join(f);
        assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h) = outputs_support::png_size(&png);
        assert!(
            w >= 800 && h >= 500,
            "{f} is {w}x{h}: not a picture of the window"
        );
    }
    // Each picture shows its own page as a visitor saw it: /book's is its blue page, not the
    // error page its probed form's held-back submission leaves in the tab.
    assert_eq!(centre_colour(&shots.join(&home)), [0xcc, 0, 0], "{home}");
    assert_eq!(centre_colour(&shots.join(&book)), [0, 0, 0xcc], "{book}");
    // The HTML report links each picture relative to itself, so the pair can be moved together.
    let page = std::fs::read_to_string(&html).unwrap();
    for name in [&home, &book] {
        let href = format!("href=\"../evidence/shots/{name}\"");
        // In the page list of each cause on that page, and in the page's row.
        assert!(page.matches(&href).count() >= 2, "{href} missing");
    }
    let about_row = page
        .split("<tr class=\"page\">")
        .find(|r| r.contains("https://www.clinic.test/about<"))
        .expect("the /about row");
    assert!(
        !about_row.split("</tr>").next().unwrap().contains("shot"),
        "{about_row}"
    );

    // A directory that cannot be made fails before the scan, naming the flag and the path.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let bad = file.join("shots");
    let out = run(&scan_args(
        &sargs,
        &[
            "--db",
            db.to_str().unwrap(),
            "--screenshots",
            bad.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--screenshots") && err.contains("a-file"),
        "{err}"
    );
    assert!(!err.contains("Stored in"), "no scan ran: {err}");
}

/// A scanner killed with SIGKILL (an OOM kill, `kill -9` from cron) takes its browser with it:
/// no Chromium is left running, holding memory, after pixelwatch is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_killed_mid_page_leaves_no_browser_behind() {
    use std::time::{Duration, Instant};
    let _turn = ONE_AT_A_TIME.lock().await;
    let site = Site::new().route(
        "www.clinic.test",
        "/",
        Response {
            body: pixelwatch::fixture::Body::Hang,
            ..Response::html("")
        },
    );
    let server = FixtureServer::start(site).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let sargs = server.browser_args();
    let mut args = scan_args(&sargs, &["--db", db.to_str().unwrap()]);
    args.extend(["--page-timeout", "120", "--no-sitemap"]);
    let mut child = tokio::process::Command::new(BIN)
        .args(&args)
        .env_remove("PIXELWATCH_DB")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // Wait until the browser runs (the page hangs, so the scan stays mid-page).
    let until = Instant::now() + Duration::from_secs(30);
    let browsers = loop {
        let found: Vec<u32> = outputs_support::descendants(pid)
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.to_lowercase().contains("chrom"))
            })
            .collect();
        if found.len() >= 2 || Instant::now() > until {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!browsers.is_empty(), "the scan started no browser");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = outputs_support::descendants(pid);
    // SAFETY: signalling the process this test started, by its pid.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = child.wait().await;
    let until = Instant::now() + Duration::from_secs(15);
    while all.iter().any(|&p| outputs_support::alive(p)) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<u32> = all
        .iter()
        .copied()
        .filter(|&p| outputs_support::alive(p))
        .collect();
    for &p in &left {
        // SAFETY: the test's own orphans, by pid; cleaned up so a failure leaks nothing.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    assert!(
        left.is_empty(),
        "still running after pixelwatch was killed: {left:?} of {all:?}"
    );
}
