//! Crawl benchmark: scans a generated local site of a few hundred pages at `--concurrency 1`
//! and at the default concurrency in one run, and prints pages/minute and peak memory of the
//! scanner plus Chromium (PSS summed over the process tree, sampled every 100 ms).
//!
//! Run with `scripts/bench-crawl.sh` (release build). Not a test: it prints figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pixelwatch::fixture::{FixtureServer, Response, Site};
use pixelwatch::scan::{self, ScanOptions, Silent};

const HOST: &str = "www.bench-clinic.test";

fn site(pages: usize) -> Site {
    Site::new()
        .handler(HOST, "/", move |req| {
            let path = req.target.split('?').next().unwrap_or("/");
            if path.ends_with(".png") {
                return Response::ok("image/png", pixelwatch::demo::GIF.to_vec());
            }
            if path == "/app.js" {
                return Response::js("document.cookie='fp=1; path=/'; localStorage.setItem('k','v');");
            }
            let n: usize = path
                .trim_start_matches("/page/")
                .parse()
                .unwrap_or(0);
            // Each page links to the next five, so the crawl is a breadth-first fan-out.
            let links: String = (1..=5)
                .map(|k| (n * 5 + k) % pages)
                .map(|m| format!(r#"<a href="/page/{m}">page {m}</a> "#))
                .collect();
            let imgs: String = (0..4).map(|i| format!(r#"<img src="/img/{n}-{i}.png">"#)).collect();
            Response::html(format!(
                r#"<!doctype html><html><head><title>Page {n}</title>
                <script src="/app.js"></script>
                <script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script>
                </head><body><h1>Service {n}</h1>{imgs}{links}
                <script>setTimeout(() => navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', '{{"event":"ViewContent"}}'), 100);</script>
                </body></html>"#
            ))
        })
        .route(
            "analytics.tiktok.com",
            "/i18n/pixel/events.js",
            Response::js("window.ttq = {};"),
        )
        .route("analytics.tiktok.com", "/api/v2/pixel", Response::status(204))
}

/// PSS (kB) summed over this process and all its descendants.
fn tree_pss_kb() -> u64 {
    let me = std::process::id();
    let mut parent_of = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The field after the ")" of the command name: state, then ppid.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let ppid = rest
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u32>().ok());
                if let Some(ppid) = ppid {
                    parent_of.insert(pid, ppid);
                }
            }
        }
    }
    let in_tree = |mut pid: u32| loop {
        if pid == me {
            return true;
        }
        match parent_of.get(&pid) {
            Some(&p) if p != 0 && p != pid => pid = p,
            _ => return false,
        }
    };
    parent_of
        .keys()
        .filter(|&&pid| in_tree(pid))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

async fn measure(
    server: &FixtureServer,
    pages: usize,
    concurrency: usize,
) -> (f64, f64, usize, usize) {
    let opts = ScanOptions {
        start: format!("https://{HOST}/page/0"),
        max_pages: pages,
        max_depth: 50,
        max_per_pattern: pages,
        concurrency,
        sitemaps: false,
        browser_args: server.browser_args(),
        ..Default::default()
    };
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(tree_pss_kb(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let t0 = Instant::now();
    let report = scan::run(&opts, Arc::new(Silent)).await.expect("scan runs");
    let secs = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let ppm = report.pages.len() as f64 / secs * 60.0;
    let peak_mb = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    (
        ppm,
        peak_mb,
        report.pages.len(),
        report.summary.pages_errored,
    )
}

#[tokio::main]
async fn main() {
    let pages: usize = std::env::var("BENCH_PAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let default_concurrency = ScanOptions::default().concurrency;
    let server = FixtureServer::start(site(pages))
        .await
        .expect("fixture server");
    println!(
        "crawl benchmark: {pages} generated pages (7 requests + 1 beacon each), settle {} ms quiet / {} ms max",
        ScanOptions::default().settle_quiet.as_millis(),
        ScanOptions::default().settle_max.as_millis()
    );
    println!(
        "{:<22} {:>8} {:>10} {:>12} {:>14}",
        "run", "pages", "errored", "pages/min", "peak PSS (MB)"
    );
    let mut rates = Vec::new();
    for (label, c) in [("1 tab (baseline)", 1), ("default", default_concurrency)] {
        let (ppm, peak, n, errs) = measure(&server, pages, c).await;
        rates.push(ppm);
        println!(
            "{:<22} {:>8} {:>10} {:>12.1} {:>14.0}",
            format!("{label}, {c} tab(s)"),
            n,
            errs,
            ppm,
            peak
        );
    }
    println!(
        "speed-up of default concurrency over 1 tab: {:.2}x",
        rates[1] / rates[0]
    );
}
