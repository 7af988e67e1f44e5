//! The HTML report, rendered in the real headless Chromium: it opens offline from a file, shows
//! the findings worst first and the drift, and escapes what came from the scanned site.

use std::sync::Arc;
use std::time::Duration;

use pixelwatch::browser::{Browser, LaunchOptions, Tab};
use pixelwatch::diff::{Baseline, diff};
use pixelwatch::model::{Finding, Severity};
use pixelwatch::scan::{self, Silent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_offline_with_findings_and_drift() {
    let server = pixelwatch::demo::serve().await.unwrap();
    let mut report = scan::run(&pixelwatch::demo::scan_options(&server), Arc::new(Silent))
        .await
        .unwrap();
    // A baseline without the TikTok pixel, so the report shows it as drift.
    let mut before = report.clone();
    for p in &mut before.pages {
        p.requests.retain(|r| r.vendor.as_deref() != Some("tiktok"));
    }
    before
        .findings
        .retain(|f| f.vendor.as_deref() != Some("tiktok"));
    let drift = diff(&Baseline::from_scan(&before), &report);
    assert!(!drift.is_empty());
    // Something hostile from a scanned page must be shown as text, never run.
    report.findings.push(Finding {
        kind: "phi_leak".into(),
        severity: Severity::Low,
        vendor: None,
        page: "https://www.demo-clinic.test/x".into(),
        request_url: None,
        evidence:
            "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
                .into(),
        rule: "test:escape".into(),
        matched: None,
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(
        &file,
        pixelwatch::report::html::render(&pixelwatch::report::html::Context {
            drift: Some(&drift),
            ..pixelwatch::report::html::Context::new(&report, &pixelwatch::rules::Engine::bundled())
        }),
    )
    .unwrap();

    // Nothing resolves: the report must not need the network.
    let browser = Browser::launch(&LaunchOptions {
        executable: None,
        extra_args: vec!["--host-resolver-rules=MAP * ~NOTFOUND".into()],
    })
    .await
    .unwrap();
    let mut tab = Tab::open(browser.connection(), browser.user_agent())
        .await
        .unwrap();
    assert!(
        tab.open_url(
            &format!("file://{}", file.display()),
            Duration::from_secs(15)
        )
        .await
    );
    let eval = |js: &'static str| {
        let tab = &tab;
        async move { tab.evaluate(js).await.unwrap() }
    };
    assert_eq!(
        eval("document.title").await,
        "pixelwatch report: https://www.demo-clinic.test/"
    );
    let rows = eval("document.querySelectorAll('table.findings tr.finding').length").await;
    assert_eq!(rows.as_u64().unwrap() as usize, report.findings.len());
    assert_eq!(
        eval("document.querySelector('tr.finding .sev').textContent").await,
        "critical"
    );
    assert_eq!(
        eval("Array.from(document.querySelectorAll('tr.finding .sev')).pop().textContent").await,
        "low"
    );
    let added = eval("Array.from(document.querySelectorAll('#drift ~ table tr.added')).map(r => r.cells[1].textContent + ' ' + r.cells[2].textContent)").await;
    assert!(
        added
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "vendor tiktok"),
        "{added}"
    );
    let pages = eval("document.querySelectorAll('table.pages tr.page').length").await;
    assert_eq!(pages.as_u64().unwrap() as usize, report.pages.len());
    // Escaped: the hostile evidence is visible text, and no element from it exists.
    assert_eq!(
        eval("document.querySelectorAll('td.ev img, td.ev script').length").await,
        0
    );
    let shown = eval("Array.from(document.querySelectorAll('td.ev')).some(td => td.textContent.includes('<img src=x'))").await;
    assert_eq!(shown, true);
    // Rendered, visible content: the summary cards have a size.
    let height = eval("document.getElementById('summary').getBoundingClientRect().height").await;
    assert!(height.as_f64().unwrap() > 10.0);
    tab.close().await;
    browser.close().await;
}
