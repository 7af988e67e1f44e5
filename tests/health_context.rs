//! Health pages whose URLs name no condition, in real Chromium: each is known by what a visitor
//! sees (title, headings, structured data, choices, the links pointing to it), and a tracker that
//! receives its URL is a `phi_leak` saying why; the generic pages of the same site are not.

use std::sync::Arc;
use std::time::Duration;

use pixelwatch::fixture::{FixtureServer, Response, Site};
use pixelwatch::model::{ScanReport, Severity};
use pixelwatch::scan::{self, ScanOptions, Silent};

const C: &str = "www.clinic.test";

/// Every page carries a Meta-style and a TikTok-style pixel that send the page URL (`dl`,
/// `context.page.url`), and site-wide navigation and footer that name the clinic's programs.
fn page(title: &str, main: &str) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset=utf-8><title>{title}</title>
        <script>
          new Image().src = 'https://www.facebook.com/tr?id=1&ev=PageView&dl=' + encodeURIComponent(location.href);
          navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel',
            JSON.stringify({{event: 'Pageview', context: {{page: {{url: location.href}}}}}}));
        </script></head><body>
        <nav><a href="/">Home</a> <a href="/am-i-a-candidate/">Am I a candidate for semaglutide?</a>
          <a href="/schedule-now/">Book a tirzepatide consult</a>
          <a href="/get-started/">Start your men's health visit</a>
          <a href="/programs/reset/">The Reset program</a> <a href="/about-us/">About us</a>
          <a href="/careers/">Careers</a> <a href="/privacy-policy/">Privacy</a> <a href="/blog/">Blog</a></nav>
        <main>{main}</main>
        <footer>Semaglutide, tirzepatide and weight loss programs. Erectile dysfunction care.</footer>
        </body></html>"#
    )
}

fn site() -> Site {
    Site::new()
        .page(C, "/", &page("Acme Wellness | Semaglutide weight loss", "<h1>Welcome</h1><p>Care that fits your life.</p>"))
        // A candidacy quiz: options to choose, the drug named in the question.
        .page(
            C,
            "/am-i-a-candidate/",
            &page(
                "Am I a candidate?",
                r#"<h1>See if you qualify for semaglutide</h1>
                <form><label><input type=radio name=bmi value=1> BMI under 27</label>
                <label><input type=radio name=bmi value=2> BMI 27-30</label>
                <label><input type=radio name=bmi value=3> BMI over 30</label>
                <button type=button>Next</button></form>"#,
            ),
        )
        // A booking page for one consult: only the links pointing to it and its text say which.
        .page(
            C,
            "/schedule-now/",
            &page(
                "Schedule now",
                r#"<h1>Book your consultation</h1><p>Choose a time for your tirzepatide consult.</p>
                <input type=date name=day> <button>Book now</button>"#,
            ),
        )
        // The first step of a sexual-health intake.
        .page(
            C,
            "/get-started/",
            &page(
                "Get started",
                r#"<h1>Tell us about your health</h1><p>Step 1 of 4</p>
                <label><input type=checkbox name=c value=ed> Erectile dysfunction</label>
                <label><input type=checkbox name=c value=t> Low testosterone</label>
                <label><input type=checkbox name=c value=hl> Hair loss</label>
                <button type=button>Continue</button>"#,
            ),
        )
        // A condition page known by its structured data.
        .page(
            C,
            "/programs/reset/",
            &page(
                "The Reset program",
                r#"<script type="application/ld+json">{"@context": "https://schema.org", "@type": "MedicalWebPage",
                   "about": {"@type": "MedicalCondition", "name": "Obesity"}}</script>
                <h1>Reset</h1><p>Obesity is a chronic disease. Our obesity program pairs medication with coaching;
                obesity treatment options and side effects are explained below.</p>"#,
            ),
        )
        .page(C, "/about-us/", &page("About us", "<h1>About us</h1><p>Founded in 2019 by two physicians.</p>"))
        .page(C, "/careers/", &page("Careers", "<h1>Careers</h1><p>Join our team of nurses.</p>"))
        .page(C, "/privacy-policy/", &page("Privacy policy", "<h1>Privacy policy</h1><p>We respect your privacy.</p>"))
        .page(C, "/blog/", &page("Blog", "<h1>Blog</h1><p>News from the clinic.</p>"))
        .handler("www.facebook.com", "/tr", |_| Response::ok("image/gif", pixelwatch::demo::GIF.to_vec()))
        .route("analytics.tiktok.com", "/api/v2/pixel", Response::status(204))
}

async fn scan(server: &FixtureServer) -> ScanReport {
    let opts = ScanOptions {
        start: format!("https://{C}/"),
        max_pages: 20,
        concurrency: 2,
        page_timeout: Duration::from_secs(10),
        settle_quiet: Duration::from_millis(300),
        settle_max: Duration::from_secs(3),
        sitemaps: false,
        probe_forms: false,
        browser_args: server.browser_args(),
        ..Default::default()
    };
    tokio::time::timeout(Duration::from_secs(180), scan::run(&opts, Arc::new(Silent)))
        .await
        .expect("bounded")
        .expect("scan runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_health_pages_are_leaks_with_their_reason_and_generic_pages_are_not() {
    let server = FixtureServer::start(site()).await.unwrap();
    let report = scan(&server).await;
    assert_eq!(report.summary.pages_errored, 0);
    assert_eq!(
        report.pages.len(),
        9,
        "{:?}",
        report.pages.iter().map(|p| &p.url).collect::<Vec<_>>()
    );
    let leaks = |path: &str| -> Vec<&pixelwatch::model::Finding> {
        report
            .findings
            .iter()
            .filter(|f| f.kind == "phi_leak" && f.page == format!("https://{C}{path}"))
            .collect()
    };
    for (path, reason, role, severity) in [
        (
            "/am-i-a-candidate/",
            "names semaglutide",
            "page role: intake",
            Severity::High,
        ),
        (
            "/schedule-now/",
            "tirzepatide",
            "page role: booking",
            Severity::High,
        ),
        (
            "/get-started/",
            "erectile dysfunction",
            "page role: intake",
            Severity::Critical,
        ),
        (
            "/programs/reset/",
            "obesity",
            "page role: condition",
            Severity::High,
        ),
    ] {
        let found = leaks(path);
        for vendor in ["meta", "tiktok"] {
            let f = found
                .iter()
                .find(|f| f.vendor.as_deref() == Some(vendor))
                .unwrap_or_else(|| panic!("no {vendor} leak on {path}: {:#?}", report.findings));
            assert!(
                f.evidence.contains("health-revealing page")
                    && f.evidence.contains(reason)
                    && f.evidence.contains(role),
                "{path}: {}",
                f.evidence
            );
            assert_eq!(f.severity, severity, "{path}: {}", f.evidence);
            assert!(f.rule.starts_with("page-roles.toml:"), "{}", f.rule);
        }
        let p = report.pages.iter().find(|p| p.url.ends_with(path)).unwrap();
        assert!(
            p.health.is_some(),
            "{path} has its health context in the report"
        );
    }
    for path in ["/", "/about-us/", "/careers/", "/privacy-policy/", "/blog/"] {
        assert!(leaks(path).is_empty(), "{path}: {:#?}", leaks(path));
        let p = report.pages.iter().find(|p| p.url.ends_with(path)).unwrap();
        assert!(p.health.is_none(), "{path}: {:?}", p.health);
    }
}
