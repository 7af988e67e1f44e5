//! Test harness for the relay: a real relay on 127.0.0.1:0 with a real SQLite file, wired to the
//! strict TikTok stand-in (and, on request, the strict Meta stand-in), plus helpers to send
//! browser and signed back-end requests.
#![allow(dead_code)]

pub mod http;
pub mod meta;
pub mod standin;
pub mod tiktok;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pixelwatch::relay::Relay;
use pixelwatch::relay::config::RelayConfig;
use pixelwatch::relay::ingest::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use pixelwatch::relay::secrets::Secrets;
use serde_json::{Value, json};
#[allow(unused_imports)]
pub use standin::{Accepted, Mode, Rejection};

/// The TikTok stand-in.
pub type StandIn = standin::StandIn<tiktok::TikTok>;
/// The Meta stand-in.
pub type MetaStandIn = standin::StandIn<meta::Meta>;

/// Origin the test config allows.
pub const ORIGIN: &str = "https://clinic.example";
/// HMAC secret used by signed tests.
pub const SECRET: &[u8] = b"test-hmac-secret-0123456789";
/// A click id in TikTok's format.
pub const TTCLID: &str = "E.C.P.CqgBaZ3xYk7LmQp2RtUv";
/// A click id in Meta's format (the example from Meta's documentation).
pub const FBCLID: &str = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk";

/// The letters [`letters`] writes digits with: no term of the bundled lexicon can be spelt
/// with them (`a`-`j` spelt `adhd` at 373, and the relay rightly replaced such an id).
const DIGIT_LETTERS: &[u8; 10] = b"qzxwvkjyfp";

/// Digits as letters (`1984` -> `zpyv`), so numbered test ids hold no digit runs and no
/// word a PHI detector would know.
pub fn letters(n: u64) -> String {
    format!("{n:04}")
        .bytes()
        .map(|b| DIGIT_LETTERS[usize::from(b - b'0')] as char)
        .collect()
}

/// A valid opaque event id that encodes `n`.
pub fn evid(n: u64) -> String {
    format!("evt-{}-qzkxwvyu", letters(n))
}

/// The number inside an [`evid`].
pub fn evid_num(id: &str) -> u64 {
    let l = id
        .trim_start_matches("evt-")
        .split('-')
        .next()
        .unwrap_or("");
    l.bytes().fold(0, |a, b| {
        let digit = DIGIT_LETTERS.iter().position(|&d| d == b).unwrap_or(0);
        a * 10 + digit as u64
    })
}

/// A TikTok click id in the right format that carries `tag` (letters only).
pub fn ttclid(tag: &str) -> String {
    format!("E.C.P.CqgB{tag}xYkLmQpRtUv")
}

/// Knobs for one relay.
#[derive(Clone)]
pub struct Opts {
    /// `[consent] legal_basis`.
    pub legal_basis: Option<String>,
    /// Extra lines in the TikTok destination.
    pub tiktok_extra: String,
    /// Request timeout to the destinations.
    pub timeout_ms: u64,
    /// Attempts before dead letter.
    pub max_attempts: u32,
    /// TikTok token given to the relay (default: the stand-in's).
    pub token: Option<String>,
    /// Events per request.
    pub batch_size: usize,
    /// Also deliver to the Meta stand-in (config in `[[destination]]` form).
    pub meta: bool,
    /// Extra lines in the Meta destination.
    pub meta_extra: String,
    /// Meta token given to the relay (default: the stand-in's).
    pub meta_token: Option<String>,
    /// Extra lines in `[consent]`.
    pub consent_extra: String,
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
            meta: false,
            meta_extra: String::new(),
            meta_token: None,
            consent_extra: String::new(),
        }
    }
}

