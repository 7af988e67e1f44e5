//! A deliberately hostile clinic site run through every command and every output format. Its
//! title, storage keys, cookie names, event names, request bodies and URLs carry terminal escape
//! sequences (ESC[2J, OSC 8 links), fake newlines, NUL, bidi overrides, code fences, Markdown
//! headings, links and @mentions, Slack's `<!channel>`, HTML and XML markup, and a 60 KB event
//! name. Nothing of it may reach a terminal as a control sequence, break XML, JSON or SARIF,
//! leave a Markdown code span, ping in Slack, run in HTML, or arrive unbounded.

mod alert_support;
mod outputs_support;

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use alert_support::{SmtpSink, parse};
use outputs_support::*;
use pixelwatch::fixture::{FixtureServer, Response, Site};
use serde_json::Value;

const HOST: &str = "www.hostile-clinic.test";
const SITE: &str = "https://www.hostile-clinic.test/";

/// Escape sequences, a fake line, NUL, markup of every output, a bidi override — kept short so
/// they all land inside the excerpt around the health term that follows the event name's start.
const EVIL: &str = r"\u001b[2J\u001b]8;;https://evil.test\u0007x\u001b]8;;\u0007```\n# Injected\n[l](https://evil.test) @everyone <!channel> <img src=x onerror=alert(1)>\u0000]]></failure>|\u202egnp.exe\r\nfake line";

/// What a page tries to start a line with.
const FAKES: &[&str] = &["# Injected", "fake line", "check passed"];

fn site(v2: Arc<AtomicBool>) -> Site {
    Site::new()
        .handler(HOST, "/", move |req| {
            let path = req.target.split('?').next().unwrap_or("/").to_string();
            let more = if v2.load(Ordering::SeqCst) && path == "/services" {
                // Version 2: thirty new hostile storage keys and a new third-party host.
                r#"<script>for (let i = 0; i < 30; i++) localStorage.setItem('new_' + String.fromCharCode(97 + i % 26, 97 + (i / 26 | 0)) + evil, '1');</script>
                <script src="https://evil-cdn.test/%1B%5B2J.js?x=%0Acheck%20passed"></script>"#
            } else {
                ""
            };
            let body = match path.as_str() {
                "/" => r#"<a href="/services">Services</a> <a href="/services/semaglutide%1B%5B2J?q=%0Afake">x</a>"#,
                _ => "<h1>Services</h1>",
            };
            Response::html(format!(
                r#"<html><head><title>Clinic</title><script>
                const evil = "{EVIL}";
                document.title = 'Semaglutide ' + evil;
                localStorage.setItem(evil, '1');
                localStorage.setItem('cache_' + Date.now(), '1');
                sessionStorage.setItem('sess_' + crypto.randomUUID(), '1');
                document.cookie = 'a<!channel>|[x](y)@everyone=1; path=/';
                navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel',
                  JSON.stringify({{event: 'semaglutide ' + evil + 'x'.repeat(60000), context: {{page: {{url: location.href}}}}}}));
                </script><script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script>{more}</head>
                <body>{body}</body></html>"#
            ))
        })
        .route("analytics.tiktok.com", "/i18n/pixel/events.js", Response::js("1;"))
        .route("analytics.tiktok.com", "/api/v2/pixel", Response::status(204))
        .handler("evil-cdn.test", "/", |_| Response::js("2;"))
}

/// Both streams of a command are terminal-safe.
fn assert_streams_safe(what: &str, out: &Output) {
    assert_terminal_safe(&format!("{what} stdout"), &text(&out.stdout), 700, FAKES);
    assert_terminal_safe(&format!("{what} stderr"), &text(&out.stderr), 700, FAKES);
}

