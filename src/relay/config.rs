//! Relay configuration: the TOML model, its validation, and loading secrets from env or files.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use super::error::ConfigError;

/// Default environment variable holding the TikTok access token.
pub const DEFAULT_TOKEN_ENV: &str = "PIXELWATCH_TIKTOK_ACCESS_TOKEN";
/// Default environment variable holding the HMAC secret for back-end callers.
pub const DEFAULT_HMAC_ENV: &str = "PIXELWATCH_RELAY_HMAC_SECRET";

/// The whole `relay.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// HTTP listener and browser-facing settings.
    pub server: ServerConfig,
    /// SQLite database (outbox, consent, audit).
    pub database: DatabaseConfig,
    /// Back-end caller authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Consent policy.
    #[serde(default)]
    pub consent: ConsentConfig,
    /// The TikTok destination.
    pub tiktok: TikTokConfig,
    /// Delivery timing.
    #[serde(default)]
    pub dispatch: DispatchConfig,
    /// Descriptive event name -> TikTok standard event.
    #[serde(default, rename = "mapping")]
    pub mappings: Vec<MappingRule>,
    /// Path patterns -> generic page URLs.
    #[serde(default, rename = "page_category")]
    pub page_categories: Vec<PageCategory>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:8787`.
    pub listen: String,
    /// Origins (scheme://host[:port]) allowed to send browser events and consent.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest number of events in one request.
    #[serde(default = "default_max_batch")]
    pub max_events_per_request: usize,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Path of the SQLite file; relative paths are relative to the config file.
    pub path: PathBuf,
    /// `full` (default; durable against power loss) or `normal` (durable against process crash).
    #[serde(default)]
    pub synchronous: Synchronous,
}

/// SQLite `synchronous` level in WAL mode.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit.
    #[default]
    Full,
    /// fsync at checkpoints only; a process kill loses nothing, a power cut may.
    Normal,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Environment variable holding the HMAC secret.
    #[serde(default = "default_hmac_env")]
    pub hmac_secret_env: String,
    /// File holding the HMAC secret (used when the variable is unset).
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// Largest accepted clock difference for signed requests, in seconds.
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hmac_secret_env: default_hmac_env(),
            hmac_secret_file: None,
            replay_window_secs: default_replay_window(),
        }
    }
}

/// `[consent]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    /// A legal basis other than consent, stated explicitly (e.g. "contract: clinic-2026-07").
    /// When set, events without a consent record are forwarded and the audit names this basis.
    /// `Sec-GPC: 1` and a recorded refusal still block.
    #[serde(default)]
    pub legal_basis: Option<String>,
    /// Consent older than this many days is not valid (default 395).
    #[serde(default)]
    pub max_age_days: Option<u32>,
    /// When non-empty, only consent given under one of these policy versions counts.
    #[serde(default)]
    pub accepted_policy_versions: Vec<String>,
}

/// `[tiktok]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TikTokConfig {
    /// Events API endpoint.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Pixel code (`event_source_id`).
    pub pixel_code: String,
    /// Environment variable holding the access token.
    #[serde(default = "default_token_env")]
    pub access_token_env: String,
    /// File holding the access token (used when the variable is unset).
    #[serde(default)]
    pub access_token_file: Option<PathBuf>,
    /// When set, every event is sent as a test event with this code.
    #[serde(default)]
    pub test_event_code: Option<String>,
    /// Request timeout in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Forward `user.ttp` (the `_ttp` cookie) when the caller sends it.
    #[serde(default)]
    pub send_ttp: bool,
    /// Forward SHA-256 of the normalised email (off by default).
    #[serde(default)]
    pub send_hashed_email: bool,
    /// Forward SHA-256 of the E.164 phone number (off by default).
    #[serde(default)]
    pub send_hashed_phone: bool,
}

/// `[dispatch]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Events per request (1..=1000).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Idle poll interval in milliseconds.
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    /// After an accept wakes the dispatcher, wait this long so a batch can fill (ms).
    #[serde(default = "default_linger")]
    pub linger_ms: u64,
    /// First retry delay in milliseconds.
    #[serde(default = "default_backoff_base")]
    pub backoff_base_ms: u64,
    /// Longest retry delay in milliseconds.
    #[serde(default = "default_backoff_cap")]
    pub backoff_cap_ms: u64,
    /// Attempts before an event is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            batch_size: default_batch(),
            poll_ms: default_poll(),
            linger_ms: default_linger(),
            backoff_base_ms: default_backoff_base(),
            backoff_cap_ms: default_backoff_cap(),
            max_attempts: default_max_attempts(),
        }
    }
}

