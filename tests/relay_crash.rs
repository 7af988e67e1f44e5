//! Crash test: run the real binary, SIGKILL it mid-delivery, restart, and check that every
//! accepted event reached the TikTok stand-in (by event_id) and nothing else did.

mod relay_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use relay_support::{Mode, Opts, StandIn, config_text, wait_for};
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn(config: &std::path::Path, token: &str, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_pixelwatch-relay"))
        .args(["serve", "--config"])
        .arg(config)
        .env("PIXELWATCH_TIKTOK_ACCESS_TOKEN", token)
        .env("PIXELWATCH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn relay binary")
}

async fn wait_healthy(base: &str) {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("relay did not become healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_loses_no_accepted_event() {
    let standin = StandIn::start().await;
    // Every request is slow, so batches are in flight when the kill lands.
    standin.push_modes(std::iter::repeat_n(
        Mode::Slow(Duration::from_millis(150)),
        40,
    ));
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let opts = Opts {
        legal_basis: Some("contract: test".into()),
        batch_size: 25,
        ..Opts::default()
    };
    let cfg_path = dir.path().join("relay.toml");
    let text = config_text(
        &format!("127.0.0.1:{port}"),
        &dir.path().join("relay.db"),
        &standin,
        &opts,
    );
    std::fs::write(&cfg_path, text).expect("write config");

    let log = dir.path().join("relay.log");
    let mut child = spawn(&cfg_path, &standin.token, &log);
    wait_healthy(&base).await;

    // Producers: 8 concurrent senders, single-event requests, until the relay dies.
    let http = reqwest::Client::new();
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut producers = Vec::new();
    for p in 0..8u32 {
        let http = http.clone();
        let base = base.clone();
        let accepted = accepted.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..10_000u32 {
                let id = format!("{p:08x}{i:08x}");
                let ev = json!({"event": "BookedGLP1Consultation", "event_id": id, "ttclid": "E.C.P.crash",
                    "email": "jane.doe@example.com", "url": "https://clinic.example/book/ozempic?dob=1984-03-07"});
                let r = http
                    .post(format!("{base}/v1/events"))
                    .header("Origin", relay_support::ORIGIN)
                    .body(ev.to_string())
                    .send()
                    .await;
                let Ok(r) = r else { break };
                if r.status().as_u16() != 202 {
                    break;
                }
                let Ok(v) = r.json::<Value>().await else { break };
                if v["results"][0]["decision"] == "accepted" {
                    accepted.lock().unwrap().insert(id);
                }
            }
        }));
    }
    // Kill once deliveries are in flight and plenty of events are queued.
    let st = standin.clone();
    let acc = accepted.clone();
    wait_for(30, "deliveries in flight", || {
        st.requests() >= 3 && acc.lock().unwrap().len() >= 300
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    for p in producers {
        let _ = p.await;
    }
    let accepted: BTreeSet<String> = accepted.lock().unwrap().clone();
    let before = standin.events().len();
    assert!(
        before < accepted.len(),
        "the kill should leave undelivered events ({before}/{})",
        accepted.len()
    );

    // Restart on the same database with a healthy TikTok.
    standin.push_modes(std::iter::empty());
    let mut child = spawn(&cfg_path, &standin.token, &log);
    wait_healthy(&base).await;
    let st = standin.clone();
    let want = accepted.clone();
    wait_for(60, "every accepted event delivered", || {
        let got: BTreeSet<String> = st
            .events()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap_or_default().to_string())
            .collect();
        want.is_subset(&got)
    })
    .await;

    // Graceful stop of the second process (SIGTERM) exits 0.
    // SAFETY: sending a signal to our own child by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "SIGTERM exit: {status:?}");

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in standin.events() {
        *counts
            .entry(e["event_id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let got: BTreeSet<String> = counts.keys().cloned().collect();
    let lost: Vec<_> = accepted.difference(&got).collect();
    assert!(lost.is_empty(), "accepted but never delivered: {lost:?}");
    // Events committed in the instant of the kill may have been stored without their 202
    // reaching the client (the client would retry them with the same event_id). At most one
    // such request per producer; nothing else may appear.
    let extra: Vec<_> = got.difference(&accepted).collect();
    assert!(extra.len() <= 8, "unexpected deliveries: {extra:?}");
    // At-least-once: only a batch that was in flight at the kill may be repeated (TikTok
    // de-duplicates it by event_id), never more than one repeat per event.
    let repeats: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeats.iter().all(|(_, n)| **n == 2), "{repeats:?}");
    assert!(
        repeats.len() <= 2 * 25,
        "repeats beyond the in-flight batches: {}",
        repeats.len()
    );
    eprintln!(
        "crash test: accepted {}, delivered before kill {before}, repeated after restart {}, committed-but-unacknowledged {}",
        accepted.len(),
        repeats.len(),
        extra.len()
    );
    // Logs at info and above: no event values, no token.
    let logs = std::fs::read_to_string(&log).expect("logs").to_lowercase();
    assert!(
        logs.contains("relay listening"),
        "logs were captured: {logs}"
    );
    for secret in [
        "jane",
        "ozempic",
        "1984-03-07",
        &standin.token.to_lowercase(),
    ] {
        assert!(!logs.contains(secret), "{secret:?} in the relay's logs");
    }
    let c = rusqlite::Connection::open(dir.path().join("relay.db")).expect("db");
    let pending: i64 = c
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .expect("count");
    assert_eq!(pending, 0);
}

#[test]
fn binary_exit_codes_and_admin_commands() {
    let bin = env!("CARGO_BIN_EXE_pixelwatch-relay");
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:0\"\nlisten_typo = 1\n",
    )
    .expect("write");
    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_typo"));
    let good = dir.path().join("relay.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/relay.example.toml"),
        &good,
    )
    .expect("copy example");
    let run = |args: &[&str], token: Option<&str>| {
        let mut c = Command::new(bin);
        c.args(args).arg("--config").arg(&good);
        c.env_remove("PIXELWATCH_TIKTOK_ACCESS_TOKEN");
        if let Some(t) = token {
            c.env("PIXELWATCH_TIKTOK_ACCESS_TOKEN", t);
        }
        c.output().expect("run")
    };
    let out = run(&["check-config"], None);
    assert_eq!(
        out.status.code(),
        Some(3),
        "missing token is a config error"
    );
    let out = run(&["check-config"], Some("secret-token-value"));
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BookedGLP1Consultation -> Schedule"),
        "{text}"
    );
    assert!(
        !text.contains("secret-token-value"),
        "the token must never be printed"
    );
    // Admin commands on a database that does not exist yet fail with a run error.
    let out = run(&["audit"], None);
    assert_eq!(out.status.code(), Some(1));
    let out = Command::new(bin).arg("bogus").output().expect("run");
    assert_eq!(out.status.code(), Some(3));
}
