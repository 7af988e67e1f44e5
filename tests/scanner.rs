//! The scanner against fixture sites in real headless Chromium. The fixture server plays the
//! clinic and the real tracker host names; its own request log is the ground truth.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pixelwatch::fixture::{Body, FixtureServer, Response, Site};
use pixelwatch::model::ScanReport;
use pixelwatch::scan::{self, ScanOptions, Silent};

const CLINIC: &str = "www.clinic.test";
const OTHER: &str = "www.other-site.test";
const WIDGET: &str = "booking.widget-example.test";

fn html(body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>t</title></head><body>{body}</body></html>"
    )
}

fn clinic_site() -> Site {
    let c = CLINIC;
    Site::new()
        .route(
            c,
            "/",
            Response::html(html(r#"
                <a href="/about">About</a>
                <a href="/old-about">Old about</a>
                <a href="/spa">App</a>
                <a href="/iframe-page">Book</a>
                <a href="/post-page">Post</a>
                <a href="https://www.other-site.test/offsite">Partner</a>
                <div id="js"></div>
                <script>
                  document.cookie = '_fp_script=1; path=/';
                  sessionStorage.setItem('fp_session_key', 'v');
                  setTimeout(() => {
                    const a = document.createElement('a');
                    a.href = '/js-only'; a.textContent = 'JS link';
                    document.getElementById('js').appendChild(a);
                  }, 50);
                </script>"#))
            .header("set-cookie", "fp_session=1; Path=/; HttpOnly"),
        )
        .page(c, "/about", &html("<h1>About</h1>"))
        .route(c, "/old-about", Response::redirect("/about"))
        .page(c, "/js-only", &html("<h1>Only reachable through a link inserted by script</h1>"))
        .page(c, "/sitemap-only", &html("<h1>Only in the sitemap</h1>"))
        .page(
            c,
            "/spa",
            &html("<script>setTimeout(() => history.pushState({}, '', '/spa/step-2'), 30);</script>"),
        )
        .page(c, "/spa/step-2", &html("<h1>Step 2</h1>"))
        .page(
            c,
            "/iframe-page",
            &html(&format!(r#"<iframe src="https://{WIDGET}/embed"></iframe>"#)),
        )
        .page(
            c,
            "/post-page",
            &html(r#"<script>
                fetch('https://www.facebook.com/tr/', {method: 'POST', mode: 'no-cors', body: 'ev=Lead&marker=postbody123'});
                const w = new Worker('/worker.js');
                new Image().src = 'https://www.facebook.com/tr?ev=PageView&marker=img';
            </script>"#),
        )
        .route(
            c,
            "/worker.js",
            Response::js("fetch('https://analytics.tiktok.com/api/v2/worker-beacon?marker=worker', {mode: 'no-cors'});"),
        )
        .route(
            c,
            "/robots.txt",
            Response::ok(
                "text/plain",
                format!("User-agent: *\nSitemap: https://{c}/sitemap_index.xml\n"),
            ),
        )
        .route(
            c,
            "/sitemap_index.xml",
            Response::ok(
                "application/xml",
                format!(r#"<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>https://{c}/sitemap-pages.xml</loc></sitemap></sitemapindex>"#),
            ),
        )
        .route(
            c,
            "/sitemap-pages.xml",
            Response::ok(
                "application/xml",
                format!(r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>https://{c}/sitemap-only</loc></url></urlset>"#),
            ),
        )
        .route(
            WIDGET,
            "/embed",
            Response::html(html(r#"<script>
                localStorage.setItem('widget_key', 'x');
                navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', JSON.stringify({event: 'iframe-beacon'}));
            </script>"#))
            .header("set-cookie", "widget_sid=abc; Path=/; Secure; SameSite=None; Max-Age=3600"),
        )
        .route(
            "analytics.tiktok.com",
            "/api/v2/pixel",
            Response::ok("application/json", "{}")
                .header("access-control-allow-origin", "*"),
        )
        .handler("analytics.tiktok.com", "/api/v2/worker-beacon", |_| {
            Response::status(204)
        })
        .handler("www.facebook.com", "/tr", |_| Response::ok("image/gif", pixelwatch::demo::GIF.to_vec()))
        .page(OTHER, "/offsite", &html("<h1>never crawled</h1>"))
}

fn options(server: &FixtureServer, start: &str) -> ScanOptions {
    ScanOptions {
        start: start.to_string(),
        max_pages: 40,
        concurrency: 3,
        page_timeout: Duration::from_secs(6),
        settle_quiet: Duration::from_millis(300),
        settle_max: Duration::from_secs(2),
        browser_args: server.browser_args(),
        ..Default::default()
    }
}

fn init_logs() {
    let filter = std::env::var("PIXELWATCH_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// One browser scan at a time in this binary: parallel Chromiums on 2 cores only add noise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn scan(opts: &ScanOptions) -> ScanReport {
    init_logs();
    let _turn = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(Duration::from_secs(240), scan::run(opts, Arc::new(Silent)))
        .await
        .expect("a scan must end in bounded time")
        .expect("scan runs")
}

fn page<'a>(r: &'a ScanReport, url: &str) -> &'a pixelwatch::model::Page {
    r.pages
        .iter()
        .find(|p| p.url == url)
        .unwrap_or_else(|| panic!("page {url} not visited; got {:?}", urls(r)))
}

fn urls(r: &ScanReport) -> BTreeSet<String> {
    r.pages.iter().map(|p| p.url.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_every_page_and_records_what_the_server_saw() {
    let server = FixtureServer::start(clinic_site()).await.unwrap();
    let report = scan(&options(&server, &format!("https://{CLINIC}/"))).await;
    let got = urls(&report);

    // Discovery: sitemap index -> sitemap, JS-inserted link, pushState route, redirect.
    for path in [
        "/",
        "/about",
        "/old-about",
        "/js-only",
        "/sitemap-only",
        "/spa",
        "/spa/step-2",
        "/iframe-page",
        "/post-page",
    ] {
        assert!(
            got.contains(&format!("https://{CLINIC}{path}")),
            "{path} missing from {got:?}"
        );
    }
    assert_eq!(
        page(&report, &format!("https://{CLINIC}/sitemap-only")).found_via,
        "sitemap"
    );
    assert_eq!(
        page(&report, &format!("https://{CLINIC}/spa/step-2")).found_via,
        "pushstate"
    );
    assert!(
        page(&report, &format!("https://{CLINIC}/old-about"))
            .requests
            .iter()
            .any(|r| r.status == Some(302))
    );
    // Off-site links are recorded, never crawled: the other site saw no request at all.
    assert!(
        report
            .external_links
            .contains(&format!("https://{OTHER}/offsite"))
    );
    assert!(!got.iter().any(|u| u.contains(OTHER)));
    let log = server.requests();
    assert!(
        !log.iter().any(|r| r.host == OTHER),
        "the scanner contacted an off-site host"
    );
    assert_eq!(
        report.summary.cdp_decode_failures, 0,
        "CDP messages failed to decode"
    );
    assert_eq!(
        report.summary.pages_errored,
        0,
        "{:#?}",
        report
            .pages
            .iter()
            .filter(|p| p.error.is_some())
            .collect::<Vec<_>>()
    );

    // Iframe beacon with its POST body, attributed to the iframe.
    let iframe_page = page(&report, &format!("https://{CLINIC}/iframe-page"));
    let beacon = iframe_page
        .requests
        .iter()
        .find(|r| r.url == "https://analytics.tiktok.com/api/v2/pixel")
        .expect("iframe beacon captured");
    assert_eq!(beacon.method, "POST");
    assert!(
        beacon
            .post_data
            .as_deref()
            .unwrap_or_default()
            .contains("iframe-beacon")
    );
    assert!(beacon.third_party);
    assert_eq!(beacon.vendor.as_deref(), Some("tiktok"));
    assert!(
        iframe_page
            .frames
            .iter()
            .any(|f| f.url == format!("https://{WIDGET}/embed") && f.third_party)
    );
    // Iframe storage, under the widget's origin.
    assert!(
        iframe_page.storage.iter().any(|s| s.key == "widget_key"
            && s.kind == "local"
            && s.origin == format!("https://{WIDGET}")
            && s.third_party),
        "{:?}",
        iframe_page.storage
    );

    // fetch POST body, image beacon and a dedicated worker's request.
    let post_page = page(&report, &format!("https://{CLINIC}/post-page"));
    let post = post_page
        .requests
        .iter()
        .find(|r| r.method == "POST" && r.host == "www.facebook.com")
        .expect("fetch POST");
    assert_eq!(
        post.post_data.as_deref(),
        Some("ev=Lead&marker=postbody123")
    );
    assert!(
        post_page
            .requests
            .iter()
            .any(|r| r.url.contains("marker=img") && r.resource_type == "Image")
    );
    let worker = post_page
        .requests
        .iter()
        .find(|r| r.url.contains("marker=worker"))
        .expect("worker request");
    assert_eq!(worker.target, "worker");

    // Cookies: first-party by header and by script, third-party from the iframe.
    let cookie = |name: &str| {
        report
            .cookies
            .iter()
            .find(|c| c.cookie.name == name)
            .unwrap_or_else(|| panic!("cookie {name} missing: {:?}", report.cookies))
    };
    let fp = cookie("fp_session");
    assert_eq!(
        (
            fp.cookie.set_by.as_str(),
            fp.cookie.third_party,
            fp.cookie.http_only
        ),
        ("http", false, true)
    );
    assert_eq!(fp.first_seen_page, format!("https://{CLINIC}/"));
    let script = cookie("_fp_script");
    assert_eq!(
        (script.cookie.set_by.as_str(), script.cookie.third_party),
        ("script", false)
    );
    let widget = cookie("widget_sid");
    assert_eq!(
        (widget.cookie.set_by.as_str(), widget.cookie.third_party),
        ("http", true)
    );
    assert_eq!(
        widget.first_seen_page,
        format!("https://{CLINIC}/iframe-page")
    );
    let home = page(&report, &format!("https://{CLINIC}/"));
    assert!(
        home.storage
            .iter()
            .any(|s| s.key == "fp_session_key" && s.kind == "session")
    );

    // Cross-check: every request the server received while pages were open is in the report.
    let recorded: BTreeSet<String> = report
        .pages
        .iter()
        .flat_map(|p| p.requests.iter().map(|r| r.url.clone()))
        .collect();
    let housekeeping = [
        "/robots.txt",
        "/sitemap_index.xml",
        "/sitemap-pages.xml",
        "/sitemap.xml",
        "/favicon.ico",
    ];
    let missed: Vec<String> = log
        .iter()
        .filter(|r| !housekeeping.contains(&r.target.as_str()))
        .map(|r| r.url())
        .filter(|u| !recorded.contains(u))
        .collect();
    assert!(
        missed.is_empty(),
        "requests the server saw but the scanner did not record: {missed:?}"
    );
    // ...and nothing recorded as completed that the server never saw.
    let served: BTreeSet<String> = log.iter().map(|r| r.url()).collect();
    for p in &report.pages {
        for r in &p.requests {
            if r.status.is_some() {
                assert!(
                    served.contains(&r.url),
                    "recorded {} with a status but the server never saw it",
                    r.url
                );
            }
        }
    }
}

fn hostile_site() -> Site {
    let c = CLINIC;
    // 5 MB in one line of text: big to transfer and parse. (100k separate paragraphs take
    // Chromium itself ~8 s to lay out here, which would test Chromium, not the scanner.)
    let five_mb = format!("<p>{}</p>", "patient education text ".repeat(230_000));
    Site::new()
        .page(
            c,
            "/",
            &html(r#"<a href="/loop-a">loop</a> <a href="/never">never</a> <a href="/hang">hang</a>
                <a href="/dialog">dialog</a> <a href="/big">big</a>
                <a href="/calendar/2031/1">calendar</a> <a href="/popup">popup</a>
                <a href="/after">after</a> <a href="/download-report">report</a>
                <a href="/self-close">self-close</a>"#),
        )
        .route(c, "/loop-a", Response::redirect("/loop-b"))
        .route(c, "/loop-b", Response::redirect("/loop-a"))
        .route(
            c,
            "/never",
            Response {
                status: 200,
                headers: vec![("content-type".into(), "text/html".into())],
                body: Body::Stall(b"<html><body><h1>Loading forever".to_vec()),
                delay: None,
            },
        )
        .route(c, "/hang", Response { status: 200, headers: vec![], body: Body::Hang, delay: None })
        .page(
            c,
            "/dialog",
            &html(r#"<script>
                alert('hello'); confirm('sure?'); prompt('name?');
                window.addEventListener('beforeunload', e => { e.preventDefault(); e.returnValue = ''; });
                new Image().src = '/after-dialog.gif';
            </script>"#),
        )
        .route(c, "/after-dialog.gif", Response::ok("image/gif", pixelwatch::demo::GIF.to_vec()))
        .page(c, "/big", &html(&five_mb))
        .handler(c, "/calendar/", |req| {
            let month: u32 = req.target.rsplit('/').next().and_then(|m| m.parse().ok()).unwrap_or(1);
            Response::html(html(&format!(
                r#"<a href="/calendar/2031/{}">next month</a>"#,
                month + 1
            )))
        })
        .page(
            c,
            "/popup",
            &html("<script>window.open('https://www.clinic.test/after', '_blank');</script>"),
        )
        .page(c, "/after", &html("<h1>Still scanning</h1>"))
        .page(c, "/self-close", &html("<script>window.close();</script>"))
        .route(
            c,
            "/download-report",
            Response::ok("application/pdf", b"%PDF-1.4 fake".to_vec())
                .header("content-disposition", "attachment; filename=report.pdf"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pages_end_in_bounded_time_with_errors_recorded() {
    let server = FixtureServer::start(hostile_site()).await.unwrap();
    let mut opts = options(&server, &format!("https://{CLINIC}/"));
    opts.page_timeout = Duration::from_secs(10);
    opts.max_per_pattern = 5;
    opts.max_depth = 10;
    opts.concurrency = 2;
    // A small JS heap turns the memory hog into a quick renderer crash.
    opts.browser_args
        .push("--js-flags=--max-old-space-size=32".into());
    let started = Instant::now();
    let report = scan(&opts).await;
    let took = started.elapsed();
    println!("hostile scan took {took:?}");
    let err = |path: &str| {
        page(&report, &format!("https://{CLINIC}{path}"))
            .error
            .clone()
            .unwrap_or_default()
    };

    assert!(
        err("/loop-a").contains("ERR_TOO_MANY_REDIRECTS"),
        "{}",
        err("/loop-a")
    );
    assert!(
        err("/never").contains("did not finish loading"),
        "{}",
        err("/never")
    );
    assert!(
        !err("/hang").is_empty(),
        "a page with no response must be errored"
    );
    // Dialogs were dismissed: the page finished and ran the code after them.
    let dialog = page(&report, &format!("https://{CLINIC}/dialog"));
    assert_eq!(dialog.error, None);
    assert!(
        dialog
            .requests
            .iter()
            .any(|r| r.url.ends_with("/after-dialog.gif"))
    );
    // A 5 MB page loads.
    let big = page(&report, &format!("https://{CLINIC}/big"));
    assert_eq!((big.error.as_deref(), big.status), (None, Some(200)));
    // The infinite calendar is cut by the trap guard.
    let calendar = report
        .pages
        .iter()
        .filter(|p| p.url.contains("/calendar/"))
        .count();
    assert_eq!(calendar, 5, "calendar pages visited");
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.reason.contains("trap guard"))
    );
    // The scan went on after the crash and the popup.
    assert_eq!(
        page(&report, &format!("https://{CLINIC}/after")).error,
        None
    );
    assert_eq!(
        page(&report, &format!("https://{CLINIC}/popup")).error,
        None
    );
    assert_eq!(report.summary.cdp_decode_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_crash_restarts_the_browser_and_the_scan_goes_on() {
    let c = CLINIC;
    let mut site = Site::new().page(
        c,
        "/",
        &html(
            &(1..=8)
                .map(|i| format!(r#"<a href="/p{i}">p{i}</a>"#))
                .collect::<String>(),
        ),
    );
    for i in 1..=8 {
        site = site.route(
            c,
            &format!("/p{i}"),
            Response::html(html("<h1>slow page</h1>")).delayed(Duration::from_millis(400)),
        );
    }
    let server = FixtureServer::start(site).await.unwrap();
    let mut opts = options(&server, &format!("https://{c}/"));
    opts.concurrency = 1;
    opts.sitemaps = false;
    // Kill the browser once, when the third page starts.
    let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hook: scan::PidHook = {
        let starts = starts.clone();
        Arc::new(move |pid| {
            if starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(150));
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                });
            }
        })
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        scan::run_with_hook(&opts, Arc::new(Silent), Some(hook)),
    )
    .await
    .expect("bounded")
    .expect("scan runs");
    assert_eq!(report.summary.browser_restarts, 1);
    assert_eq!(report.pages.len(), 9);
    let errored: Vec<_> = report.pages.iter().filter(|p| p.error.is_some()).collect();
    assert_eq!(errored.len(), 1, "{errored:#?}");
    assert!(
        errored[0]
            .error
            .as_deref()
            .unwrap()
            .contains("browser crashed")
    );
    let ok = report.pages.iter().filter(|p| p.error.is_none()).count();
    assert_eq!(ok, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renderer_crash_replaces_the_tab_and_the_scan_goes_on() {
    let c = CLINIC;
    let site = Site::new()
        .page(c, "/", &html(r#"<a href="/crash">crash</a> <a href="/after-crash">after</a>"#))
        .page(
            c,
            "/crash",
            &html("<script>const hog = []; for (;;) { hog.push(new Array(1e6).fill(Math.random())); }</script>"),
        )
        .page(c, "/after-crash", &html("<h1>Still scanning</h1>"));
    let server = FixtureServer::start(site).await.unwrap();
    let mut opts = options(&server, &format!("https://{c}/"));
    opts.concurrency = 1;
    opts.sitemaps = false;
    // A small JS heap turns the memory hog into a quick renderer crash.
    opts.browser_args
        .push("--js-flags=--max-old-space-size=32".into());
    let report = scan(&opts).await;
    let crash = page(&report, &format!("https://{c}/crash"));
    assert!(
        crash
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("renderer crashed"),
        "{:?}",
        crash.error
    );
    assert_eq!(
        page(&report, &format!("https://{c}/after-crash")).error,
        None
    );
    assert_eq!(report.summary.browser_restarts, 0);
    assert_eq!(report.summary.cdp_decode_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scan_reports_its_planted_pixels_and_leaks() {
    let server = pixelwatch::demo::serve().await.unwrap();
    let report = scan(&pixelwatch::demo::scan_options(&server)).await;
    assert_eq!(report.pages.len(), 7, "{:?}", urls(&report));
    assert_eq!(report.summary.pages_errored, 0);
    let has = |kind: &str, vendor: &str, page: &str, needle: &str| {
        report.findings.iter().any(|f| {
            f.kind == kind
                && f.vendor.as_deref() == Some(vendor)
                && f.page == format!("https://www.demo-clinic.test{page}")
                && f.evidence.contains(needle)
        })
    };
    for page in ["/", "/about", "/services/semaglutide-weight-loss/book"] {
        assert!(has("tracker", "tiktok", page, "TikTok Pixel"), "{page}");
        assert!(has("tracker", "meta", page, "Meta Pixel"), "{page}");
    }
    let book = "/services/semaglutide-weight-loss/book";
    assert!(has(
        "phi_leak",
        "tiktok",
        book,
        "event name 'BookedGLP1Consultation'"
    ));
    assert!(has(
        "phi_leak",
        "meta",
        book,
        "event name 'BookedGLP1Consultation'"
    ));
    assert!(has(
        "phi_leak",
        "tiktok",
        book,
        "'context.page.url' carries a health-revealing URL"
    ));
    assert!(has(
        "phi_leak",
        "meta",
        "/services/semaglutide-weight-loss",
        "query field 'dl'"
    ));
    // Not health-revealing: no leak findings on /about.
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.kind == "phi_leak" && f.page.ends_with("/about"))
    );
    let critical = report
        .findings
        .iter()
        .filter(|f| f.severity == pixelwatch::model::Severity::Critical && f.kind == "phi_leak")
        .count();
    assert!(critical >= 4, "{critical}");
}