/// Relay config text for tests (also used by the crash test with the real binary). With a
/// Meta stand-in the destinations are `[[destination]]` tables; without, the legacy `[tiktok]`.
pub fn config_text(
    listen: &str,
    db: &Path,
    standin: &StandIn,
    meta: Option<&MetaStandIn>,
    opts: &Opts,
) -> String {
    let basis = opts
        .legal_basis
        .as_ref()
        .map(|b| format!("legal_basis = {b:?}"))
        .unwrap_or_default();
    let tiktok_keys = format!(
        "endpoint = \"{}\"\npixel_code = \"{}\"\ntimeout_ms = {}\n{}",
        standin.endpoint, standin.pixel, opts.timeout_ms, opts.tiktok_extra
    );
    let destinations = match meta {
        None => format!("[tiktok]\n{tiktok_keys}"),
        Some(m) => format!(
            "[[destination]]\nkind = \"tiktok\"\n{tiktok_keys}\n\n[[destination]]\nkind = \"meta\"\n\
             endpoint = \"{}\"\npixel_id = \"{}\"\ntimeout_ms = {}\n{}",
            m.endpoint, m.pixel, opts.timeout_ms, opts.meta_extra
        ),
    };
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
{consent_extra}

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

{destinations}
"#,
        consent_extra = opts.consent_extra,
        max_attempts = opts.max_attempts,
        batch_size = opts.batch_size,
    )
}

/// Secrets for a relay wired to the stand-ins.
pub fn secrets(standin: &StandIn, meta: Option<&MetaStandIn>, opts: &Opts) -> Secrets {
    let mut s = Secrets::with_token("tiktok", opts.token.as_deref().unwrap_or(&standin.token));
    if let Some(m) = meta {
        s.tokens.insert(
            "meta".into(),
            opts.meta_token.clone().unwrap_or_else(|| m.token.clone()),
        );
    }
    s.hmac_secret = Some(SECRET.to_vec());
    s
}

