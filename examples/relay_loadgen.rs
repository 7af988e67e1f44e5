//! Load generator for `scripts/bench-relay.sh`, plus the two tiny servers the benchmark needs.
//!
//! Modes:
//!   relay_loadgen noop   --listen ADDR   answers every POST with 202 `{}` (the ceiling)
//!   relay_loadgen tiktok --listen ADDR   answers like TikTok: 200 `{"code":0,...}`
//!   relay_loadgen meta   --listen ADDR   answers like Meta: 200 `{"events_received":N,...}`
//!   relay_loadgen load   --url URL [--consent-url URL] [--concurrency N] [--seconds S] [--rate R]
//!                        [--events N]
//!
//! `load` sends single-event requests (one new event_id each; `--events N`: N events per
//! request, as `{"events": [...]}`, the way a page batches with `sendBeacon`) and prints
//! accepted events/s and latency percentiles (per request). Without `--rate` it is closed-loop (max throughput); with `--rate` it is
//! open-loop at R requests/s and latency is measured from the scheduled send time, so a stall
//! shows up in the percentiles instead of silently lowering the rate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    match mode.as_str() {
        "noop" | "tiktok" | "meta" => {
            let listen: SocketAddr = arg(&args, "--listen")
                .expect("--listen ADDR")
                .parse()
                .expect("address");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(listen, &mode));
        }
        "load" => {
            let url = arg(&args, "--url").expect("--url URL");
            let consent_url = arg(&args, "--consent-url");
            let concurrency: usize =
                arg(&args, "--concurrency").map_or(64, |v| v.parse().expect("number"));
            let seconds: f64 = arg(&args, "--seconds").map_or(10.0, |v| v.parse().expect("number"));
            let rate: Option<f64> = arg(&args, "--rate").map(|v| v.parse().expect("number"));
            let label = arg(&args, "--label").unwrap_or_else(|| url.clone());
            let events: usize = arg(&args, "--events").map_or(1, |v| v.parse().expect("number"));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(load(
                label,
                url,
                consent_url,
                concurrency,
                seconds,
                rate,
                events,
            ));
        }
        _ => {
            eprintln!(
                "usage: relay_loadgen noop|tiktok|meta --listen ADDR | load --url URL [--consent-url URL] [--concurrency N] [--seconds S] [--rate R] [--events N] [--label L]"
            );
            std::process::exit(3);
        }
    }
}

async fn serve(listen: SocketAddr, mode: &str) {
    let app = if mode == "tiktok" {
        Router::new().fallback(post(|| async {
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                r#"{"code":0,"message":"OK","request_id":"bench","data":{}}"#,
            )
        }))
    } else if mode == "meta" {
        Router::new().fallback(post(|body: axum::body::Bytes| async move {
            let n = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["data"].as_array().map(Vec::len))
                .unwrap_or(0);
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                format!(r#"{{"events_received":{n},"messages":[],"fbtrace_id":"bench"}}"#),
            )
        }))
    } else {
        Router::new().fallback(post(|body: axum::body::Bytes| async move {
            // Parse like the relay would, so the ceiling includes JSON decoding.
            let _ = serde_json::from_slice::<serde_json::Value>(&body);
            (
                StatusCode::ACCEPTED,
                [("content-type", "application/json")],
                "{}",
            )
        }))
    };
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

/// Digits as letters (`1984` -> `zpyv`), from letters that spell no term of the bundled
/// lexicon (`a`-`j` spelt `adhd`, and the relay replaces such an id).
fn letters(n: u64) -> String {
    n.to_string()
        .bytes()
        .map(|b| b"qzxwvkjyfp"[usize::from(b - b'0')] as char)
        .collect()
}

async fn load(
    label: String,
    url: String,
    consent_url: Option<String>,
    concurrency: usize,
    seconds: f64,
    rate: Option<f64>,
    events: usize,
) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let origin = "https://clinic.example";
    let token = match consent_url {
        Some(c) => {
            let r = client
                .post(c)
                .header("Origin", origin)
                .header("Content-Type", "text/plain")
                .body(r#"{"granted":true,"purposes":["advertising"],"source":"banner","policy_version":"2026-01"}"#)
                .send()
                .await
                .expect("consent request");
            let v: serde_json::Value = r.json().await.expect("consent json");
            v["consent_token"].as_str().map(str::to_string)
        }
        None => None,
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut accepted = 0u64;
            let mut errors = 0u64;
            let period = rate.map(|r| Duration::from_secs_f64(concurrency as f64 / r));
            let mut next = Instant::now() + period.map_or(Duration::ZERO, |p| p.mul_f64(w as f64 / concurrency as f64));
            let mut i = 0u64;
            loop {
                if period.is_some() {
                    tokio::time::sleep_until(next.into()).await;
                    if next >= deadline {
                        break;
                    }
                } else if Instant::now() >= deadline {
                    break;
                }
                let scheduled = if period.is_some() { next } else { Instant::now() };
                let consent = token
                    .as_ref()
                    .map(|t| format!(r#","consent_token":"{t}""#))
                    .unwrap_or_default();
                let mut batch = Vec::with_capacity(events);
                for _ in 0..events {
                    // Ids and click ids in the platforms' formats (digits as letters: no digit
                    // runs).
                    let id = format!("loadgen-{}-{}-event", letters(w as u64), letters(i));
                    i += 1;
                    batch.push(format!(
                        r#"{{"event":"BookedGLP1Consultation","event_id":"{id}","ttclid":"E.C.P.CqgBbench{lw}xYkLmQp","fbclid":"IwAR2F4-dbP0bench{lw}QQGCINEz7PYX","url":"https://clinic.example/book/glp1"{consent}}}"#,
                        lw = letters(w as u64)
                    ));
                }
                let body = match batch.as_slice() {
                    [one] => one.clone(),
                    many => format!(r#"{{"events":[{}]}}"#, many.join(",")),
                };
                let r = client
                    .post(&url)
                    .header("Origin", origin)
                    .header("Content-Type", "text/plain")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        accepted += events as u64;
                        lat.push(scheduled.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
                if let Some(p) = period {
                    next += p;
                }
            }
            (lat, accepted, errors)
        }));
    }
    let mut lat = Vec::new();
    let (mut accepted, mut errors) = (0, 0);
    for t in tasks {
        let (l, a, e) = t.await.expect("task");
        lat.extend(l);
        accepted += a;
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    println!(
        "RESULT label={label} mode={} concurrency={concurrency} seconds={elapsed:.1} accepted={accepted} errors={errors} events_per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        rate.map_or("closed-loop".to_string(), |r| format!("open-loop@{r}/s")),
        accepted as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        lat.last().map_or(0.0, |us| *us as f64 / 1000.0),
    );
}
