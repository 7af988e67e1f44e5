//! Test harness for the relay: a real relay on 127.0.0.1:0 with a real SQLite file, wired to the
//! strict TikTok stand-in, plus helpers to send browser and signed back-end requests.
#![allow(dead_code)]

pub mod standin;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pixelwatch::relay::Relay;
use pixelwatch::relay::config::{RelayConfig, Secrets};
use pixelwatch::relay::ingest::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use serde_json::{Value, json};
#[allow(unused_imports)]
pub use standin::{Mode, StandIn};

/// Origin the test config allows.
pub const ORIGIN: &str = "https://clinic.example";
/// HMAC secret used by signed tests.
pub const SECRET: &[u8] = b"test-hmac-secret-0123456789";

/// Knobs for one relay.
#[derive(Clone)]
pub struct Opts {
    /// `[consent] legal_basis`.
    pub legal_basis: Option<String>,
    /// Extra lines in `[tiktok]`.
    pub tiktok_extra: String,
    /// Request timeout to TikTok.
    pub timeout_ms: u64,
    /// Attempts before dead letter.
    pub max_attempts: u32,
    /// Token given to the relay (default: the stand-in's).
    pub token: Option<String>,
    /// Events per TikTok request.
    pub batch_size: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            legal_basis: None,
            tiktok_extra: String::new(),
            timeout_ms: 2_000,
            max_attempts: 8,
            token: None,
            batch_size: 1000,
        }
    }
}

/// Relay config text for tests (also used by the crash test with the real binary).
pub fn config_text(listen: &str, db: &Path, standin: &StandIn, opts: &Opts) -> String {
    let basis = opts
        .legal_basis
        .as_ref()
        .map(|b| format!("legal_basis = {b:?}"))
        .unwrap_or_default();
    format!(
        r#"
[server]
listen = "{listen}"
allowed_origins = ["{ORIGIN}"]
max_body_bytes = 8192
max_events_per_request = 50

[database]
path = {db:?}
synchronous = "normal"

[consent]
{basis}

[tiktok]
endpoint = "{endpoint}"
pixel_code = "{pixel}"
timeout_ms = {timeout}
{extra}

[dispatch]
batch_size = {batch_size}
poll_ms = 25
linger_ms = 5
backoff_base_ms = 20
backoff_cap_ms = 200
max_attempts = {max_attempts}

[[mapping]]
from = "BookedGLP1Consultation"
to = "Schedule"

[[mapping]]
from = "PaidDeposit"
to = "Purchase"
allow_value = true

[[page_category]]
path_pattern = "^/(book|booking|schedule)(/|$)"
url = "https://clinic.example/booking"

[[page_category]]
path_pattern = ".*"
url = "https://clinic.example/"
"#,
        endpoint = standin.endpoint,
        pixel = standin.pixel,
        timeout = opts.timeout_ms,
        extra = opts.tiktok_extra,
        max_attempts = opts.max_attempts,
        batch_size = opts.batch_size,
    )
}

/// A running relay + stand-in.
pub struct Harness {
    /// The relay (taken by `shutdown`).
    pub relay: Option<Relay>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Holds the database.
    pub dir: tempfile::TempDir,
    /// Database path.
    pub db: PathBuf,
    /// The TikTok stand-in.
    pub standin: StandIn,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl Harness {
    /// Start a stand-in and a relay wired to it.
    pub async fn start(opts: Opts) -> Harness {
        let standin = StandIn::start().await;
        Harness::start_with(standin, opts).await
    }

    /// Start a relay against an existing stand-in.
    pub async fn start_with(standin: StandIn, opts: Opts) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("relay.db");
        let text = config_text("127.0.0.1:0", &db, &standin, &opts);
        let cfg = RelayConfig::parse(&text, "test.toml").expect("test config");
        let secrets = Secrets {
            access_token: Some(opts.token.clone().unwrap_or_else(|| standin.token.clone())),
            hmac_secret: Some(SECRET.to_vec()),
        };
        let relay = Relay::start(cfg, secrets).await.expect("relay starts");
        let base = format!("http://{}", relay.addr());
        Harness {
            relay: Some(relay),
            base,
            dir,
            db,
            standin,
            http: reqwest::Client::new(),
        }
    }

    /// Graceful shutdown.
    pub async fn shutdown(&mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// POST as the browser script would (Origin header, text/plain body).
    pub async fn browser(&self, path: &str, body: &Value, gpc: bool) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Origin", ORIGIN)
            .header("Content-Type", "text/plain;charset=UTF-8")
            .body(body.to_string());
        if gpc {
            req = req.header("Sec-GPC", "1");
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST raw bytes with arbitrary headers.
    pub async fn raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, String)]) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST signed as a back-end caller, with a timestamp offset in seconds.
    pub async fn signed(&self, path: &str, body: &Value, skew_secs: i64) -> (u16, Value) {
        let bytes = body.to_string().into_bytes();
        let ts = chrono::Utc::now().timestamp() + skew_secs;
        let sig = sign(SECRET, ts, &bytes);
        self.raw(
            path,
            bytes,
            &[
                ("Content-Type", "application/json".into()),
                (TIMESTAMP_HEADER, ts.to_string()),
                (SIGNATURE_HEADER, sig),
            ],
        )
        .await
    }

    /// Record advertising consent from the browser; returns the token.
    pub async fn grant_consent(&self) -> String {
        let (s, v) = self
            .browser(
                "/v1/consent",
                &json!({"granted": true, "purposes": ["advertising"], "source": "banner", "policy_version": "2026-01"}),
                false,
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["consent_token"].as_str().expect("token").to_string()
    }

    /// GET a path, returning status and text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Audit rows (id, decision, reasons JSON, request_id) from the database file.
    pub fn audit(&self) -> Vec<(i64, String, String, Option<String>)> {
        let c = rusqlite::Connection::open(&self.db).expect("open db");
        let mut s = c
            .prepare("SELECT id, decision, reasons, request_id FROM audit ORDER BY id")
            .expect("prepare");
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    }
}

/// Wait until `f` holds or panic after `secs`.
pub async fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A browser event for `BookedGLP1Consultation` carrying PHI next to the click id.
pub fn glp1_event(event_id: &str, ttclid: &str, consent_token: Option<&str>) -> Value {
    json!({
        "event": "BookedGLP1Consultation",
        "event_id": event_id,
        "event_time": chrono::Utc::now().timestamp() - 2,
        "ttclid": ttclid,
        "email": "jane.doe@example.com",
        "url": "https://clinic.example/book/glp1-ozempic-weight-loss?name=Jane+Doe",
        "consent_token": consent_token,
    })
}
