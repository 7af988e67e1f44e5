//! `pixelwatch watch` run as a user runs it: a config with a per-second schedule, a real SMTP
//! server, a fixture site that changes between runs, a second site that is down; then SIGTERM,
//! and `prune` on the history it left.

mod alert_support;
mod outputs_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alert_support::{SmtpSink, parse, site};
use pixelwatch::fixture::FixtureServer;
use pixelwatch::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_pixelwatch");

/// Runs of `site` with `outcome`, read straight from the SQLite file while `watch` writes it.
fn runs(db: &Path, site: &str, outcome: &str) -> usize {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM watch_runs WHERE site = ?1 AND outcome = ?2",
            [site, outcome],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0) as usize
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn subjects(sink: &SmtpSink, containing: &str) -> usize {
    sink.messages()
        .iter()
        .filter(|m| {
            parse(&m.data)
                .header("subject")
                .unwrap_or("")
                .contains(containing)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_alerts_once_per_drift_and_once_per_outage_then_stops_on_sigterm() {
    let changed = Arc::new(AtomicBool::new(false));
    let server = FixtureServer::start(site(changed.clone())).await.unwrap();
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let browser_args = server.browser_args();

    // Approve today's state first, as a user would.
    let mut scan = outputs_support::scan_command(
        "scan",
        "https://www.clinic.test/",
        db.to_str().unwrap(),
        &server,
    );
    scan.push("--quiet".into());
    let out = tokio::process::Command::new(BIN)
        .args(&scan)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = tokio::process::Command::new(BIN)
        .args(["baseline", "approve", "--db", db.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    let args = serde_json::to_string(&browser_args).unwrap();
    let config = format!(
        r#"db = "{db}"
max_concurrent_scans = 2
alert_after_failures = 2

[[site]]
url = "https://www.clinic.test/"
schedule = "* * * * * *"
sitemaps = false
concurrency = 2
settle_quiet_ms = 200
settle_max_ms = 1500
browser_args = {args}

[[site]]
url = "https://down.clinic.test/"
schedule = "* * * * * *"
sitemaps = false
page_timeout_secs = 5
browser_args = {args}

[retry]
attempts = 2
backoff_ms = 50

{email}"#,
        db = db.display(),
        email = sink.email_toml()
    );
    let cfg = dir.path().join("pixelwatch.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["-v", "watch", "--config", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let site = "https://www.clinic.test/";
    let down = "https://down.clinic.test/";
    // Unchanged rescans: no drift email.
    wait_for("two unchanged rescans", Duration::from_secs(60), || {
        runs(&db, site, "ok") >= 2
    })
    .await;
    assert_eq!(subjects(&sink, "new tracking"), 0);

    // The pixel appears: exactly one email, however many scans see it.
    changed.store(true, Ordering::SeqCst);
    wait_for("the drift email", Duration::from_secs(60), || {
        subjects(&sink, "new tracking") >= 1
    })
    .await;
    let seen = runs(&db, site, "ok");
    wait_for("two more rescans", Duration::from_secs(60), || {
        runs(&db, site, "ok") >= seen + 2
    })
    .await;
    assert_eq!(subjects(&sink, "new tracking"), 1);
    let drift_mail = sink
        .messages()
        .into_iter()
        .map(|m| parse(&m.data))
        .find(|m| m.header("subject").unwrap_or("").contains("new tracking"))
        .unwrap();
    assert!(
        drift_mail
            .text
            .unwrap()
            .contains("[CRITICAL] page: https://www.clinic.test/services/deep/booking")
    );

    // The site that is down: one alert after two consecutive failures, not one per failure.
    wait_for(
        "three failed runs of the down site",
        Duration::from_secs(60),
        || runs(&db, down, "failed") >= 3,
    )
    .await;
    assert_eq!(subjects(&sink, "could not be scanned 2 times in a row"), 1);
    assert_eq!(subjects(&sink, down), 1);

    // SIGTERM: a clean, prompt exit with status 0.
    let pid = child.id().unwrap() as i32;
    // SAFETY: signalling the child process this test started, by its pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("watch exits promptly on SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");

    // Every alert is in the history, sent.
    let store = Store::open(&db).await.unwrap();
    let alerts = store.list_alerts(100).await.unwrap();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts.iter().all(|a| a.status == "sent"));

    // prune keeps the newest N scans per site, and the approved baseline's scan.
    let before = store.list_scans(Some(site), 1000).await.unwrap();
    assert!(before.len() >= 5);
    let baseline_scan = store.baseline(site).await.unwrap().scan_id.unwrap();
    drop(store);
    let out = tokio::process::Command::new(BIN)
        .args(["prune", "--keep", "2", "--db", db.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let store = Store::open(&db).await.unwrap();
    let after: Vec<i64> = store
        .list_scans(Some(site), 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(after, vec![before[0].id, before[1].id, baseline_scan]);
    assert!(store.list_scans(Some(down), 1000).await.unwrap().len() <= 2);
}