/// A running relay + stand-ins.
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
    /// The Meta stand-in, with `Opts::meta`.
    pub meta: Option<MetaStandIn>,
    /// Options used.
    pub opts: Opts,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl Harness {
    /// Start the stand-ins and a relay wired to them.
    pub async fn start(opts: Opts) -> Harness {
        let standin = StandIn::start().await;
        let meta = if opts.meta {
            Some(MetaStandIn::start().await)
        } else {
            None
        };
        Harness::start_with(standin, meta, opts).await
    }

    /// Start a relay against existing stand-ins.
    pub async fn start_with(standin: StandIn, meta: Option<MetaStandIn>, opts: Opts) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("relay.db");
        let relay = start_relay(&db, &standin, meta.as_ref(), &opts).await;
        let base = format!("http://{}", relay.addr());
        Harness {
            relay: Some(relay),
            base,
            dir,
            db,
            standin,
            meta,
            opts,
            http: reqwest::Client::new(),
        }
    }

    /// The Meta stand-in (panics without `Opts::meta`).
    pub fn meta(&self) -> &MetaStandIn {
        self.meta.as_ref().expect("started with Opts::meta")
    }

    /// Graceful shutdown.
    pub async fn shutdown(&mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// Shut down and start a new relay on the same database and stand-ins.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let relay = start_relay(&self.db, &self.standin, self.meta.as_ref(), &self.opts).await;
        self.base = format!("http://{}", relay.addr());
        self.relay = Some(relay);
    }

    /// POST as the browser script would (Origin header, text/plain body).
    pub async fn browser(&self, path: &str, body: &Value, gpc: bool) -> (u16, Value) {
        let mut headers = vec![
            ("Origin", ORIGIN.to_string()),
            ("Content-Type", "text/plain;charset=UTF-8".to_string()),
        ];
        if gpc {
            headers.push(("Sec-GPC", "1".into()));
        }
        self.raw(path, body.to_string().into_bytes(), &headers)
            .await
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

    /// Headers of a signed back-end request for `body` at `now + skew_secs`.
    pub fn signed_headers(body: &[u8], skew_secs: i64) -> Vec<(&'static str, String)> {
        let ts = chrono::Utc::now().timestamp() + skew_secs;
        vec![
            ("Content-Type", "application/json".into()),
            (TIMESTAMP_HEADER, ts.to_string()),
            (SIGNATURE_HEADER, sign(SECRET, ts, body)),
        ]
    }

    /// POST signed as a back-end caller, with a timestamp offset in seconds.
    pub async fn signed(&self, path: &str, body: &Value, skew_secs: i64) -> (u16, Value) {
        let bytes = body.to_string().into_bytes();
        let headers = Harness::signed_headers(&bytes, skew_secs);
        self.raw(path, bytes, &headers).await
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

    /// Record consent, then send one [`glp1_event`] with a click id tagged `tag`, as a browser.
    pub async fn send_consented(&self, event_id: &str, tag: &str) -> (u16, Value) {
        let token = self.grant_consent().await;
        self.browser(
            "/v1/events",
            &glp1_event(event_id, &ttclid(tag), Some(&token)),
            false,
        )
        .await
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

    /// Assert that `/metrics` holds each of these lines exactly.
    pub async fn assert_metrics(&self, lines: &[&str]) {
        let (_, m) = self.get("/metrics").await;
        for l in lines {
            assert!(m.lines().any(|x| x == *l), "missing `{l}` in:\n{m}");
        }
    }

    /// Audit rows (id, decision, reasons JSON, request_id) from the database file.
    pub fn audit(&self) -> Vec<(i64, String, String, Option<String>)> {
        self.audit_records()
            .into_iter()
            .map(|r| {
                let reasons = serde_json::to_string(&r.reasons).expect("reasons");
                (r.id, r.decision, reasons, r.request_id)
            })
            .collect()
    }

    /// Per-destination audit state (`destinations`) of every row.
    pub fn audit_destinations(&self) -> Vec<Value> {
        self.audit_records()
            .into_iter()
            .map(|r| r.destinations)
            .collect()
    }

    /// Every audit record as operators read it (`pixelwatch-relay audit`: the stored row and
    /// the deliveries that acknowledged it), oldest first.
    pub fn audit_records(&self) -> Vec<pixelwatch::relay::audit::AuditRecord> {
        let c = rusqlite::Connection::open(&self.db).expect("open db");
        let mut all =
            pixelwatch::relay::audit::records(&c, usize::MAX, None).expect("audit records");
        all.reverse();
        all
    }

    /// Every byte of the database files (main file and WAL), lower-cased text.
    pub fn database_text(&self) -> String {
        let mut out = String::new();
        for suffix in ["", "-wal"] {
            let p = PathBuf::from(format!("{}{suffix}", self.db.display()));
            if let Ok(b) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&b).to_lowercase());
            }
        }
        out
    }
}

async fn start_relay(
    db: &Path,
    standin: &StandIn,
    meta: Option<&MetaStandIn>,
    opts: &Opts,
) -> Relay {
    let text = config_text("127.0.0.1:0", db, standin, meta, opts);
    let cfg = RelayConfig::parse(&text, "test.toml").expect("test config");
    Relay::start(cfg, secrets(standin, meta, opts))
        .await
        .expect("relay starts")
}

/// Wait until `f` holds or panic after `secs`.
pub async fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A browser event for `BookedGLP1Consultation` carrying PHI next to the click ids.
pub fn glp1_event(event_id: &str, ttclid: &str, consent_token: Option<&str>) -> Value {
    json!({
        "event": "BookedGLP1Consultation",
        "event_id": event_id,
        "event_time": chrono::Utc::now().timestamp() - 2,
        "ttclid": ttclid,
        "fbclid": FBCLID,
        "email": "jane.doe@example.com",
        "url": "https://clinic.example/book/glp1-ozempic-weight-loss?name=Jane+Doe",
        "consent_token": consent_token,
    })
}