/// An HTML report: nothing from the page became markup, in the file or in Chromium's DOM.
fn assert_html_inert(what: &str, path: &std::path::Path, shown_as_text: &str) {
    // The one link the report makes itself: a screenshot, by a file name pixelwatch built.
    let ours =
        regex::Regex::new(r#"<a class="shot" href="[a-z0-9./-]+\.png">screenshot</a>"#).unwrap();
    let html = std::fs::read_to_string(path).unwrap();
    let html = ours.replace_all(&html, "").into_owned();
    let lower = html.to_lowercase();
    for tag in ["<script", "<img", "<iframe", "<a ", "<link"] {
        assert!(!lower.contains(tag), "{what} contains {tag}");
    }
    let handler = regex::Regex::new(r"(?i)<[a-z][^>]*\son[a-z]+\s*=").unwrap();
    assert!(
        !handler.is_match(&html),
        "{what} has an event handler attribute"
    );
    assert!(
        !html.chars().any(|c| hidden(c) && c != '\n'),
        "{what}: raw control"
    );
    let dom = ours
        .replace_all(&dump_dom(path, 1280, 900), "")
        .to_lowercase();
    for tag in ["<script", "<img", "<iframe", "<a "] {
        assert!(!dom.contains(tag), "{what}: Chromium's DOM has {tag}");
    }
    assert!(
        dom.contains(shown_as_text),
        "{what}: {shown_as_text} is not shown as text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_site_cannot_subvert_any_output() {
    let v2 = Arc::new(AtomicBool::new(false));
    let server = FixtureServer::start(site(v2.clone())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    let db = path("h.db");
    let scan = scan_command("scan", SITE, &db, &server);

    // scan: terminal summary, JSON, HTML and HAR.
    let mut first = scan.clone();
    first.extend(s(&[
        "--json",
        &path("r.json"),
        "--html",
        &path("r.html"),
        "--har",
        &path("r.har"),
        "--screenshots",
        &path("shots"),
    ]));
    let out = run(&first).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_streams_safe("scan", &out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("phi_leak tiktok") && stdout.contains("\\x1b[2J"),
        "{stdout}"
    );

    let report: Value = serde_json::from_slice(&std::fs::read(path("r.json")).unwrap()).unwrap();
    let pages = report["pages"].as_array().unwrap();
    assert!(pages.len() >= 2);
    for p in pages {
        assert!(p["blocked_submissions"].is_array(), "{}", p["url"]);
        for r in p["requests"].as_array().unwrap() {
            assert!(r["redirect_chain"].is_array());
        }
    }
    for f in report["findings"].as_array().unwrap() {
        let e = f["evidence"].as_str().unwrap();
        assert!(
            e.chars().count() <= 500,
            "unbounded evidence: {} chars",
            e.len()
        );
    }
    let leak = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "vendors.toml:tiktok:event_name")
        .expect("the event name leak");
    let evidence = leak["evidence"].as_str().unwrap();
    assert!(
        evidence.chars().count() < 400,
        "evidence is an excerpt: {} chars",
        evidence.len()
    );
    assert_eq!(leak["matched"], "semaglutide");
    // Screenshots: one per page with a finding, named by pixelwatch, never by the page.
    let shots: Vec<String> = std::fs::read_dir(path("shots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let named: Vec<&str> = pages
        .iter()
        .filter_map(|p| p["screenshot"].as_str())
        .collect();
    assert_eq!(shots.len(), named.len(), "{shots:?} vs {named:?}");
    assert!(shots.len() >= 2, "every hostile page leaks: {shots:?}");
    for n in &shots {
        assert!(named.contains(&n.as_str()), "{n} is not in the report");
        assert!(
            n.ends_with(".png")
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c)),
            "{n:?}"
        );
    }
    assert_html_inert(
        "scan --html",
        std::path::Path::new(&path("r.html")),
        "\\x1b[2j",
    );

    // HAR: a strict HAR 1.2 model parses it; the beacon's body is there whole.
    let har = har::from_path(path("r.har")).expect("a valid HAR file");
    let har::Spec::V1_2(log) = har.log else {
        panic!("HAR 1.2")
    };
    let requests: usize = pages
        .iter()
        .map(|p| p["requests"].as_array().unwrap().len())
        .sum();
    assert_eq!(log.pages.as_ref().map(Vec::len), Some(pages.len()));
    assert_eq!(log.entries.len(), requests);
    for e in &log.entries {
        chrono::DateTime::parse_from_rfc3339(&e.started_date_time).expect("an ISO 8601 time");
        let pageref = e.pageref.as_deref().unwrap();
        assert!(log.pages.as_ref().unwrap().iter().any(|p| p.id == pageref));
    }
    let beacon = log
        .entries
        .iter()
        .find(|e| e.request.url == "https://analytics.tiktok.com/api/v2/pixel")
        .expect("the beacon");
    let body = beacon
        .request
        .post_data
        .as_ref()
        .unwrap()
        .text
        .as_deref()
        .unwrap();
    // JSON.stringify wrote the escape as \u001b.
    assert!(
        body.len() > 60_000 && body.contains("\\u001b[2J"),
        "{}",
        &body[..200]
    );
    assert_eq!(
        beacon.request.post_data.as_ref().unwrap().mime_type,
        "application/json"
    );

    // History commands.
    let out = run(&s(&["scans", "list", "--db", &db])).await;
    assert_eq!(out.status.code(), Some(0));
    assert_streams_safe("scans list", &out);
    let out = run(&s(&["scans", "show", "1", "--db", &db])).await;
    assert_eq!(out.status.code(), Some(0));
    assert_streams_safe("scans show", &out);
    let out = run(&s(&["scans", "show", "1", "--json", "--db", &db])).await;
    serde_json::from_slice::<Value>(&out.stdout).expect("scans show --json is JSON");
    let out = run(&s(&["baseline", "approve", "--site", SITE, "--db", &db])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&s(&["baseline", "export", &path("base.json"), "--db", &db])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_streams_safe("baseline export", &out);

    // The site changes; check fails with the CI outputs.
    v2.store(true, Ordering::SeqCst);
    // The default rules in a file: the TikTok leak (with its hostile evidence) is a violation too.
    std::fs::write(path("p.toml"), "[deny]\nmin_severity = \"medium\"\n").unwrap();
    let mut check = scan.clone();
    check[0] = "check".into();
    check.extend(s(&[
        "--policy",
        &path("p.toml"),
        "--baseline",
        &path("base.json"),
        "--sarif",
        &path("c.sarif"),
        "--junit",
        &path("c.xml"),
        "--markdown",
        &path("c.md"),
    ]));
    let out = run(&check).await;
    assert_exit(&out, 2);
    assert_streams_safe("check", &out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("and ") && stdout.contains("more"),
        "drift is bounded: {stdout}"
    );

    // JUnit: well-formed XML whatever the page wrote.
    let junit = std::fs::read_to_string(path("c.xml")).unwrap();
    let doc = roxmltree::Document::parse(&junit).expect("well-formed JUnit XML");
    for n in doc.descendants() {
        for t in n
            .text()
            .into_iter()
            .chain(n.attributes().map(|a| a.value()))
        {
            assert_terminal_safe("JUnit text", t, 2000, FAKES);
        }
    }
    assert!(
        junit.contains("&lt;!channel&gt;") || junit.contains("evil"),
        "{junit}"
    );

    // SARIF: schema-valid, accepted by GitHub's rules, messages free of controls.
    assert_sarif_schema_valid(std::path::Path::new(&path("c.sarif")));
    let sarif: Value = serde_json::from_slice(&std::fs::read(path("c.sarif")).unwrap()).unwrap();
    assert_github_accepts(&sarif);

    // Markdown, rendered as GitHub renders it: nothing from the page left its code span.
    let md = std::fs::read_to_string(path("c.md")).unwrap();
    assert!(md.len() < 65_536, "fits a PR comment: {} bytes", md.len());
    let html = render_markdown(&md);
    assert_eq!(html.matches("<h1").count(), 0, "{html}");
    assert_eq!(html.matches("<h2").count(), 1, "{html}");
    assert_eq!(html.matches("<h3").count(), 1, "{html}");
    for tag in ["<a ", "<img", "<script"] {
        assert!(!html.contains(tag), "rendered Markdown has {tag}:\n{html}");
    }
    let prose = outside_code(&html);
    for injected in ["evil.test", "@everyone", "Injected", "channel"] {
        assert!(
            !prose.contains(injected),
            "{injected} outside code:\n{prose}"
        );
    }
    for row in html.split("<tr>").skip(1) {
        let cells = row.matches("<td").count() + row.matches("<th").count();
        assert_eq!(cells, 4, "a table row with {cells} cells:\n{row}");
    }

    // check -q: only the verdict line.
    let mut quiet = check.clone();
    quiet.push("--quiet".into());
    let out = run(&quiet).await;
    assert_eq!(out.status.code(), Some(2));
    let q = text(&out.stdout);
    assert_eq!(q.lines().count(), 1, "{q}");
    assert!(q.starts_with("check FAILED: "), "{q}");

    // diff: terminal, JSON and HTML.
    let out = run(&s(&[
        "diff",
        "--db",
        &db,
        "--json",
        &path("d.json"),
        "--html",
        &path("d.html"),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_streams_safe("diff", &out);
    let d: Value = serde_json::from_slice(&std::fs::read(path("d.json")).unwrap()).unwrap();
    assert!(d["added"].as_array().unwrap().len() >= 30);
    assert_html_inert(
        "diff --html",
        std::path::Path::new(&path("d.html")),
        "&lt;img src=x onerror=alert(1)&gt;",
    );

    // Alerts: a real SMTP server and a Slack-compatible webhook.
    let sink = SmtpSink::start().await;
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let b = bodies.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| async move {
            b.lock().unwrap().push(v);
            axum::http::StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = pixelwatch::config::Config::parse(
        &format!(
            "{}[webhook]\nurl = \"http://127.0.0.1:{port}/hook\"\n",
            sink.email_toml()
        ),
        "a.toml",
    )
    .unwrap();
    let alerter = pixelwatch::alert::Alerter::from_config(&config).unwrap();
    let store = pixelwatch::store::Store::open(std::path::Path::new(&db))
        .await
        .unwrap();
    let latest = store.latest_scan_id(None, None).await.unwrap();
    let after = store.load_scan(latest).await.unwrap();
    let baseline = store.baseline(SITE).await.unwrap();
    let drift = pixelwatch::diff::diff(&baseline, &after);
    let sent = alerter
        .on_drift(&store, &drift, &after, Some(&baseline))
        .await
        .unwrap();
    assert!(
        matches!(sent, pixelwatch::alert::DriftAlert::Sent(ref o) if o.iter().all(|o| o.error.is_none())),
        "{sent:?}"
    );

    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].data.len() < 64 * 1024,
        "a bounded email: {} bytes",
        msgs[0].data.len()
    );
    let mail = parse(&msgs[0].data);
    let mail_text = mail.text.as_deref().unwrap();
    assert_terminal_safe("email text", mail_text, 700, FAKES);
    assert!(
        mail_text.contains("and 20 more"),
        "at most 10 storage keys listed:\n{mail_text}"
    );
    let mail_html = mail.html.as_deref().unwrap().to_lowercase();
    assert!(
        !mail_html.contains("<img") && !mail_html.contains("<script"),
        "{mail_html}"
    );
    assert!(mail_html.contains("&lt;!channel&gt;"));

    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    let slack = bodies[0]["text"].as_str().unwrap();
    assert!(
        !slack.contains('<') && !slack.contains('>'),
        "Slack text has markup:\n{slack}"
    );
    assert!(slack.contains("&lt;!channel&gt;"), "{slack}");
    assert_terminal_safe("webhook text", slack, 700, FAKES);
    assert!(serde_json::to_vec(&bodies[0]).unwrap().len() < 64 * 1024);
}
