//! The HTML report for the person who must act, opened in the real headless Chromium from a
//! file with no network: the verdict first and visible without scrolling at a phone and a
//! desktop width (screenshots of both are taken), severity counts, the vendor table with BAA
//! status and first-seen dates from the database, findings grouped by cause in collapsible
//! lists with the matched term highlighted, the history chart, drift, long URLs that do not
//! squeeze columns, and nothing from the scanned site turned into markup.

mod outputs_support;

use std::sync::Arc;

use outputs_support::{png_size, render_at};
use pixelwatch::diff::{Baseline, diff};
use pixelwatch::model::{Finding, FindingKind, Severity};
use pixelwatch::report::html::{Context, render};
use pixelwatch::rules::Engine;
use pixelwatch::scan::{self, Silent};
use pixelwatch::store::Store;

/// Measures the rendered report from inside the page (evaluated over CDP: the report itself has
/// no scripts).
const PROBE: &str = r#"(() => {
const q = s => Array.from(document.querySelectorAll(s));
const v = document.getElementById('verdict').getBoundingClientRect();
const widths = q('table.vendors td, article.cause, .ev').map(e => e.getBoundingClientRect().width);
return {
  verdictTop: v.top, verdictBottom: v.bottom, innerHeight, innerWidth,
  pageWidth: document.documentElement.scrollWidth,
  verdict: document.getElementById('verdict').textContent,
  counts: q('#severity-counts li b').map(b => +b.textContent),
  vendors: q('tr.vendor').map(r => Array.from(r.cells).map(c => c.textContent)),
  causes: q('article.cause').length,
  collapsed: q('article.cause details:not([open])').length,
  marks: q('.ev mark').map(m => m.textContent.toLowerCase()),
  bars: q('#history-chart rect.scan').length,
  drift: q('#drift ~ .scroll tr.added').map(r => r.cells[1].textContent + ' ' + r.cells[2].textContent),
  injected: q('.ev img, .ev script, header img').length,
  narrowest: Math.min(...widths),
};
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_puts_the_verdict_first_on_a_phone_and_a_desktop() {
    let server = pixelwatch::demo::serve().await.unwrap();
    let mut report = scan::run(&pixelwatch::demo::scan_options(&server), Arc::new(Silent))
        .await
        .unwrap();
    // History: an earlier scan without the TikTok pixel, then this one.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("h.db")).await.unwrap();
    let mut before = report.clone();
    for p in &mut before.pages {
        p.requests.retain(|r| r.vendor.as_deref() != Some("tiktok"));
    }
    before
        .findings
        .retain(|f| f.vendor.as_deref() != Some("tiktok"));
    store.save_scan(&mut before).await.unwrap();
    let drift = diff(&Baseline::from_scan(&before), &report);
    assert!(!drift.is_empty());
    // Hostile evidence and a very long URL from the scanned site.
    let long = format!(
        "https://www.demo-clinic.test/{}",
        "very-long-path-segment/".repeat(120)
    );
    report.findings.push(Finding {
        kind: FindingKind::Tracker,
        severity: Severity::Low,
        vendor: None,
        page: long.clone(),
        request_url: Some(format!("{long}?q={}", "x".repeat(3000))),
        evidence:
            "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
                .into(),
        rule: "test:escape".into(),
        matched: Some("img".into()),
    });
    report.pages[0].requests[0].url = format!("{long}?q={}", "y".repeat(3000));
    store.save_scan(&mut report).await.unwrap();
    let mut history = store.list_scans(Some(&report.site), 30).await.unwrap();
    history.reverse();
    let first_seen = store.vendors_first_seen(&report.site).await.unwrap();
    let engine = Engine::bundled();
    let html = render(&Context {
        drift: Some(&drift),
        history: &history,
        first_seen: &first_seen,
        ..Context::new(&report, &engine)
    });

    // One self-contained file: no script, no external resource.
    let resource = regex::Regex::new(r"(?i)<script|<[a-z][^>]*\s(src|href)\s*=").unwrap();
    assert!(
        !resource.is_match(&html),
        "the report loads or runs something"
    );
    let file = dir.path().join("report.html");
    std::fs::write(&file, &html).unwrap();

    // At a phone and a desktop size: the verdict on the first screen, nothing sideways, no
    // squeezed column. The screenshots stay under the target directory for people to look at.
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut desktop = serde_json::Value::Null;
    for (name, w, h, mobile) in [("phone", 390, 844, true), ("desktop", 1280, 900, false)] {
        let png = shots.join(format!("html-report-{name}.png"));
        let p = render_at(&file, w, h, mobile, PROBE, &png).await;
        assert_eq!(png_size(&png), (w, h), "{name} screenshot size");
        assert_eq!(p["innerWidth"], w, "{p}");
        let bottom = p["verdictBottom"].as_f64().unwrap();
        assert!(
            bottom <= p["innerHeight"].as_f64().unwrap(),
            "{name}: the verdict ends at {bottom}px, below the first screen: {p}"
        );
        assert!(
            p["pageWidth"].as_f64().unwrap() <= w as f64,
            "{name}: the page scrolls sideways: {p}"
        );
        assert!(
            p["narrowest"].as_f64().unwrap() >= 40.0,
            "{name}: a long URL squeezed a column: {p}"
        );
        desktop = p;
    }

    let p = desktop;
    let leak_pages: std::collections::BTreeSet<&str> = report
        .findings
        .iter()
        .filter(|f| f.kind == "phi_leak")
        .map(|f| f.page.as_str())
        .collect();
    assert!(leak_pages.len() >= 2);
    assert_eq!(
        p["verdict"],
        format!(
            "TikTok and Meta pixels, which sign no BAA, receive health information on {} pages.",
            leak_pages.len()
        )
    );
    let counts: Vec<u64> = p["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ]
    .iter()
    .map(|s| report.findings.iter().filter(|f| f.severity == *s).count() as u64)
    .chain([report.summary.pages_errored as u64])
    .collect();
    assert_eq!(counts, expected);
    // Vendors with category, BAA and first seen (Meta in the earlier scan, TikTok in this one).
    let vendors = p["vendors"].as_array().unwrap();
    let row = |id: &str| {
        vendors
            .iter()
            .find(|r| r[0].as_str().unwrap().starts_with(id))
            .unwrap_or_else(|| panic!("{id}: {vendors:?}"))
            .clone()
    };
    let tiktok = row("TikTok Pixel");
    assert_eq!(
        (tiktok[1].as_str(), tiktok[2].as_str()),
        (Some("advertising"), Some("no"))
    );
    assert_eq!(tiktok[6], history[1].finished_at);
    assert_eq!(row("Meta Pixel")[6], history[0].finished_at);
    assert!(
        row("Meta Pixel")[5].as_str().unwrap().contains("_fbp"),
        "{vendors:?}"
    );
    // Findings grouped by cause, pages collapsed, matched terms highlighted.
    let causes = p["causes"].as_u64().unwrap();
    assert!(
        causes > 3 && (causes as usize) < report.findings.len(),
        "{p}"
    );
    assert_eq!(p["collapsed"], causes);
    let marks = p["marks"].as_array().unwrap();
    assert!(marks.iter().any(|m| m == "semaglutide"), "{marks:?}");
    assert_eq!(p["bars"], 2);
    assert!(
        p["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "vendor tiktok"),
        "{p}"
    );
    assert_eq!(p["injected"], 0);
}
