//! Intake flows with no `<form>`, in real Chromium: a single-page-app quiz whose option clicks
//! fire condition events is walked step by step, the most health-revealing option chosen at
//! each step, and every condition event it fired is reported — with nothing typed leaving.

use std::sync::Arc;
use std::time::Duration;

use pixelwatch::fixture::{FixtureServer, Response, Site};
use pixelwatch::model::ScanReport;
use pixelwatch::probe::Needles;
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
    let needles = Needles::new(&report.canaries);
    for r in server.requests() {
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            needles.find(&r.url(), &body, "").is_empty(),
            "{} left the browser",
            r.url()
        );
    }
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