/// `[[mapping]]`: one descriptive event name to one standard event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// Incoming event name, matched exactly.
    pub from: String,
    /// TikTok standard event name.
    pub to: String,
    /// Whether `value` and `currency` are forwarded for this event.
    #[serde(default)]
    pub allow_value: bool,
}

/// `[[page_category]]`: a path pattern and the generic URL that replaces matching page URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageCategory {
    /// Regular expression matched against the URL path.
    pub path_pattern: String,
    /// Generic URL sent instead (must contain no health term).
    pub url: String,
}

/// TikTok standard events accepted as mapping targets.
pub const STANDARD_EVENTS: &[&str] = &[
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "ApplicationApproval",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Download",
    "FindLocation",
    "InitiateCheckout",
    "Lead",
    "Purchase",
    "Schedule",
    "Search",
    "StartTrial",
    "SubmitApplication",
    "Subscribe",
    "ViewContent",
];

fn default_max_body() -> usize {
    64 * 1024
}
fn default_max_batch() -> usize {
    100
}
fn default_hmac_env() -> String {
    DEFAULT_HMAC_ENV.to_string()
}
fn default_replay_window() -> u64 {
    300
}
fn default_endpoint() -> String {
    "https://business-api.tiktok.com/open_api/v1.3/event/track/".to_string()
}
fn default_token_env() -> String {
    DEFAULT_TOKEN_ENV.to_string()
}
fn default_timeout() -> u64 {
    10_000
}
fn default_batch() -> usize {
    1000
}
fn default_poll() -> u64 {
    500
}
fn default_linger() -> u64 {
    50
}
fn default_backoff_base() -> u64 {
    1_000
}
fn default_backoff_cap() -> u64 {
    300_000
}
fn default_max_attempts() -> u32 {
    20
}

/// A compiled `[[page_category]]`.
#[derive(Debug, Clone)]
pub struct CompiledCategory {
    /// Path regex.
    pub pattern: Regex,
    /// Generic URL.
    pub url: String,
}

/// Secrets loaded from the environment or files; never printed.
#[derive(Clone)]
pub struct Secrets {
    /// TikTok access token.
    pub access_token: Option<String>,
    /// HMAC key for back-end callers.
    pub hmac_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl RelayConfig {
    /// Read, parse and validate a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<RelayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        let mut cfg = RelayConfig::parse(&text, &path.display().to_string())?;
        if cfg.database.path.is_relative()
            && let Some(dir) = path.parent()
        {
            cfg.database.path = dir.join(&cfg.database.path);
        }
        Ok(cfg)
    }

