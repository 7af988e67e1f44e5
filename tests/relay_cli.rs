//! The `pixelwatch-relay` binary as an operator runs it: exit codes, secrets that never echo,
//! `check-config --no-secrets`, admin commands that refuse unknown ids and filter values, and a
//! port in use failing before the database is touched.

mod relay_support;

use std::path::Path;
use std::process::{Command, Output};

use relay_support::{Harness, Opts, ttclid};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_pixelwatch-relay");
/// A token-shaped value; it must never appear in any output.
const TOKEN: &str = "EAAGm0PX4ZCpsBA9f3c2aa7e41b5d6c8e0f1a2b3c4d";

fn run(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Output {
    command(args, config, env)
        .output()
        .expect("run the relay binary")
}

/// The relay binary with `args --config config`, only the given environment of its own, and
/// debug logs (so a leak would show).
fn command(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).arg("--config").arg(config);
    for var in [
        "PIXELWATCH_TIKTOK_ACCESS_TOKEN",
        "PIXELWATCH_META_ACCESS_TOKEN",
        "PIXELWATCH_RELAY_HMAC_SECRET",
        "PIXELWATCH_RELAY_CONFIG",
    ] {
        c.env_remove(var);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.env("PIXELWATCH_LOG", "debug");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn example(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("relay.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/relay.example.toml"),
        &p,
    )
    .expect("copy example");
    p
}

#[test]
fn exit_codes_and_check_config() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:0\"\nlisten_typo = 1\n",
    )
    .expect("write");
    let out = run(&["check-config"], &bad, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("listen_typo"), "{}", text(&out));

    let good = example(dir.path());
    let out = run(&["check-config"], &good, &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "missing tokens are a config error"
    );
    assert!(
        text(&out).contains("no access token for destination 'tiktok'"),
        "{}",
        text(&out)
    );
    let out = run(
        &["check-config"],
        &good,
        &[("PIXELWATCH_TIKTOK_ACCESS_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("'meta'") && text(&out).contains("PIXELWATCH_META_ACCESS_TOKEN"));
    let out = run(
        &["check-config"],
        &good,
        &[
            ("PIXELWATCH_TIKTOK_ACCESS_TOKEN", TOKEN),
            ("PIXELWATCH_META_ACCESS_TOKEN", TOKEN),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("BookedGLP1Consultation -> Schedule"), "{t}");
    assert!(t.contains("destination       meta (meta"), "{t}");
    assert!(!t.contains(TOKEN), "the token must never be printed");

    // CI has no secrets: everything else is still validated.
    let out = run(&["check-config", "--no-secrets"], &good, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("not checked (--no-secrets"),
        "{}",
        text(&out)
    );
    let out = run(&["check-config", "--no-secrets"], &bad, &[]);
    assert_eq!(out.status.code(), Some(3), "--no-secrets still validates");

    // Admin commands on a database that does not exist yet fail with a run error.
    assert_eq!(run(&["audit"], &good, &[]).status.code(), Some(1));
    let out = Command::new(BIN).arg("bogus").output().expect("run");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn secrets_pasted_into_the_config_are_never_echoed() {
    let dir = tempfile::tempdir().expect("dir");
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/relay.example.toml"))
        .expect("example");
    let anchor = "pixel_id = \"123456789012345\"";
    let cases = [
        (
            format!("{anchor}\naccess_token = \"{TOKEN}\""),
            "access_token",
        ),
        (
            format!("{anchor}\naccess_token_env = \"{TOKEN}\""),
            "access_token_env",
        ),
        (
            format!("{anchor}\naccess_token_env = \"{}\"", TOKEN.to_lowercase()),
            "access_token_env",
        ),
        (format!("{anchor}\ntimeout_ms = \"{TOKEN}\""), "timeout_ms"),
        (format!("{anchor}\n{TOKEN}"), "line"),
        (format!("{anchor}\nsend_fbp = {TOKEN}"), "send_fbp"),
    ];
    for (i, (replacement, key)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&p, base.replace(anchor, replacement)).expect("write");
        for cmd in [
            &["check-config"][..],
            &["check-config", "--no-secrets"],
            &["serve"],
        ] {
            let out = run(cmd, &p, &[]);
            let t = text(&out);
            assert_eq!(out.status.code(), Some(3), "{cmd:?} {key}: {t}");
            assert!(t.contains(key), "{cmd:?}: names the key: {t}");
            assert!(t.contains("line "), "{cmd:?}: names the line: {t}");
            assert!(
                !t.contains(&TOKEN[..16])
                    && !t.to_lowercase().contains(&TOKEN[..16].to_lowercase()),
                "{cmd:?}: echoed the secret: {t}"
            );
        }
    }
}

#[test]
fn serve_binds_the_port_before_touching_the_database() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let cfg = dir.path().join("relay.toml");
    let text_cfg =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/relay.example.toml"))
            .expect("example")
            .replace("127.0.0.1:8787", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, text_cfg).expect("write");
    let out = run(
        &["serve"],
        &cfg,
        &[
            ("PIXELWATCH_TIKTOK_ACCESS_TOKEN", TOKEN),
            ("PIXELWATCH_META_ACCESS_TOKEN", TOKEN),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot listen on"), "{}", text(&out));
    assert!(
        !dir.path().join("relay.db").exists(),
        "the database was created although the port was taken"
    );
}

#[tokio::test]
async fn admin_commands_refuse_unknown_ids_and_filter_values() {
    let mut h = Harness::start(Opts {
        legal_basis: Some("contract".into()),
        ..Opts::default()
    })
    .await;
    h.standin.push_modes([relay_support::Mode::Code(40002)]);
    let (s, v) = h
        .browser(
            "/v1/events",
            &json!({"event": "BookedGLP1Consultation", "ttclid": ttclid("admin"),
                    "diagnosis_code": "E11.9"}),
            false,
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let db = h.db.clone();
    relay_support::wait_for(10, "dead letter", || {
        pixelwatch::relay::audit::dead_letters(&db).is_ok_and(|d| d.len() == 1)
    })
    .await;
    h.shutdown().await;
    let cfg = h.dir.path().join("relay.toml");
    std::fs::write(
        &cfg,
        relay_support::config_text("127.0.0.1:0", &h.db, &h.standin, None, &h.opts),
    )
    .expect("write config");

    let out = run(&["audit", "--decision", "bogus"], &cfg, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = run(
        &["audit", "--decision", "dead_lettered", "--json"],
        &cfg,
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["destinations"]["tiktok"]["state"], "dead_lettered");

    // The operator can check a guess about an unknown field without the relay storing it.
    let reasons = rows[0]["reasons"].to_string();
    assert!(!reasons.contains("diagnosis"), "{reasons}");
    let out = run(&["field-hash", "diagnosis_code"], &cfg, &[]);
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(reasons.contains(&hash), "{hash} in {reasons}");

    let dead = pixelwatch::relay::audit::dead_letters(&h.db).expect("list");
    let out = run(&["replay", "--id", "99999"], &cfg, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("not dead letters: 99999"),
        "{}",
        text(&out)
    );
    let id = dead[0].id.to_string();
    let out = run(&["replay", "--id", &id, "--id", "99999"], &cfg, &[]);
    assert_eq!(out.status.code(), Some(3), "a mix replays nothing");
    assert_eq!(
        pixelwatch::relay::audit::dead_letters(&h.db)
            .expect("list")
            .len(),
        1
    );
    let out = run(&["replay", "--id", &id], &cfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        pixelwatch::relay::audit::dead_letters(&h.db)
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn a_second_serve_on_a_database_in_use_exits_with_a_clear_error() {
    let mut h = Harness::start(Opts::default()).await;
    let cfg = h.dir.path().join("second.toml");
    std::fs::write(
        &cfg,
        relay_support::config_text("127.0.0.1:0", &h.db, &h.standin, None, &h.opts),
    )
    .expect("write config");
    let mut child = command(
        &["serve"],
        &cfg,
        &[("PIXELWATCH_TIKTOK_ACCESS_TOKEN", TOKEN)],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn");
    // Bounded: a second relay that started serving would never exit by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a second relay served from a database in use");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("is in use by another pixelwatch-relay") && said.contains("relay.db.lock"),
        "{said}"
    );
    assert!(!said.contains(TOKEN), "{said}");
    h.shutdown().await;
}

#[tokio::test]
async fn serve_warns_of_pending_events_for_a_destination_no_longer_configured() {
    let mut h = Harness::start(Opts {
        meta: true,
        max_attempts: 10_000,
        ..Opts::default()
    })
    .await;
    // Meta keeps failing, so its copy of the event stays in the outbox.
    h.meta()
        .push_modes(std::iter::repeat_n(relay_support::Mode::Http(503), 10_000));
    let (s, v) = h.send_consented(&relay_support::evid(1), "orphan").await;
    assert_eq!(s, 202, "{v}");
    let st = h.standin.clone();
    relay_support::wait_for(10, "TikTok delivered", || st.events().len() == 1).await;
    h.shutdown().await;
    // The operator removes Meta from the config.
    let cfg = h.dir.path().join("tiktok-only.toml");
    let mut opts = h.opts.clone();
    opts.meta = false;
    std::fs::write(
        &cfg,
        relay_support::config_text("127.0.0.1:0", &h.db, &h.standin, None, &opts),
    )
    .expect("write config");
    let log = std::fs::File::create(h.dir.path().join("serve.log")).expect("log");
    let mut child = command(
        &["serve"],
        &cfg,
        &[("PIXELWATCH_TIKTOK_ACCESS_TOKEN", TOKEN)],
    )
    .stdout(std::process::Stdio::null())
    .stderr(log)
    .spawn()
    .expect("spawn");
    let path = h.dir.path().join("serve.log");
    let said = || std::fs::read_to_string(&path).unwrap_or_default();
    // Bounded: the warning comes at start, before "relay listening".
    relay_support::wait_for(20, "the relay listening", || {
        said().contains("relay listening")
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let said = said();
    let warning = said
        .lines()
        .find(|l| l.contains("for a destination that is not configured"))
        .unwrap_or_else(|| panic!("no warning: {said}"));
    assert!(
        warning.contains("destination=meta") && warning.contains("pending=1"),
        "{warning}"
    );
}
