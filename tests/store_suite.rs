//! The same command suite on both stores: a SQLite file and a real PostgreSQL server started by
//! the harness. Sites (add, list, show, set, remove, import), a real scan in Chromium, scans
//! list/show, baseline approve/export, diff before and after a pixel appears, prune; fleet
//! commands refuse SQLite with exit 3. Also: migrations applied by processes starting at once,
//! and an old SQLite history keeping what its per-page tables told.

mod alert_support;
mod outputs_support;
mod pg_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use outputs_support::{assert_exit, run, s, scan_command, text};
use pg_support::PgServer;
use pixelwatch::fixture::FixtureServer;
use pixelwatch::store::{DbTarget, Store};

/// One browser scan at a time in this binary.
static SCANNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn with_db(args: &[&str], db: &str) -> Vec<String> {
    let mut v = s(args);
    v.extend(["--db".to_string(), db.to_string()]);
    v
}

async fn ok(args: &[&str], db: &str) -> String {
    let out = run(&with_db(args, db)).await;
    assert_exit(&out, 0);
    text(&out.stdout)
}

async fn exit(args: &[&str], db: &str) -> (i32, String) {
    let out = run(&with_db(args, db)).await;
    (out.status.code().unwrap_or(-1), text(&out.stderr))
}

async fn suite(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    // Sites, from a config file and by hand.
    let cfg = dir.path().join("pixelwatch.toml");
    std::fs::write(
        &cfg,
        r#"[[site]]
url = "https://a.clinic.test"
schedule = "0 3 * * *"
max_pages = 20
consent = "reject"

[[site]]
url = "https://b.clinic.test/"
schedule = "30 */6 * * *"
"#,
    )
    .unwrap();
    let out = ok(&["sites", "import", "--config", cfg.to_str().unwrap()], db).await;
    assert!(out.contains("2 added, 0 updated, 0 unchanged"), "{out}");
    let out = ok(&["sites", "import", "--config", cfg.to_str().unwrap()], db).await;
    assert!(out.contains("0 added, 0 updated, 2 unchanged"), "{out}");
    ok(
        &[
            "sites",
            "add",
            "https://c.clinic.test/",
            "--schedule",
            "*/5 * * * *",
            "--settle-max",
            "1500",
            "--no-probe-forms",
        ],
        db,
    )
    .await;
    let (code, err) = exit(
        &[
            "sites",
            "add",
            "https://c.clinic.test/",
            "--schedule",
            "0 * * * *",
        ],
        db,
    )
    .await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("already stored"), "{err}");
    for bad in [
        vec!["sites", "add", "https://d.test/", "--schedule", "every day"],
        vec![
            "sites",
            "add",
            "https://d.test/",
            "--schedule",
            "0 3 * * *",
            "--exclude",
            "(",
        ],
        vec!["sites", "add", "d.test", "--schedule", "0 3 * * *"],
        vec!["sites", "remove", "https://nowhere.test/"],
        vec![
            "sites",
            "set",
            "https://c.clinic.test/",
            "--unset",
            "max_pagez",
        ],
    ] {
        let (code, err) = exit(&bad, db).await;
        assert_eq!(code, 3, "{bad:?}: {err}");
    }
    let lines = ok(&["sites", "list", "--json"], db).await;
    let sites: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sites.len(), 3, "{lines}");
    assert_eq!(sites[0]["url"], "https://a.clinic.test/", "normalised");
    assert_eq!(sites[0]["settings"]["consent"], "reject");
    ok(
        &[
            "sites",
            "set",
            "https://a.clinic.test/",
            "--max-pages",
            "5",
            "--unset",
            "consent",
            "--schedule",
            "15 4 * * *",
        ],
        db,
    )
    .await;
    let show: serde_json::Value =
        serde_json::from_str(&ok(&["sites", "show", "https://a.clinic.test/", "--json"], db).await)
            .unwrap();
    assert_eq!(show["site"]["schedule"], "15 4 * * *");
    assert_eq!(
        show["site"]["settings"],
        serde_json::json!({"max_pages": 5})
    );
    assert_eq!(show["effective"]["max_pages"], 5);
    assert_eq!(show["effective"]["consent"], "none", "the default again");
    assert_eq!(show["effective"]["max_depth"], 5);
    ok(
        &[
            "sites",
            "set",
            "https://c.clinic.test/",
            "--submit-forms",
            "staging.clinic.test",
        ],
        db,
    )
    .await;
    let out = ok(&["sites", "show", "https://c.clinic.test/"], db).await;
    assert!(
        out.contains(
            "settle_max_ms = 1500\nprobe_forms = false\nsubmit_forms = \"staging.clinic.test\""
        ),
        "{out}"
    );
    ok(&["sites", "remove", "https://b.clinic.test/"], db).await;
    assert_eq!(
        ok(&["sites", "list", "--json"], db).await.lines().count(),
        2
    );

    // Scans, baselines, drift and pruning, with a real browser.
    let changed = Arc::new(AtomicBool::new(false));
    let server = FixtureServer::start(alert_support::site(changed.clone()))
        .await
        .unwrap();
    let site = "https://www.clinic.test/";
    let scan = || {
        let mut v = scan_command("scan", site, db, &server);
        v.push("--quiet".into());
        v
    };
    {
        let _one = SCANNING.lock().await;
        assert_exit(&run(&scan()).await, 0);
    }
    let rows = ok(&["scans", "list", "--json"], db).await;
    let first: serde_json::Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    let id = first["id"].as_i64().unwrap().to_string();
    assert_eq!(first["site"], site);
    assert_eq!(first["pages"], 3);
    let report: serde_json::Value =
        serde_json::from_str(&ok(&["scans", "show", &id, "--json"], db).await).unwrap();
    assert_eq!(report["schema"], "pixelwatch.scan/v1");
    assert_eq!(report["id"].to_string(), id);
    let (code, err) = exit(&["diff"], db).await;
    assert_eq!(code, 3, "no baseline yet: {err}");
    ok(&["baseline", "approve", "--site", site], db).await;
    let exported = dir.path().join("baseline.json");
    ok(&["baseline", "export", exported.to_str().unwrap()], db).await;
    assert!(
        std::fs::read_to_string(&exported)
            .unwrap()
            .contains("pixelwatch.baseline/v2")
    );
    ok(&["diff"], db).await;
    changed.store(true, Ordering::SeqCst);
    {
        let _one = SCANNING.lock().await;
        assert_exit(&run(&scan()).await, 0);
    }
    let out = run(&with_db(&["diff", "--site", site], db)).await;
    assert_exit(&out, 2);
    assert!(
        text(&out.stdout).contains("analytics.tiktok.com"),
        "{}",
        text(&out.stdout)
    );
    // The HTML report reads when each vendor was first seen from the store.
    let html = dir.path().join("d.html");
    let out = run(&with_db(&["diff", "--html", html.to_str().unwrap()], db)).await;
    assert_exit(&out, 2);
    assert!(std::fs::read_to_string(&html).unwrap().contains("TikTok"));
    // A third scan, then prune to 1: the newest and the baseline's scan stay.
    {
        let _one = SCANNING.lock().await;
        assert_exit(&run(&scan()).await, 0);
    }
    let out = ok(&["prune", "--keep", "1"], db).await;
    assert!(out.contains("deleted 1 scan(s)"), "{out}");
    let ids: Vec<String> = ok(&["scans", "list", "--json"], db)
        .await
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], id, "the baseline's scan is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_suite_passes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("suite.db");
    suite(db.to_str().unwrap()).await;
    // The fleet's queue needs PostgreSQL: a clear usage error, not a crash.
    for cmd in [
        vec!["worker"],
        vec!["scheduler"],
        vec!["jobs", "list"],
        vec!["jobs", "add", "--all"],
    ] {
        let (code, err) = exit(&cmd, db.to_str().unwrap()).await;
        assert_eq!(code, 3, "{cmd:?}: {err}");
        assert!(err.contains("needs a PostgreSQL store"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_suite_passes_on_postgres() {
    let url = PgServer::shared().fresh_db().await;
    suite(&url).await;
    let out = ok(&["jobs", "add", "--all"], &url).await;
    assert!(out.contains("queued 2 scan(s)"), "{out}");
    let jobs = ok(&["jobs", "list", "--state", "queued", "--json"], &url).await;
    assert_eq!(jobs.lines().count(), 2, "{jobs}");
    // prune also deletes queue jobs that ended long ago, and only those.
    pg_support::connect(&url)
        .await
        .batch_execute(
            "UPDATE jobs SET state = 'done', finished_at = now() - interval '40 days'
             WHERE id = (SELECT min(id) FROM jobs)",
        )
        .await
        .unwrap();
    let out = ok(&["prune", "--keep", "5", "--jobs-older-than", "30"], &url).await;
    assert!(out.contains("deleted 1 queue job(s)"), "{out}");
    assert_eq!(
        ok(&["jobs", "list", "--json"], &url).await.lines().count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_a_clear_run_error_that_hides_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://pw:hunter2@127.0.0.1:{port}/x");
    let (code, err) = exit(&["scans", "list"], &url).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be reached"), "{err}");
    assert!(err.contains(&format!("pw:***@127.0.0.1:{port}/x")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // A scan still runs and keeps its report when the database is down.
    let changed = Arc::new(AtomicBool::new(false));
    let server = FixtureServer::start(alert_support::site(changed))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("kept.json");
    let mut scan = scan_command("scan", "https://www.clinic.test/", &url, &server);
    scan.extend([
        "--quiet".into(),
        "--json".into(),
        json.display().to_string(),
    ]);
    let out = {
        let _one = SCANNING.lock().await;
        run(&scan).await
    };
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("the report was saved to"),
        "{}",
        text(&out.stderr)
    );
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(kept["summary"]["pages"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_is_verified_against_the_mozilla_roots_and_the_named_ca() {
    let (pg, ca) = PgServer::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let url = format!("{}?sslmode=require", pg.url("postgres"));
    let list = |ca: Option<&std::path::Path>| {
        let mut c = tokio::process::Command::new(outputs_support::BIN);
        c.args(["sites", "list", "--db", &url])
            .env_remove("PIXELWATCH_DB");
        match ca {
            Some(f) => c.env(pixelwatch::store::db::CA_FILE_ENV, f),
            None => c.env_remove(pixelwatch::store::db::CA_FILE_ENV),
        };
        c.output()
    };
    // The server's CA is not a public one: refused, and the message says why.
    let out = list(None).await.unwrap();
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("UnknownIssuer"),
        "{}",
        text(&out.stderr)
    );
    // Named in PIXELWATCH_DB_CA_FILE, it is trusted (and the server takes TLS only).
    let out = list(Some(&ca_file)).await.unwrap();
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains("no sites stored"));
    // A CA file that holds no certificate is bad input.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = list(Some(&empty)).await.unwrap();
    assert_exit(&out, 3);
    assert!(
        text(&out.stderr).contains("no certificate"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_at_once_apply_each_migration_once() {
    // SQLite: eight connections race to migrate a new file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("race.db");
    let opens = (0..8).map(|_| {
        let f = file.clone();
        tokio::spawn(async move { Store::open(&f).await.map(|_| ()) })
    });
    for r in futures_util::future::join_all(opens).await {
        r.unwrap().unwrap();
    }
    let v: i64 = rusqlite::Connection::open(&file)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, pixelwatch::store::db::SQLITE_MIGRATIONS.len());
    // PostgreSQL: eight processes' pools race on a new database.
    let url = PgServer::shared().fresh_db().await;
    let opens = (0..8).map(|_| {
        let target: DbTarget = url.parse().unwrap();
        tokio::spawn(async move { Store::open(&target).await.map(|_| ()) })
    });
    for r in futures_util::future::join_all(opens).await {
        r.unwrap().unwrap();
    }
    let rows = pg_support::connect(&url)
        .await
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        pixelwatch::store::db::POSTGRES_MIGRATIONS.len(),
        "each migration recorded once"
    );
}

#[tokio::test]
async fn an_old_sqlite_history_keeps_when_each_vendor_was_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.db");
    {
        // The schema before the fleet (migrations 1-3), with a scan in its per-page tables.
        let c = rusqlite::Connection::open(&file).unwrap();
        for m in &pixelwatch::store::db::SQLITE_MIGRATIONS[..3] {
            c.execute_batch(m.sql).unwrap();
        }
        c.execute_batch(
            "PRAGMA user_version = 3;
             INSERT INTO scans VALUES (1, 'https://o.test/', 'a', '2026-01-02T00:00:00Z', 'none',
                1, 0, 1, 1, 0, 0, NULL, '{}');
             INSERT INTO pages VALUES (1, 1, 'https://o.test/', 'https://o.test/', 200, NULL, 0, 'start');
             INSERT INTO requests VALUES (1, 1, 'https://analytics.tiktok.com/x', 'analytics.tiktok.com',
                'GET', 'Script', NULL, 200, 1, 'tiktok');",
        )
        .unwrap();
    }
    let store = Store::open(&file).await.unwrap();
    let seen = store.vendors_first_seen("https://o.test/").await.unwrap();
    assert_eq!(
        seen.get("tiktok").map(String::as_str),
        Some("2026-01-02T00:00:00Z")
    );
    let tables: Vec<String> = {
        let c = rusqlite::Connection::open(&file).unwrap();
        let mut st = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(!tables.contains(&"requests".to_string()), "{tables:?}");
    assert!(tables.contains(&"sites".to_string()), "{tables:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_its_history_in_postgres_too() {
    let url = PgServer::shared().fresh_db().await;
    let server = FixtureServer::start(alert_support::site(Arc::new(AtomicBool::new(false))))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[site]]\nurl = \"https://www.clinic.test/\"\nschedule = \"* * * * * *\"\n\
             sitemaps = false\nsettle_quiet_ms = 200\nsettle_max_ms = 1500\nbrowser_args = {}\n",
            serde_json::to_string(&server.browser_args()).unwrap()
        ),
    )
    .unwrap();
    let _one = SCANNING.lock().await;
    let mut watch = tokio::process::Command::new(outputs_support::BIN)
        .args(["watch", "--config", cfg.to_str().unwrap(), "--db", &url])
        .env_remove("PIXELWATCH_DB")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let store = Store::open(url.parse::<DbTarget>().unwrap()).await.unwrap();
    let start = std::time::Instant::now();
    while store.watch_runs(None).await.unwrap().is_empty() {
        assert!(start.elapsed().as_secs() < 60, "no watch run recorded");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // SAFETY: signalling the process this test started, by its pid.
    unsafe { libc::kill(watch.id().unwrap() as i32, libc::SIGTERM) };
    assert_eq!(watch.wait().await.unwrap().code(), Some(0));
    let runs = store.watch_runs(None).await.unwrap();
    assert_eq!(runs[0].outcome, "ok", "{runs:?}");
    let scan = store.load_scan(runs[0].scan_id.unwrap()).await.unwrap();
    assert_eq!(scan.site, "https://www.clinic.test/");
}
