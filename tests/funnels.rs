//! Intake flows with no `<form>`, in real Chromium: a single-page-app quiz whose option clicks
//! fire condition events is walked step by step, the most health-revealing option chosen at
//! each step, and every condition event it fired is reported — with nothing typed leaving.

use std::sync::Arc;
use std::time::Duration;

use pixelwatch::fixture::{FixtureServer, Response, Site};
use pixelwatch::model::ScanReport;
use pixelwatch::scan::{self, ScanOptions, Silent};

const C: &str = "www.telehealth.test";
const TT: &str = "analytics.tiktok.com";

/// Three steps of option cards, then an email step. Each option click fires a TikTok event
/// naming the option; "Continue" moves on (the cards do not auto-advance).
const QUIZ: &str = r#"<!doctype html><html><head><meta charset=utf-8><title>Start your visit</title></head>
<body><header><a href="/">Home</a></header><main id="quiz"></main>
<script>
const steps = [
  {q: 'What brings you here today?', options: ['General wellness', 'Weight management', 'Erectile dysfunction', 'Hair loss']},
  {q: 'Which of these have you noticed?', options: ['Trouble sleeping', 'Anxiety', 'None of these']},
  {q: 'Have you taken any of these?', options: ['Sildenafil', 'Tadalafil', 'Neither']},
];
let i = 0;
const track = (props) => navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel',
  JSON.stringify({event: 'SelectOption', properties: props, context: {page: {url: location.href}}}));
function render() {
  const quiz = document.getElementById('quiz');
  if (i >= steps.length) {
    quiz.innerHTML = '<h2>Where should we send your plan?</h2><input id="email" type="email" placeholder="Email">' +
      '<button id="done">See my results</button>';
    document.getElementById('done').onclick = () => {
      const email = document.getElementById('email').value;
      track({step: 'lead', email});
      fetch('/api/lead?email=' + encodeURIComponent(email));
      quiz.innerHTML = '<h2>Thanks!</h2>';
    };
    return;
  }
  const s = steps[i];
  quiz.innerHTML = '<h2>' + s.q + '</h2><div class="options">' +
    s.options.map((o) => '<button class="option" type="button">' + o + '</button>').join('') +
    '</div><button id="next" type="button">Continue</button>';
  for (const b of quiz.querySelectorAll('button.option')) {
    b.onclick = (e) => {
      if (!e.isTrusted) return; // only a real click counts
      b.classList.add('chosen');
      track({step: i + 1, content_name: b.textContent});
    };
  }
  document.getElementById('next').onclick = () => { i++; render(); };
}
render();
</script></body></html>"#;

fn site() -> Site {
    Site::new()
        .page(
            C,
            "/",
            r#"<!doctype html><html><body><a href="/start">Start</a></body></html>"#,
        )
        .page(C, "/start", QUIZ)
        .handler(C, "/api/", |_| Response::status(204))
        .route(TT, "/api/v2/pixel", Response::status(204))
}

