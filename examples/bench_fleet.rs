//! Fleet benchmark: queues 200 small generated clinic sites in a throwaway PostgreSQL and runs
//! them with 1 worker, then with 2 workers (each `--concurrency 1`, one Chromium each), in one
//! run. Prints sites per minute, the queue's overhead per job and PostgreSQL round trips per job.
//!
//! - overhead per job: the time a worker spends on a job outside the scan itself (claiming it,
//!   storing scan + drift + alert decision + `done` in one transaction, and the gap before its next
//!   claim), from the jobs' own timestamps and each report's `summary.duration_ms`.
//! - round trips per job: every statement (and first-time statement preparation) the workers
//!   sent, idle polling and lease renewals included (`pixelwatch_db_round_trips_total`).
//!
//! Run with `scripts/bench-fleet.sh` (release build). Not a test: it prints figures.

#[path = "../tests/pg_support/mod.rs"]
mod pg_support;

use std::time::{Duration, Instant};

use pixelwatch::fixture::{FixtureServer, Response, Site};
use pixelwatch::settings::ScanSettings;
use pixelwatch::store::{DbTarget, Store};

const BIN: &str = "target/release/pixelwatch";

fn host(i: usize) -> String {
    format!("clinic{i:03}.bench.test")
}

/// Two pages per site, each loading a TikTok pixel that sends one event.
fn sites(n: usize) -> Site {
    let mut site = Site::new()
        .route(
            "analytics.tiktok.com",
            "/i18n/pixel/events.js",
            Response::js(
                "navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', '{}');",
            ),
        )
        .route(
            "analytics.tiktok.com",
            "/api/v2/pixel",
            Response::status(204),
        );
    for i in 0..n {
        let pixel = r#"<script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script>"#;
        site = site
            .page(
                &host(i),
                "/",
                &format!("<html><head><title>Clinic {i}</title>{pixel}</head><body><a href=\"/services\">Services</a></body></html>"),
            )
            .page(
                &host(i),
                "/services",
                &format!("<html><head><title>Services</title>{pixel}</head><body><h1>Services</h1></body></html>"),
            );
    }
    site
}

async fn round_trips(port: u16) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("metrics")
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("pixelwatch_db_round_trips_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

struct Figures {
    workers: usize,
    sites_per_min: f64,
    overhead_ms: f64,
    round_trips: f64,
}

async fn run(
    pg: &pg_support::PgServer,
    server: &FixtureServer,
    n: usize,
    workers: usize,
) -> Figures {
    let url = pg.fresh_db().await;
    let store = Store::open(url.parse::<DbTarget>().unwrap()).await.unwrap();
    let settings = ScanSettings {
        browser_args: Some(server.browser_args()),
        ..Default::default()
    };
    for i in 0..n {
        store
            .add_site(&format!("https://{}/", host(i)), "0 3 * * *", &settings)
            .await
            .unwrap();
    }
    let ports: Vec<u16> = (0..workers).map(|_| pg_support::free_port()).collect();
    let mut procs: Vec<tokio::process::Child> = ports
        .iter()
        .map(|p| {
            tokio::process::Command::new(BIN)
                .args(["worker", "--db", &url, "--poll-ms", "200"])
                .args(["--metrics-addr", &format!("127.0.0.1:{p}")])
                .env_remove("PIXELWATCH_DB")
                .env("PIXELWATCH_LOG", "error")
                .kill_on_drop(true)
                .spawn()
                .expect("run scripts/bench-fleet.sh (it builds the release binary)")
        })
        .collect();
    // The workers are up (their metrics answer) before the clock starts.
    for p in &ports {
        while reqwest::get(format!("http://127.0.0.1:{p}/metrics"))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let before: f64 = {
        let mut sum = 0.0;
        for p in &ports {
            sum += round_trips(*p).await;
        }
        sum
    };
    let t0 = Instant::now();
    for s in store.sites().await.unwrap() {
        store.enqueue_now(&s, 3).await.unwrap();
    }
    loop {
        let done = store
            .list_jobs(Some(pixelwatch::store::jobs::JobState::Done), 10_000)
            .await
            .unwrap()
            .len();
        if done == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = t0.elapsed();
    // Let each worker's metrics catch up (they are refreshed every second or so).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut after = 0.0;
    for p in &ports {
        after += round_trips(*p).await;
    }
    for c in &mut procs {
        // SAFETY: signalling a process this benchmark started, by its pid.
        unsafe { libc::kill(c.id().unwrap() as i32, libc::SIGTERM) };
        let _ = c.wait().await;
    }
    // Overhead from the jobs' timestamps and each scan's own duration.
    let rows = pg_support::connect(&url)
        .await
        .query(
            "SELECT j.lease_owner,
                CAST(extract(epoch FROM j.started_at) * 1000 AS DOUBLE PRECISION),
                CAST(extract(epoch FROM j.finished_at) * 1000 AS DOUBLE PRECISION),
                CAST((CAST(s.report_json AS json) -> 'summary' ->> 'duration_ms') AS DOUBLE PRECISION)
             FROM jobs j JOIN scans s ON s.id = j.scan_id ORDER BY j.lease_owner, j.started_at",
            &[],
        )
        .await
        .unwrap();
    let mut overhead = 0.0;
    let mut last: Option<(String, f64)> = None;
    for r in &rows {
        let (owner, start, end, scan): (String, f64, f64, f64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        overhead += (end - start - scan).max(0.0);
        if let Some((o, prev_end)) = &last
            && *o == owner
        {
            overhead += (start - prev_end).max(0.0);
        }
        last = Some((owner, end));
    }
    Figures {
        workers,
        sites_per_min: n as f64 / elapsed.as_secs_f64() * 60.0,
        overhead_ms: overhead / rows.len() as f64,
        round_trips: (after - before) / n as f64,
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_SITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let server = FixtureServer::start(sites(n)).await.unwrap();
    let pg = pg_support::PgServer::start_new();
    println!(
        "{n} generated sites (2 pages, a TikTok pixel and its beacon each), default scan settings"
    );
    println!(
        "{:>7}  {:>9}  {:>22}  {:>24}",
        "workers", "sites/min", "queue overhead/job (ms)", "PostgreSQL round trips/job"
    );
    let mut base = None;
    for workers in [1, 2] {
        let f = run(&pg, &server, n, workers).await;
        println!(
            "{:>7}  {:>9.1}  {:>22.1}  {:>24.1}",
            f.workers, f.sites_per_min, f.overhead_ms, f.round_trips
        );
        base.get_or_insert(f.sites_per_min);
        if workers == 2 {
            println!(
                "speed-up with 2 workers: {:.2}x",
                f.sites_per_min / base.unwrap()
            );
        }
    }
}