    /// Parse and validate TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<RelayConfig, ConfigError> {
        let cfg: RelayConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let lex = crate::lexicon::Lexicon::bundled();
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "server.listen: {:?} is not an address like 127.0.0.1:8787",
                self.server.listen
            ));
        }
        for o in &self.server.allowed_origins {
            let u =
                url::Url::parse(o).map_err(|e| format!("server.allowed_origins: {o:?}: {e}"))?;
            if u.origin().ascii_serialization() != o.trim_end_matches('/') {
                return Err(format!(
                    "server.allowed_origins: {o:?} must be an origin like https://clinic.example (no path)"
                ));
            }
        }
        if self.server.max_body_bytes < 256 {
            return Err("server.max_body_bytes must be at least 256".into());
        }
        if !(1..=1000).contains(&self.dispatch.batch_size) {
            return Err(format!(
                "dispatch.batch_size must be 1..=1000, got {}",
                self.dispatch.batch_size
            ));
        }
        if self.dispatch.backoff_base_ms == 0
            || self.dispatch.backoff_cap_ms < self.dispatch.backoff_base_ms
        {
            return Err("dispatch: need 0 < backoff_base_ms <= backoff_cap_ms".into());
        }
        if self.tiktok.pixel_code.trim().is_empty() {
            return Err("tiktok.pixel_code is empty".into());
        }
        url::Url::parse(&self.tiktok.endpoint)
            .map_err(|e| format!("tiktok.endpoint {:?}: {e}", self.tiktok.endpoint))?;
        for (i, m) in self.mappings.iter().enumerate() {
            if !STANDARD_EVENTS.contains(&m.to.as_str()) {
                return Err(format!(
                    "mapping[{i}].to: {:?} is not a TikTok standard event",
                    m.to
                ));
            }
        }
        if self.page_categories.is_empty() {
            return Err(
                "at least one [[page_category]] is needed (use path_pattern = \".*\" for a catch-all)"
                    .into(),
            );
        }
        for (i, c) in self.page_categories.iter().enumerate() {
            Regex::new(&c.path_pattern)
                .map_err(|e| format!("page_category[{i}].path_pattern: {e}"))?;
            let u = url::Url::parse(&c.url)
                .map_err(|e| format!("page_category[{i}].url {:?}: {e}", c.url))?;
            if u.query().is_some() || u.fragment().is_some() {
                return Err(format!(
                    "page_category[{i}].url must have no query or fragment"
                ));
            }
            if let Some(m) = lex.find(&c.url) {
                return Err(format!(
                    "page_category[{i}].url contains the health term {:?} ({}); use a generic URL",
                    m.term, m.category
                ));
            }
        }
        Ok(())
    }

    /// Page categories with compiled regexes (validated at load).
    pub fn compiled_categories(&self) -> Vec<CompiledCategory> {
        self.page_categories
            .iter()
            .map(|c| CompiledCategory {
                pattern: Regex::new(&c.path_pattern).expect("validated at load"),
                url: c.url.clone(),
            })
            .collect()
    }

    /// Load secrets: environment variable first, then file.
    pub fn load_secrets(&self) -> Result<Secrets, ConfigError> {
        let access_token = secret(
            &self.tiktok.access_token_env,
            &self.tiktok.access_token_file,
        )?;
        let hmac_secret = secret(&self.auth.hmac_secret_env, &self.auth.hmac_secret_file)?
            .map(String::into_bytes);
        Ok(Secrets {
            access_token,
            hmac_secret,
        })
    }
}

fn secret(env: &str, file: &Option<PathBuf>) -> Result<Option<String>, ConfigError> {
    if let Ok(v) = std::env::var(env)
        && !v.trim().is_empty()
    {
        return Ok(Some(v.trim().to_string()));
    }
    if let Some(f) = file {
        let v = std::fs::read_to_string(f).map_err(|e| ConfigError::Read {
            path: f.display().to_string(),
            source: e,
        })?;
        let v = v.trim().to_string();
        if !v.is_empty() {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[server]
listen = "127.0.0.1:0"
[database]
path = "r.db"
[tiktok]
pixel_code = "C1"
[[page_category]]
path_pattern = ".*"
url = "https://clinic.example/"
"#;

    #[test]
    fn minimal_config_parses() {
        let c = RelayConfig::parse(MIN, "t.toml").expect("valid");
        assert_eq!(c.dispatch.batch_size, 1000);
        assert_eq!(c.database.synchronous, Synchronous::Full);
    }

    #[test]
    fn example_config_is_valid() {
        let c = RelayConfig::parse(
            include_str!("../../relay.example.toml"),
            "relay.example.toml",
        )
        .expect("example parses");
        assert_eq!(c.mappings[0].to, "Schedule");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = RelayConfig::parse(&format!("{MIN}\n[dispatch]\nbatchsize = 3\n"), "t.toml")
            .expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("batchsize") && msg.contains("t.toml"), "{msg}");
    }

    #[test]
    fn token_in_config_file_is_rejected() {
        let err = RelayConfig::parse(
            &MIN.replace("pixel_code", "access_token = \"x\"\npixel_code"),
            "t",
        )
        .expect_err("no token in file");
        assert!(err.to_string().contains("access_token"), "{err}");
    }

    #[test]
    fn health_url_in_category_is_rejected() {
        let err = RelayConfig::parse(
            &MIN.replace("https://clinic.example/", "https://clinic.example/ozempic"),
            "t",
        )
        .expect_err("health url");
        assert!(err.to_string().contains("ozempic"), "{err}");
    }

    #[test]
    fn non_standard_mapping_target_is_rejected() {
        let text = format!("{MIN}\n[[mapping]]\nfrom = \"A\"\nto = \"BookedGLP1\"\n");
        let err = RelayConfig::parse(&text, "t").expect_err("bad target");
        assert!(
            err.to_string().contains("not a TikTok standard event"),
            "{err}"
        );
    }
}