async fn scan(opts: &ScanOptions) -> ScanReport {
    tokio::time::timeout(Duration::from_secs(180), scan::run(opts, Arc::new(Silent)))
        .await
        .expect("bounded")
        .expect("scan runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiz_without_a_form_is_walked_and_every_condition_event_reported() {
    let server = FixtureServer::start(site()).await.unwrap();
    let opts = ScanOptions {
        start: format!("https://{C}/"),
        max_pages: 5,
        concurrency: 1,
        page_timeout: Duration::from_secs(10),
        settle_quiet: Duration::from_millis(300),
        settle_max: Duration::from_secs(3),
        sitemaps: false,
        browser_args: server.browser_args(),
        ..Default::default()
    };
    let report = scan(&opts).await;
    let start = report
        .pages
        .iter()
        .find(|p| p.url.ends_with("/start"))
        .expect("quiz visited");
    // Each step's most health-revealing option was chosen, by a real click, and its event seen.
    for (step, option) in [
        (1, "Erectile dysfunction"),
        (2, "Anxiety"),
        (3, "Sildenafil"),
    ] {
        let event = start
            .requests
            .iter()
            .find(|r| {
                r.host == TT
                    && r.post_data
                        .as_deref()
                        .is_some_and(|b| b.contains(&format!("\"content_name\":\"{option}\"")))
            })
            .unwrap_or_else(|| {
                panic!(
                    "step {step}: no event for {option}: {:#?}",
                    start
                        .requests
                        .iter()
                        .map(|r| (&r.url, &r.step))
                        .collect::<Vec<_>>()
                )
            });
        assert!(
            event
                .step
                .as_deref()
                .is_some_and(|s| s.starts_with(&format!("funnel step {step}: chose '{option}'"))),
            "{:?}",
            event.step
        );
        let lower = option.to_lowercase();
        assert!(
            report.findings.iter().any(|f| f.kind == "phi_leak"
                && f.vendor.as_deref() == Some("tiktok")
                && f.page == start.url
                && f.evidence.to_lowercase().contains(&lower)),
            "no leak reported for {option}: {:#?}",
            report.findings
        );
    }
    // The last step's email was typed: the tracker event and the lead call carrying it were held.
    assert!(start.probed_fields >= 1);
    let leaked = server.canaries_received(&report.canaries);
    assert!(
        leaked.is_empty(),
        "typed values left the browser: {leaked:?}"
    );
    assert!(
        start
            .blocked_submissions
            .iter()
            .any(|b| b.contains("/api/lead?email=")),
        "{:?}",
        start.blocked_submissions
    );

    // --funnel-steps 0: the quiz is left alone.
    let report = scan(&ScanOptions {
        funnel_steps: 0,
        ..opts.clone()
    })
    .await;
    let start = report
        .pages
        .iter()
        .find(|p| p.url.ends_with("/start"))
        .unwrap();
    assert!(!start.requests.iter().any(|r| r.step.is_some()));
}

/// A patient portal: login (the password must reach the server), then a message form whose
/// handler sends the typed message to a tracker and to the portal.
fn portal() -> Site {
    const LOGIN: &str = r#"<!doctype html><html><head><title>Patient portal</title></head><body>
        <form method="post" action="/portal/session"><input id="user" name="user">
        <input id="password" name="password" type="password"><button>Sign in</button></form></body></html>"#;
    const HOME: &str = r#"<!doctype html><html><head><title>Your lab results</title></head><body>
        <h1>Your lab results</h1><button id="compose" onclick="document.getElementById('box').hidden = false">Message your provider</button>
        <div id="box" hidden><textarea id="msg"></textarea><button id="send">Send</button></div>
        <script>
          navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', JSON.stringify({event: 'Pageview', context: {page: {url: location.href, title: document.title}}}));
          document.getElementById('send').onclick = () => {
            const m = document.getElementById('msg').value;
            navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', JSON.stringify({event: 'Contact', properties: {description: m}}));
            fetch('/portal/messages', {method: 'POST', body: m});
          };
        </script></body></html>"#;
    Site::new()
        .page(C, "/portal/login", LOGIN)
        .handler(C, "/portal/session", |req| {
            let body = String::from_utf8_lossy(&req.body);
            if body.contains("password=correct+horse") {
                Response::redirect("/portal/home")
                    .header("set-cookie", "portal=1; Path=/; HttpOnly")
            } else {
                Response::status(403)
            }
        })
        .handler(C, "/portal/home", |req| {
            if req.header("cookie").is_some_and(|c| c.contains("portal=1")) {
                Response::html(HOME)
            } else {
                Response::redirect("/portal/login")
            }
        })
        .handler(C, "/portal/messages", |_| Response::status(204))
        .route(TT, "/api/v2/pixel", Response::status(204))
}

const JOURNEY: &str = r##"name = "portal"
[[step]]
goto = "https://www.telehealth.test/portal/login"
[[step]]
type = { selector = "#user", value = "demo-patient" }
[[step]]
type = { selector = "#password", env = "PW_TEST_PORTAL_PASSWORD" }
[[step]]
click = "Sign in"
[[step]]
wait_for = "Your lab results"
[[step]]
click = "Message your provider"
[[step]]
type = { selector = "#msg", canary = "text" }
[[step]]
click = { selector = "#send" }
"##;

/// A one-page crawl from `path` on the clinic, then `journeys`, one tab at a time.
fn journey_options(
    server: &FixtureServer,
    path: &str,
    journeys: Vec<std::path::PathBuf>,
) -> ScanOptions {
    ScanOptions {
        start: format!("https://{C}{path}"),
        max_pages: 1,
        concurrency: 1,
        page_timeout: Duration::from_secs(10),
        settle_quiet: Duration::from_millis(300),
        settle_max: Duration::from_secs(3),
        sitemaps: false,
        probe_forms: true,
        journeys,
        browser_args: server.browser_args(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_journey_logs_in_and_its_findings_name_the_step() {
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("PW_TEST_PORTAL_PASSWORD", "correct horse") };
    let server = FixtureServer::start(portal()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portal.toml");
    std::fs::write(&file, JOURNEY).unwrap();
    let opts = ScanOptions {
        screenshots: Some(std::sync::Arc::new(
            pixelwatch::screenshots::Screenshots::create(&dir.path().join("shots")).unwrap(),
        )),
        ..journey_options(&server, "/portal/login", vec![file.clone()])
    };
    let report = scan(&opts).await;
    let journey = report
        .pages
        .iter()
        .find(|p| p.found_via == "journey")
        .expect("the journey is a page of the report");
    assert_eq!(journey.error, None, "{journey:#?}");
    // A picture cannot be redacted: a journey that typed a secret is not captured, while the
    // crawled login page (nothing typed) is.
    assert_eq!(journey.screenshot, None);
    let crawled = report
        .pages
        .iter()
        .find(|p| p.found_via != "journey")
        .unwrap();
    let shot = crawled
        .screenshot
        .as_deref()
        .expect("the crawled page's picture");
    assert!(dir.path().join("shots").join(shot).is_file());
    assert!(
        journey.final_url.ends_with("/portal/home"),
        "{}",
        journey.final_url
    );
    // The login went through: the server got the password; the report never holds it.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.target == "/portal/session"
                && String::from_utf8_lossy(&r.body).contains("correct+horse"))
    );
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("correct+horse") && !json.contains("correct horse"));
    assert!(json.contains("[secret]"));
    // The page behind the login told the tracker its title, at the step that reached it.
    let leak = report
        .findings
        .iter()
        .find(|f| {
            f.kind == "phi_leak"
                && f.vendor.as_deref() == Some("tiktok")
                && f.evidence.contains("typed into a form")
        })
        .unwrap_or_else(|| panic!("{:#?}", report.findings));
    assert!(
        leak.evidence
            .contains("journey 'portal' step 8: click '#send'"),
        "{}",
        leak.evidence
    );
    // Nothing typed left the browser: neither to the tracker nor to the portal.
    let leaked = server.canaries_received(&report.canaries);
    assert!(
        leaked.is_empty(),
        "typed values left the browser: {leaked:?}"
    );
    assert!(
        journey
            .blocked_submissions
            .iter()
            .any(|b| b.starts_with(&format!("POST https://{C}/portal/messages")))
    );

    // A step that cannot run ends the journey with an error that names it.
    unsafe { std::env::remove_var("PW_TEST_PORTAL_PASSWORD") };
    let report = scan(&opts).await;
    let journey = report
        .pages
        .iter()
        .find(|p| p.found_via == "journey")
        .unwrap();
    assert_eq!(
        journey.error.as_deref(),
        Some(
            "journey 'portal' step 3: type $PW_TEST_PORTAL_PASSWORD into '#password': the environment variable PW_TEST_PORTAL_PASSWORD is not set"
        )
    );
}

/// A journey types into a page that keeps what was typed (a cookie, local storage); a second
/// journey then visits a page whose tag sends the tracker whatever the jar and storage hold.
/// Each journey runs in a browser context of its own: the second one starts clean and runs
/// (in a shared jar its first navigation carried the canary cookie and was held back, so the
/// journey failed at step 1), and nothing typed leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_journey_types_never_reaches_the_next() {
    let keep = r#"<form id="f"><input id="email" type="email"></form>
        <script>document.getElementById('email').addEventListener('input', (e) => {
          document.cookie = 'lead=' + encodeURIComponent(e.target.value) + '; path=/';
          localStorage.setItem('lead', e.target.value);
        });</script>"#;
    let snoop = format!(
        r#"<h1>Next</h1><script>new Image().src = 'https://{TT}/api/v2/pixel?jar='
          + encodeURIComponent(document.cookie) + '&lead=' + encodeURIComponent(localStorage.getItem('lead'));</script>"#
    );
    let site = Site::new()
        .page(C, "/", "<!doctype html><title>home</title><p>home</p>")
        .page(
            C,
            "/keep",
            &format!("<!doctype html><title>keep</title>{keep}"),
        )
        .page(
            C,
            "/next",
            &format!("<!doctype html><title>next</title>{snoop}"),
        )
        .route(TT, "/api/v2/pixel", Response::status(204));
    let server = FixtureServer::start(site).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("keep.toml");
    std::fs::write(
        &first,
        format!(
            "name = \"keep\"\n[[step]]\ngoto = \"https://{C}/keep\"\n[[step]]\ntype = {{ selector = \"#email\", canary = \"email\" }}\n"
        ),
    )
    .unwrap();
    let second = dir.path().join("next.toml");
    std::fs::write(
        &second,
        format!("name = \"next\"\n[[step]]\ngoto = \"https://{C}/next\"\n[[step]]\nwait_for = \"Next\"\n"),
    )
    .unwrap();
    let opts = journey_options(&server, "/", vec![first, second]);
    let report = scan(&opts).await;
    let journeys: Vec<&pixelwatch::model::Page> = report
        .pages
        .iter()
        .filter(|p| p.found_via == "journey")
        .collect();
    assert_eq!(journeys.len(), 2, "{:#?}", report.pages);
    assert!(journeys.iter().all(|j| j.error.is_none()), "{journeys:#?}");
    // The second journey's tag ran and found nothing of the first one's typing.
    let pixel = server
        .requests()
        .into_iter()
        .find(|r| r.host == TT && r.target.contains("jar="))
        .expect("the tag of /next called the tracker");
    assert!(pixel.target.ends_with("&lead=null"), "{}", pixel.target);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaked = server.canaries_received(&report.canaries);
    assert!(
        leaked.is_empty(),
        "typed values reached a server: {leaked:?}"
    );
}
