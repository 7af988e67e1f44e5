//! Alerts against real local destinations: a drift found by two real scans is mailed through an
//! SMTP server over TCP (text and HTML, checked as a snapshot), not re-sent while unchanged,
//! retried and recorded when the server refuses, re-sent on the next run, and posted to a
//! webhook as Slack-compatible JSON.

mod alert_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use alert_support::{HOST, SmtpSink, parse, site};
use pixelwatch::alert::{Alerter, DriftAlert};
use pixelwatch::config::Config;
use pixelwatch::diff::{Baseline, Drift};
use pixelwatch::fixture::FixtureServer;
use pixelwatch::model::ScanReport;
use pixelwatch::scan::{self, ScanOptions, Silent};
use pixelwatch::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_pixelwatch");

/// The two real scans (before and after the pixel appeared), made once per test binary.
static SCANS: tokio::sync::OnceCell<(ScanReport, ScanReport)> = tokio::sync::OnceCell::const_new();

async fn scans() -> &'static (ScanReport, ScanReport) {
    SCANS
        .get_or_init(|| async {
            let changed = Arc::new(AtomicBool::new(false));
            let server = FixtureServer::start(site(changed.clone())).await.unwrap();
            let opts = ScanOptions {
                start: format!("https://{HOST}/"),
                sitemaps: false,
                concurrency: 2,
                settle_quiet: std::time::Duration::from_millis(200),
                settle_max: std::time::Duration::from_millis(1500),
                browser_args: server.browser_args(),
                ..Default::default()
            };
            let before = scan::run(&opts, Arc::new(Silent)).await.unwrap();
            changed.store(true, Ordering::SeqCst);
            let after = scan::run(&opts, Arc::new(Silent)).await.unwrap();
            (before, after)
        })
        .await
}

/// A fresh database holding both scans (ids 1 and 2) with scan 1 approved; returns the drift.
async fn setup(dir: &std::path::Path) -> (Store, Baseline, ScanReport, Drift) {
    let (before, after) = scans().await;
    let store = Store::open(&dir.join("a.db")).await.unwrap();
    let mut before = before.clone();
    let mut after = after.clone();
    store.save_scan(&mut before).await.unwrap();
    store.save_scan(&mut after).await.unwrap();
    let baseline = Baseline::from_scan(&before);
    store.approve_baseline(&baseline).await.unwrap();
    let drift = pixelwatch::diff::diff(&baseline, &after);
    (store, baseline, after, drift)
}

fn config(extra: &str) -> Config {
    Config::parse(
        &format!("[retry]\nattempts = 3\nbackoff_ms = 20\nmax_backoff_ms = 100\n{extra}"),
        "test.toml",
    )
    .unwrap()
}

