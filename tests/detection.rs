//! Leak detection end to end in real Chromium: each planted leak is reported with the right
//! vendor, page and evidence; a clean site has no critical or high findings; the form probe
//! never lets a first-party submission reach the site.

use std::sync::Arc;
use std::time::Duration;

use pixelwatch::fixture::{FixtureServer, Response, Site};
use pixelwatch::model::{ScanReport, Severity};
use pixelwatch::rules::consent::ConsentMode;
use pixelwatch::scan::{self, ScanOptions, Silent};

const C: &str = "www.clinic.test";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn html(body: &str) -> String {
    format!("<!doctype html><html><head><meta charset=utf-8></head><body>{body}</body></html>")
}

/// A Meta-like pixel: PageView with the page URL, and on form submit "advanced matching" of the
/// typed email (sha256 of trimmed lowercase), as fbevents.js does.
const META_JS: &str = r#"
window.fbq = function (cmd, ev) {
  if (cmd !== 'track') return;
  new Image().src = 'https://www.facebook.com/tr?id=1&ev=' + ev + '&dl=' + encodeURIComponent(location.href);
};
document.addEventListener('submit', async (e) => {
  const email = e.target.querySelector('input[type=email]');
  if (!email) return;
  const bytes = new TextEncoder().encode(email.value.trim().toLowerCase());
  const hash = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))).map(b => b.toString(16).padStart(2, '0')).join('');
  new Image().src = 'https://www.facebook.com/tr?id=1&ev=Lead&ud[em]=' + hash;
}, true);
fbq('track', 'PageView');
"#;

fn leaky_site() -> Site {
    Site::new()
        .page(
            C,
            "/",
            &html(r#"<a href="/conditions/diabetes/book">Book</a> <a href="/intake">Intake</a>
                <a href="/widget-page">Widget</a> <a href="/gtm-page">GTM</a>"#),
        )
        // The pixel sends the page URL; the page names a condition.
        .page(
            C,
            "/conditions/diabetes/book",
            &html(r#"<script src="https://connect.facebook.net/en_US/fbevents.js"></script>
                <script>
                  navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', JSON.stringify({event: 'BookedDiabetesVisit', context: {page: {url: location.href}}}));
                  fetch('https://bat.bing.com/action/0?evt=pageLoad', {mode: 'no-cors', referrerPolicy: 'unsafe-url'});
                </script>"#),
        )
        // A form the probe types into: the email is hashed by the pixel; the free text goes out plain.
        .page(
            C,
            "/intake",
            &html(r#"<script src="https://connect.facebook.net/en_US/fbevents.js"></script>
                <form action="/submit-intake" method="post">
                  <input type="email" name="email"> <input type="tel" name="phone">
                  <textarea name="reason" id="reason"></textarea>
                  <button>Send</button>
                </form>
                <script src="https://static.hotjar.com/c/hotjar-1.js"></script>
                <script>
                  document.getElementById('reason').addEventListener('change', (e) =>
                    navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', JSON.stringify({event: 'SubmitForm', properties: {note: e.target.value}})));
                </script>"#),
        )
        // A third-party booking iframe that carries its own pixel.
        .page(C, "/widget-page", &html(r#"<iframe src="https://booking.widget-example.test/embed"></iframe>"#))
        .page(
            "booking.widget-example.test",
            "/embed",
            &html(r#"<script>navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', JSON.stringify({event: 'Pageview'}));</script>"#),
        )
        // Google Tag Manager injecting a pixel late.
        .page(
            C,
            "/gtm-page",
            &html(r#"<script src="https://www.googletagmanager.com/gtm.js?id=GTM-TEST"></script>
                <img src="https://px.unknown-tracker.test/collect?site=clinic">"#),
        )
        .handler("px.unknown-tracker.test", "/collect", |_| Response::ok("image/gif", pixelwatch::demo::GIF.to_vec()))
        .route(
            "www.googletagmanager.com",
            "/gtm.js",
            Response::js("setTimeout(() => { const s = document.createElement('script'); s.src = 'https://connect.facebook.net/en_US/fbevents.js'; document.head.appendChild(s); }, 400);"),
        )
        .route("connect.facebook.net", "/en_US/fbevents.js", Response::js(META_JS))
        .handler("www.facebook.com", "/tr", |_| Response::ok("image/gif", pixelwatch::demo::GIF.to_vec()))
        .route("analytics.tiktok.com", "/api/v2/pixel", Response::status(204))
        .handler("bat.bing.com", "/action", |_| Response::status(204))
        .route("static.hotjar.com", "/c/hotjar-1.js", Response::js("window.hj = 1;"))
        .route(C, "/submit-intake", Response::html("<h1>thanks</h1>"))
}

fn options(server: &FixtureServer) -> ScanOptions {
    ScanOptions {
        start: format!("https://{C}/"),
        max_pages: 20,
        concurrency: 2,
        page_timeout: Duration::from_secs(10),
        settle_quiet: Duration::from_millis(500),
        settle_max: Duration::from_secs(3),
        sitemaps: false,
        browser_args: server.browser_args(),
        ..Default::default()
    }
}

async fn scan(opts: &ScanOptions) -> ScanReport {
    let _turn = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(Duration::from_secs(180), scan::run(opts, Arc::new(Silent)))
        .await
        .expect("bounded")
        .expect("scan runs")
}

fn find<'a>(
    r: &'a ScanReport,
    kind: &str,
    vendor: &str,
    page: &str,
    needle: &str,
) -> &'a pixelwatch::model::Finding {
    r.findings
        .iter()
        .find(|f| {
            f.kind == kind
                && f.vendor.as_deref() == Some(vendor)
                && f.page == format!("https://{C}{page}")
                && f.evidence.contains(needle)
        })
        .unwrap_or_else(|| {
            let all: Vec<String> = r
                .findings
                .iter()
                .map(|f| format!("{} {:?} {} {}", f.kind, f.vendor, f.page, f.evidence))
                .collect();
            panic!(
                "no {kind} finding for {vendor} on {page} containing '{needle}'; findings:\n{}",
                all.join("\n")
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_planted_leak_is_reported_with_vendor_page_and_evidence() {
    let server = FixtureServer::start(leaky_site()).await.unwrap();
    // A user-supplied filter list catches a tracker the bundled rules do not know.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("my-easyprivacy.txt");
    std::fs::write(&list, "! Title: sample\n||px.unknown-tracker.test^$image\n").unwrap();
    let mut opts = options(&server);
    opts.filter_lists = vec![list];
    let report = scan(&opts).await;
    assert_eq!(report.summary.pages_errored, 0);

    let book = "/conditions/diabetes/book";
    // Pixel URL leak (Meta dl), descriptive event name (TikTok), Referer leak (Bing, unsafe-url).
    let f = find(&report, "phi_leak", "meta", book, "query field 'dl'");
    assert!(
        f.evidence.contains("diabetes") && f.severity == Severity::Critical,
        "{f:?}"
    );
    find(
        &report,
        "phi_leak",
        "tiktok",
        book,
        "event name 'BookedDiabetesVisit'",
    );
    find(&report, "phi_leak", "tiktok", book, "context.page.url");
    find(&report, "phi_leak", "microsoft-uet", book, "Referer header");

    // Canary typed into the form: hashed email caught, plain free text caught.
    let email = find(
        &report,
        "phi_leak",
        "meta",
        "/intake",
        "the email typed into a form",
    );
    assert!(
        email.evidence.contains("sha256-hashed"),
        "{}",
        email.evidence
    );
    assert_eq!(email.rule, "probe:email");
    let text = find(
        &report,
        "phi_leak",
        "tiktok",
        "/intake",
        "the text typed into a form",
    );
    assert!(text.evidence.contains("as typed"), "{}", text.evidence);
    // Session replay on a page with a form.
    find(&report, "session_replay", "hotjar", "/intake", "form");

    // A pixel inside a third-party booking iframe.
    find(
        &report,
        "third_party_frame",
        "tiktok",
        "/widget-page",
        "booking.widget-example.test",
    );
    // GTM injecting Meta late: the late pixel is still seen on that page.
    find(&report, "tracker", "meta", "/gtm-page", "Meta Pixel");
    find(
        &report,
        "tracker",
        "google-tag-manager",
        "/gtm-page",
        "Google Tag Manager",
    );

    let unknown = report
        .findings
        .iter()
        .find(|f| f.rule == "my-easyprivacy.txt:2")
        .expect("filter-list finding");
    assert!(
        unknown.evidence.contains("px.unknown-tracker.test") && unknown.page.ends_with("/gtm-page"),
        "{unknown:?}"
    );

    // No consent mode: everything fired before consent.
    find(
        &report,
        "no_consent",
        "meta",
        book,
        "before any consent interaction",
    );

    // The probe held the site's own submission back: it never reached the server.
    let intake = report
        .pages
        .iter()
        .find(|p| p.url.ends_with("/intake"))
        .unwrap();
    assert_eq!(intake.probed_fields, 3);
    // Every request carrying a typed value was stopped, the site's own submission included:
    // the leaks above were found in what the browser recorded, not in what left it.
    let blocked = &intake.blocked_submissions;
    assert_eq!(blocked.len(), 3, "{blocked:?}");
    for expected in [
        "GET https://www.facebook.com/tr?id=1&ev=Lead&ud[em]=".to_string(),
        "POST https://analytics.tiktok.com/api/v2/pixel (carries a typed canary value)".into(),
        format!("POST https://{C}/submit-intake (carries a typed canary value)"),
    ] {
        assert!(
            blocked.iter().any(|b| b.starts_with(&expected)),
            "{expected} not held back: {blocked:?}"
        );
    }
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.target.starts_with("/submit-intake")),
        "a probe submission reached the site"
    );
    let leaked = server.canaries_received(&report.canaries);
    assert!(
        leaked.is_empty(),
        "typed values left the browser: {leaked:?}"
    );
    assert_eq!(report.summary.cdp_decode_failures, 0);
}

fn consent_site(broken: bool) -> Site {
    // A OneTrust-like banner. The correct site loads the pixel only after "accept"; the broken
    // one loads it at once.
    let pixel = r#"const s = document.createElement('script'); s.src = 'https://connect.facebook.net/en_US/fbevents.js'; document.head.appendChild(s);"#;
    let page = format!(
        r#"<div id="onetrust-banner-sdk"><button id="onetrust-accept-btn-handler">Accept All</button>
           <button id="onetrust-reject-all-handler">Reject All</button></div>
           <a href="/second">Second</a>
           <script>
             function load() {{ {pixel} }}
             if (document.cookie.includes('consent=yes')) load();
             {broken_load}
             document.getElementById('onetrust-accept-btn-handler').onclick = () => {{
               document.cookie = 'consent=yes; path=/'; document.getElementById('onetrust-banner-sdk').remove(); load(); }};
             document.getElementById('onetrust-reject-all-handler').onclick = () => {{
               document.cookie = 'consent=no; path=/'; document.getElementById('onetrust-banner-sdk').remove(); }};
           </script>"#,
        broken_load = if broken { "load();" } else { "" }
    );
    Site::new()
        .page(C, "/", &html(&page))
        .page(C, "/second", &html(&page))
        .route(
            "connect.facebook.net",
            "/en_US/fbevents.js",
            Response::js(META_JS),
        )
        .handler("www.facebook.com", "/tr", |_| {
            Response::ok("image/gif", pixelwatch::demo::GIF.to_vec())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_banners_accept_and_reject() {
    // Correct banner, accept: the pixel fires only after consent, so no no_consent finding.
    let server = FixtureServer::start(consent_site(false)).await.unwrap();
    let mut opts = options(&server);
    opts.consent = ConsentMode::Accept;
    opts.concurrency = 1;
    let report = scan(&opts).await;
    assert_eq!(report.consent_mode, "accept");
    let home = report
        .pages
        .iter()
        .find(|p| p.url == format!("https://{C}/"))
        .unwrap();
    assert_eq!(
        home.consent_action.as_deref(),
        Some("accept: OneTrust (#onetrust-accept-btn-handler)")
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.kind == "tracker" && f.vendor.as_deref() == Some("meta"))
    );
    assert!(
        !report.findings.iter().any(|f| f.kind == "no_consent"),
        "{:#?}",
        report.findings
    );

    // Correct banner, reject: the pixel never loads.
    let mut opts = options(&server);
    opts.consent = ConsentMode::Reject;
    opts.concurrency = 1;
    let report = scan(&opts).await;
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.vendor.as_deref() == Some("meta")),
        "{:#?}",
        report.findings
    );

    // Broken banner, accept: the pixel fired before the click.
    let broken = FixtureServer::start(consent_site(true)).await.unwrap();
    let mut opts = options(&broken);
    opts.consent = ConsentMode::Accept;
    opts.concurrency = 1;
    let report = scan(&opts).await;
    find(
        &report,
        "no_consent",
        "meta",
        "/",
        "before the consent banner was answered",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_site_has_no_critical_or_high_findings() {
    let site = Site::new()
        .page(
            C,
            "/",
            &html(r#"<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Inter">
                <a href="/services/dermatology">Dermatology</a>
                <iframe src="https://www.youtube-nocookie.com/embed/abc"></iframe>
                <script src="https://js.stripe.com/v3/"></script>
                <script>navigator.sendBeacon('/analytics/collect', JSON.stringify({path: location.pathname}));</script>
                <form action="/contact" method="post"><input type="email" name="email"><button>Send</button></form>"#),
        )
        .page(C, "/services/dermatology", &html("<h1>Dermatology</h1>"))
        .route(C, "/analytics/collect", Response::status(204))
        .route(C, "/contact", Response::html("<h1>thanks</h1>"))
        .route("fonts.googleapis.com", "/css2", Response::ok("text/css", "body{font-family:Inter}"))
        .page("www.youtube-nocookie.com", "/embed/abc", &html("<video></video>"))
        .route("js.stripe.com", "/v3/", Response::js("window.Stripe = function () {};"));
    let server = FixtureServer::start(site).await.unwrap();
    let report = scan(&options(&server)).await;
    assert_eq!(report.summary.pages, 2);
    let serious: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity <= Severity::High)
        .collect();
    assert!(serious.is_empty(), "{serious:#?}");
    // The probe typed into the contact form, and the submission never reached the site.
    assert_eq!(report.pages[0].probed_fields, 1);
    assert!(!server.requests().iter().any(|r| r.target == "/contact"));
}

/// A TikTok-style pixel that ignores Global Privacy Control and a Meta-style one that honours it
/// (it checks `navigator.globalPrivacyControl` and stays silent).
fn gpc_site() -> Site {
    Site::new()
        .page(
            C,
            "/",
            &html(
                r#"<script>
                navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', JSON.stringify({event: 'Pageview'}));
                document.cookie = '_ttp=abc; path=/; max-age=3600';
                if (!navigator.globalPrivacyControl) {
                  new Image().src = 'https://www.facebook.com/tr?id=1&ev=PageView';
                  document.cookie = '_fbp=fb.1.1; path=/; max-age=3600';
                }
                </script>"#,
            ),
        )
        .route("analytics.tiktok.com", "/api/v2/pixel", Response::status(204))
        .handler("www.facebook.com", "/tr", |_| Response::ok("image/gif", pixelwatch::demo::GIF.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpc_flags_a_pixel_that_ignores_the_signal_and_not_one_that_honours_it() {
    let server = FixtureServer::start(gpc_site()).await.unwrap();
    let mut opts = options(&server);
    opts.consent = ConsentMode::Gpc;
    let report = scan(&opts).await;
    assert_eq!(report.consent_mode, "gpc");
    let gpc: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == "gpc_ignored")
        .collect();
    assert!(
        gpc.iter()
            .any(|f| f.vendor.as_deref() == Some("tiktok") && f.request_url.is_some()),
        "{gpc:#?}"
    );
    assert!(
        gpc.iter()
            .any(|f| f.vendor.as_deref() == Some("tiktok") && f.evidence.contains("cookie _ttp")),
        "{gpc:#?}"
    );
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.vendor.as_deref() == Some("meta")),
        "the pixel that honours GPC never fired: {:#?}",
        report.findings
    );
    // The signal really went out, on the wire.
    let log = server.requests();
    let beacon = log
        .iter()
        .find(|r| r.host == "analytics.tiktok.com")
        .expect("the beacon reached the tracker");
    assert_eq!(beacon.header("sec-gpc"), Some("1"));
    assert!(log.iter().all(|r| r.header("sec-gpc") == Some("1")));

    // Without GPC both pixels fire and nothing is gpc_ignored.
    let mut opts = options(&server);
    opts.consent = ConsentMode::None;
    let report = scan(&opts).await;
    assert!(!report.findings.iter().any(|f| f.kind == "gpc_ignored"));
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.vendor.as_deref() == Some("meta"))
    );
}

/// A staging booking form whose submission redirects to a confirmation page with a conversion
/// pixel that sends the page URL (naming the service).
fn staging_site() -> Site {
    const S: &str = "staging.clinic.test";
    Site::new()
        .page(S, "/", &html(r#"<a href="/book">Book</a>"#))
        .page(
            S,
            "/book",
            &html(
                r#"<form action="/book/submit" method="post"><input type="email" name="email">
                <input type="hidden" name="service" value="semaglutide"><button>Book</button></form>"#,
            ),
        )
        .route(
            S,
            "/book/submit",
            Response {
                status: 303,
                headers: vec![("location".into(), "/thank-you?service=semaglutide-consult".into())],
                body: pixelwatch::fixture::Body::Bytes(Vec::new()),
                delay: None,
            },
        )
        .page(
            S,
            "/thank-you",
            &html(
                r#"<h1>Thank you! Your consultation is booked.</h1>
                <script>navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel',
                  JSON.stringify({event: 'CompletePayment', context: {page: {url: location.href}}}));</script>"#,
            ),
        )
        .route("analytics.tiktok.com", "/api/v2/pixel", Response::status(204))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_forms_reaches_the_confirmation_page_on_the_named_host_only() {
    let server = FixtureServer::start(staging_site()).await.unwrap();
    let staging = |submit: Option<&str>| {
        let mut opts = options(&server);
        opts.start = "https://staging.clinic.test/".into();
        opts.submit_forms = submit.map(str::to_string);
        opts
    };
    let submitted = |log: &[pixelwatch::fixture::LoggedRequest]| {
        log.iter().any(|r| r.target.starts_with("/book/submit"))
    };

    // Default: the submission never leaves the browser.
    let report = scan(&staging(None)).await;
    assert!(!submitted(&server.requests()));
    assert!(!report.pages.iter().any(|p| p.found_via == "submission"));

    // Named host: the submission reaches staging and the confirmation page is scanned.
    server.clear_log();
    let report = scan(&staging(Some("staging.clinic.test"))).await;
    assert!(
        submitted(&server.requests()),
        "the staging submission was held back"
    );
    let landing = report
        .pages
        .iter()
        .find(|p| p.found_via == "submission")
        .unwrap_or_else(|| {
            panic!(
                "{:#?}",
                report
                    .pages
                    .iter()
                    .map(|p| (&p.url, &p.found_via))
                    .collect::<Vec<_>>()
            )
        });
    assert!(
        landing.url.contains("/thank-you?service=semaglutide"),
        "{}",
        landing.url
    );
    assert!(
        landing
            .requests
            .iter()
            .any(|r| r.host == "analytics.tiktok.com"),
        "{:#?}",
        landing.requests
    );
    assert!(
        report.findings.iter().any(|f| f.kind == "phi_leak"
            && f.page == landing.url
            && f.vendor.as_deref() == Some("tiktok")),
        "{:#?}",
        report.findings
    );
    // The typed values went to staging only; the tracker never saw them.
    let leaked: Vec<String> = server
        .canaries_received(&report.canaries)
        .into_iter()
        .filter(|r| !r.contains("://staging.clinic.test/"))
        .collect();
    assert!(
        leaked.is_empty(),
        "typed values reached a tracker: {leaked:?}"
    );

    // Another host of the site is never a way through, and another site is refused outright.
    server.clear_log();
    scan(&staging(Some("www.clinic.test"))).await;
    assert!(!submitted(&server.requests()));
    let err = scan::run(&staging(Some("evil.example")), Arc::new(Silent))
        .await
        .unwrap_err();
    assert!(
        err.is_usage() && err.to_string().contains("--submit-forms evil.example"),
        "{err}"
    );
}