/// The text part, timestamps redacted.
const EMAIL_TEXT: &str = "\
New tracking on https://www.clinic.test/
Highest severity: CRITICAL
Scan #2 finished <TIME>.
Compared with the baseline approved <TIME> (scan #1).

New findings (2):
  critical tracker tiktok [vendors.toml:tiktok]
    [CRITICAL] page: https://www.clinic.test/services/deep/booking
      request:  https://analytics.tiktok.com/i18n/pixel/events.js
      evidence: TikTok Pixel (advertising, offers no BAA (checked 2026-11-01)) loaded: Script request to analytics.tiktok.com matched host pattern 'analytics.tiktok.com'
  high no_consent tiktok [consent:none]
    [HIGH] page: https://www.clinic.test/services/deep/booking
      request:  https://analytics.tiktok.com/i18n/pixel/events.js
      evidence: TikTok Pixel sent a Script request to analytics.tiktok.com before any consent interaction (the scan never clicks a banner)

What appeared (6):
  + vendor             tiktok  (on https://www.clinic.test/services/deep/booking)
  + tracker_host       analytics.tiktok.com  (on https://www.clinic.test/services/deep/booking)
  + third_party_host   analytics.tiktok.com  (on https://www.clinic.test/services/deep/booking)
  + third_party_script https://analytics.tiktok.com/i18n/pixel/events.js  (on https://www.clinic.test/services/deep/booking)
  + finding            critical tracker tiktok [vendors.toml:tiktok]  (on https://www.clinic.test/services/deep/booking)
  + finding            high no_consent tiktok [consent:none]  (on https://www.clinic.test/services/deep/booking)

This drift is not sent again until it changes. If the change is intended, approve it:
  pixelwatch baseline approve --site https://www.clinic.test/ --scan 2
";

fn redact(s: &str) -> String {
    regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
        .unwrap()
        .replace_all(s, "<TIME>")
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_mailed_once_as_text_and_html() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, baseline, report, drift) = setup(dir.path()).await;
    let alerter = Alerter::from_config(&config(&sink.email_toml())).unwrap();

    let r = alerter
        .on_drift(&store, &drift, &report, Some(&baseline))
        .await
        .unwrap();
    assert!(
        matches!(&r, DriftAlert::Sent(o) if o.len() == 1 && o[0].error.is_none()),
        "{r:?}"
    );
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpt_to, vec!["<privacy@clinic.test>"]);
    let mail = parse(&msgs[0].data);
    let subject = mail.header("subject").unwrap();
    assert_eq!(
        subject,
        "[pixelwatch] CRITICAL: new tracking on https://www.clinic.test/ (tiktok)"
    );
    let text = redact(mail.text.as_deref().expect("a text/plain part"));
    assert_eq!(text, EMAIL_TEXT, "{text}");
    let html = mail.html.as_deref().expect("a text/html part");
    assert!(
        html.contains("<h2>New tracking on https://www.clinic.test/</h2>"),
        "{html}"
    );
    assert!(
        html.contains("<td>https://www.clinic.test/services/deep/booking</td>"),
        "{html}"
    );
    assert!(html.contains("<strong>CRITICAL</strong>"), "{html}");

    // The same drift again: nothing is sent.
    let r = alerter
        .on_drift(&store, &drift, &report, Some(&baseline))
        .await
        .unwrap();
    assert_eq!(r, DriftAlert::AlreadyAlerted);
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_is_retried_recorded_as_failed_and_delivered_next_run() {
    let sink = SmtpSink::start().await;
    sink.refuse(true);
    let dir = tempfile::tempdir().unwrap();
    let (store, baseline, report, drift) = setup(dir.path()).await;
    let alerter = Alerter::from_config(&config(&sink.email_toml())).unwrap();

    let r = alerter
        .on_drift(&store, &drift, &report, Some(&baseline))
        .await
        .unwrap();
    let DriftAlert::Sent(outcomes) = r else {
        panic!("{r:?}")
    };
    assert_eq!(outcomes[0].attempts, 3);
    assert!(
        outcomes[0].error.as_deref().unwrap().contains("451"),
        "{outcomes:?}"
    );
    assert_eq!(sink.data_attempts(), 3, "three bounded attempts");
    assert!(sink.messages().is_empty());
    let rows = store.list_alerts(10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("failed", 3));
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("try again later")
    );
    // The same drift is not alerted twice: the failed row is what gets re-sent.
    assert_eq!(
        alerter
            .on_drift(&store, &drift, &report, Some(&baseline))
            .await
            .unwrap(),
        DriftAlert::AlreadyAlerted
    );

    // Next run: the server accepts again and the recorded alert is delivered.
    sink.refuse(false);
    let resent = alerter.resend_failed(&store, None).await.unwrap();
    assert_eq!(resent.len(), 1);
    assert!(resent[0].error.is_none(), "{resent:?}");
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert!(
        parse(&msgs[0].data)
            .text
            .unwrap()
            .contains("+ vendor             tiktok")
    );
    let rows = store.list_alerts(10).await.unwrap();
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("sent", 4));
    assert!(rows[0].sent_at.is_some());
    assert!(
        alerter
            .resend_failed(&store, None)
            .await
            .unwrap()
            .is_empty()
    );

    // Approving the new state clears the drift; the pixel disappearing and reappearing later
    // would be alerted again.
    let approved = Baseline::from_scan(&report);
    store.approve_baseline(&approved).await.unwrap();
    let none = pixelwatch::diff::diff(&approved, &report);
    assert_eq!(
        alerter
            .on_drift(&store, &none, &report, Some(&approved))
            .await
            .unwrap(),
        DriftAlert::NothingNew
    );
    assert_eq!(store.drift_fingerprint(&report.site).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_slack_compatible_json_and_a_5xx_is_retried() {
    use axum::{Json, Router, http::StatusCode, routing::post};
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (b, c) = (bodies.clone(), calls.clone());
    let app = Router::new().route(
        "/hook/T123/secret",
        post(move |Json(v): Json<serde_json::Value>| async move {
            // The first call fails with 503: the alert must be retried.
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            b.lock().unwrap().push(v);
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let (store, baseline, report, drift) = setup(dir.path()).await;
    let alerter = Alerter::from_config(&config(&format!(
        "[webhook]\nurl = \"http://127.0.0.1:{port}/hook/T123/secret\"\n"
    )))
    .unwrap();
    let r = alerter
        .on_drift(&store, &drift, &report, Some(&baseline))
        .await
        .unwrap();
    let DriftAlert::Sent(outcomes) = r else {
        panic!("{r:?}")
    };
    assert_eq!((outcomes[0].channel, outcomes[0].attempts), ("webhook", 2));
    assert!(outcomes[0].error.is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    let v = &bodies[0];
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "*[pixelwatch] CRITICAL: new tracking on https://www.clinic.test/ (tiktok)*\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("page: https://www.clinic.test/services/deep/booking"),
        "{text}"
    );
    assert_eq!(v["site"], "https://www.clinic.test/");
    assert_eq!(v["kind"], "drift");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["scan_id"], 2);
    assert_eq!(v["baseline_scan"], 1);
    assert_eq!(v["added"][0]["category"], "vendor");
    assert_eq!(v["added"][0]["key"], "tiktok");
    assert_eq!(
        v["new_findings"][0]["page"],
        "https://www.clinic.test/services/deep/booking"
    );
    assert_eq!(v["new_findings"][0]["vendor"], "tiktok");
}

/// Writes `config` to `path` and runs `pixelwatch [args] alert test --config path`:
/// (exit code, stdout, stderr).
async fn alert_test(
    path: &std::path::Path,
    config: &str,
    args: &[&str],
) -> (Option<i32>, String, String) {
    std::fs::write(path, config).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .args(["alert", "test", "--config", path.to_str().unwrap()])
        .env_remove("PIXELWATCH_TEST_UNSET_PW")
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_test_sends_a_message_and_bad_configs_exit_3() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    let (code, _, err) = alert_test(&cfg, &sink.email_toml(), &[]).await;
    assert_eq!(code, Some(0), "{err}");
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    let mail = parse(&msgs[0].data);
    assert_eq!(mail.header("subject"), Some("[pixelwatch] test alert"));
    assert!(
        mail.text
            .unwrap()
            .contains("If you can read it, alerts reach you.")
    );
    assert!(mail.html.is_some());

    // A refusing server: exit 1, the error named, each failed attempt logged (warn, shown
    // without -v).
    sink.refuse(true);
    let refusing = format!(
        "{}[retry]\nattempts = 2\nbackoff_ms = 10\n",
        sink.email_toml()
    );
    let (code, out, err) = alert_test(&cfg, &refusing, &[]).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("FAILED after 2 attempt(s)"), "{out}");
    assert_eq!(err.matches("alert not delivered").count(), 2, "{err}");
    assert!(err.contains("451") && err.contains("retrying"), "{err}");
    sink.refuse(false);

    // A username with the password in a file: AUTH carries it; nothing prints it, even at -vv.
    let pw = dir.path().join("smtp-password");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let with_file = format!(
        "{}username = \"alerts\"\npassword_file = \"{}\"\n",
        sink.email_toml(),
        pw.display()
    );
    let (code, out, err) = alert_test(&cfg, &with_file, &["-vv"]).await;
    assert_eq!(code, Some(0), "{err}");
    // Logs go to a pipe here, not a terminal: no ANSI colour codes.
    assert!(
        err.contains("alert sent") && !err.contains('\u{1b}'),
        "{err:?}"
    );
    assert_eq!(sink.auths(), vec!["alerts:s3cret-pw"]);
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "{out}{err}"
    );

    // A password in the file is an unknown key: exit 3 naming the file and line; the value is
    // never echoed.
    let inline = sink
        .email_toml()
        .replace("timeout_secs = 5", "password = \"hunter2\"");
    let (code, _, err) = alert_test(&cfg, &inline, &[]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("w.toml") && err.contains("line 7") && err.contains("password"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    // A password source that is not set: exit 3 naming the variable.
    let unset = format!(
        "{}username = \"u\"\npassword_env = \"PIXELWATCH_TEST_UNSET_PW\"\n",
        sink.email_toml()
    );
    let (code, _, err) = alert_test(&cfg, &unset, &[]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("PIXELWATCH_TEST_UNSET_PW"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_with_a_private_ca_delivers_and_an_untrusted_certificate_does_not() {
    let (sink, ca_pem) = SmtpSink::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let tls = sink.email_toml().replace("\"none\"", "\"tls\"");
    let trusted = config(&format!("{tls}ca_file = \"{}\"\n", ca.display()));
    let outcomes = Alerter::from_config(&trusted)
        .unwrap()
        .send_all(&pixelwatch::alert::Alert::test())
        .await;
    assert!(outcomes[0].error.is_none(), "{outcomes:?}");
    assert_eq!(sink.messages().len(), 1);

    // Without the CA the certificate is not trusted: nothing is sent, the error says why.
    let outcomes = Alerter::from_config(&config(&tls))
        .unwrap()
        .send_all(&pixelwatch::alert::Alert::test())
        .await;
    let err = outcomes[0].error.as_deref().unwrap_or_default();
    assert!(
        err.contains("127.0.0.1") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    assert_eq!(sink.messages().len(), 1);
}
