//! Relay configuration: the TOML model, destinations (`[[destination]]` or the legacy `[tiktok]`
//! table) and validation. Secrets and secret-safe error messages live in [`super::secrets`].

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

mod destinations;

pub use destinations::{
    Destination, DestinationKind, FieldAllowlist, META_STANDARD_EVENTS, STANDARD_EVENTS,
};

use super::error::ConfigError;
use super::secrets;
use destinations::{DestinationTable, resolve_destination};

/// Default environment variable holding the TikTok access token.
pub const DEFAULT_TOKEN_ENV: &str = "PIXELWATCH_TIKTOK_ACCESS_TOKEN";
/// Default environment variable holding the Meta access token.
pub const DEFAULT_META_TOKEN_ENV: &str = "PIXELWATCH_META_ACCESS_TOKEN";
/// Default environment variable holding the HMAC secret for back-end callers.
pub const DEFAULT_HMAC_ENV: &str = "PIXELWATCH_RELAY_HMAC_SECRET";
/// Meta Graph API version used when `api_version` is not set.
pub const DEFAULT_META_API_VERSION: &str = "v21.0";

/// The whole `relay.toml`, with destinations resolved.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// HTTP listener and browser-facing settings.
    pub server: ServerConfig,
    /// SQLite database (outbox, consent, audit, nonces).
    pub database: DatabaseConfig,
    /// Back-end caller authentication.
    pub auth: AuthConfig,
    /// Consent policy.
    pub consent: ConsentConfig,
    /// Delivery timing shared by every destination.
    pub dispatch: DispatchConfig,
    /// Where events go: one outbox row per destination per accepted event.
    pub destinations: Vec<Destination>,
    /// Path patterns -> generic page URLs.
    pub page_categories: Vec<PageCategory>,
}

/// The file as written; [`RelayConfig`] is derived from it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: ServerConfig,
    database: DatabaseConfig,
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    consent: ConsentConfig,
    /// Legacy single-destination table (still accepted; same keys as a tiktok destination).
    #[serde(default)]
    tiktok: Option<DestinationTable>,
    #[serde(default)]
    destination: Vec<DestinationTable>,
    #[serde(default)]
    dispatch: DispatchConfig,
    /// Default mapping for destinations without their own.
    #[serde(default)]
    mapping: Vec<MappingRule>,
    #[serde(default)]
    page_category: Vec<PageCategory>,
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
    /// Header a trusted reverse proxy sets to the visitor's address (e.g. `x-forwarded-for`;
    /// the first address is used). Without it the TCP peer address is the client address.
    /// Only used by destinations with `send_client_ip = true`.
    #[serde(default)]
    pub client_ip_header: Option<String>,
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
    pub hmac_secret_env: Spanned<String>,
    /// File holding the HMAC secret (used when the variable is unset).
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// Largest accepted clock difference for signed requests, in seconds; a signature is
    /// remembered (as a nonce) for twice this long so it cannot be used again.
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
#[derive(Debug, Clone, Deserialize)]
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
    /// When non-empty, a consent must name one of these policy versions (others are refused
    /// with 400), and only consent under one of them counts at the gate.
    #[serde(default)]
    pub accepted_policy_versions: Vec<String>,
    /// When `accepted_policy_versions` is empty, `policy_version` must match this regex.
    #[serde(default = "default_policy_pattern")]
    pub policy_version_pattern: String,
    /// Accepted values of `source` (where the decision was taken).
    #[serde(default = "default_sources")]
    pub sources: Vec<String>,
    /// Accepted purpose names.
    #[serde(default = "default_purposes")]
    pub purposes: Vec<String>,
    /// A decision dated more than this many seconds in the future is refused.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_secs: u64,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            legal_basis: None,
            max_age_days: None,
            accepted_policy_versions: Vec::new(),
            policy_version_pattern: default_policy_pattern(),
            sources: default_sources(),
            purposes: default_purposes(),
            clock_skew_secs: default_clock_skew(),
        }
    }
}

/// `[dispatch]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Events per request (1..=1000); a destination's `batch_size` overrides it.
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
    /// Standard event name of the destination.
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

fn default_max_body() -> usize {
    64 * 1024
}
fn default_max_batch() -> usize {
    100
}
fn default_hmac_env() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_HMAC_ENV.to_string())
}
fn default_replay_window() -> u64 {
    300
}
fn default_policy_pattern() -> String {
    r"^v?([0-9]{1,3}|20[0-9]{2})([.-][0-9]{1,2})?$".to_string()
}
fn default_sources() -> Vec<String> {
    ["banner", "intake_form", "booking_system", "crm"]
        .map(String::from)
        .to_vec()
}
fn default_purposes() -> Vec<String> {
    ["advertising", "analytics", "functional"]
        .map(String::from)
        .to_vec()
}
fn default_clock_skew() -> u64 {
    60
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

/// Destination names: short, lowercase, usable as a metric label and a JSON key.
pub(crate) fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Test event codes look like `TEST12345` at TikTok and Meta alike.
pub fn valid_test_code(c: &str) -> bool {
    c.len() > 4
        && c.len() <= 16
        && c.starts_with("TEST")
        && c[4..].bytes().all(|b| b.is_ascii_digit())
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

    /// Parse and validate TOML text; `origin` names the source in errors. Errors never quote
    /// a value from the file (see [`secrets::describe_toml_error`]).
    pub fn parse(text: &str, origin: &str) -> Result<RelayConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: secrets::describe_toml_error(text, &e),
        })?;
        let invalid = |message| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let cfg = RelayConfig::resolve(raw, text).map_err(invalid)?;
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
    }

    /// Turn the written tables into destinations; env names are checked here because only
    /// here the text (for line numbers) is at hand.
    fn resolve(raw: RawConfig, text: &str) -> Result<RelayConfig, String> {
        secrets::check_env_name("auth.hmac_secret_env", &raw.auth.hmac_secret_env, text)?;
        let tables: Vec<(String, DestinationTable)> = match (raw.tiktok, raw.destination) {
            (Some(_), d) if !d.is_empty() => {
                return Err(
                    "both [tiktok] and [[destination]] are present: move the [tiktok] keys into a \
                     [[destination]] with kind = \"tiktok\" (see docs/relay.md, \"Destinations\")"
                        .into(),
                );
            }
            (Some(mut t), _) => {
                if t.kind.is_some() || t.name.is_some() {
                    return Err(
                        "[tiktok] takes no kind or name; use [[destination]] for that".into(),
                    );
                }
                t.kind = Some(DestinationKind::Tiktok);
                vec![("tiktok".to_string(), t)]
            }
            (None, d) if d.is_empty() => {
                return Err(
                    "no destination: add a [[destination]] with kind = \"tiktok\" or \"meta\""
                        .into(),
                );
            }
            (None, d) => d
                .into_iter()
                .enumerate()
                .map(|(i, t)| (format!("destination[{i}]"), t))
                .collect(),
        };
        let mut destinations = Vec::with_capacity(tables.len());
        for (path, t) in tables {
            destinations.push(resolve_destination(
                &path,
                t,
                &raw.mapping,
                &raw.dispatch,
                text,
            )?);
        }
        for (i, d) in destinations.iter().enumerate() {
            if destinations[..i].iter().any(|o| o.name == d.name) {
                return Err(
                    "two destinations have the same name; give each [[destination]] its own `name`"
                        .into(),
                );
            }
        }
        Ok(RelayConfig {
            server: raw.server,
            database: raw.database,
            auth: raw.auth,
            consent: raw.consent,
            dispatch: raw.dispatch,
            destinations,
            page_categories: raw.page_category,
        })
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
        if let Some(h) = &self.server.client_ip_header
            && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(format!(
                "server.client_ip_header: {h:?} is not a header name"
            ));
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
        if self.auth.replay_window_secs == 0 || self.auth.replay_window_secs > 86_400 {
            return Err("auth.replay_window_secs must be 1..=86400".into());
        }
        let c = &self.consent;
        Regex::new(&c.policy_version_pattern)
            .map_err(|e| format!("consent.policy_version_pattern: {e}"))?;
        for (key, list) in [
            ("consent.sources", &c.sources),
            ("consent.purposes", &c.purposes),
        ] {
            if list.is_empty() {
                return Err(format!("{key} must not be empty"));
            }
            if let Some(bad) = list.iter().find(|s| !valid_name(s)) {
                return Err(format!(
                    "{key}: {bad:?} must be a lowercase name (a-z, 0-9, _; at most 32)"
                ));
            }
        }
        if !c.purposes.iter().any(|p| p == super::consent::ADVERTISING) {
            return Err("consent.purposes must include \"advertising\"".into());
        }
        if c.clock_skew_secs > 3_600 {
            return Err("consent.clock_skew_secs must be at most 3600".into());
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

    /// Compiled `consent.policy_version_pattern` (validated at load).
    pub fn policy_version_regex(&self) -> Regex {
        Regex::new(&self.consent.policy_version_pattern).expect("validated at load")
    }
}

/// The smallest valid config (legacy `[tiktok]` form), for unit tests.
#[cfg(test)]
pub(crate) const TEST_CONFIG: &str = r#"
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = TEST_CONFIG;

    #[test]
    fn minimal_legacy_config_parses_into_one_tiktok_destination() {
        let c = RelayConfig::parse(MIN, "t.toml").expect("valid");
        assert_eq!(c.dispatch.batch_size, 1000);
        assert_eq!(c.database.synchronous, Synchronous::Full);
        assert_eq!(c.destinations.len(), 1);
        assert_eq!(c.destinations[0].name, "tiktok");
        assert_eq!(c.destinations[0].access_token_env, DEFAULT_TOKEN_ENV);
    }

    #[test]
    fn example_config_is_valid_with_two_destinations() {
        let c = RelayConfig::parse(
            include_str!("../../../relay.example.toml"),
            "relay.example.toml",
        )
        .expect("example parses");
        let names: Vec<_> = c.destinations.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["tiktok", "meta"]);
        assert_eq!(c.destinations[0].mappings[0].to, "Schedule");
        assert_eq!(
            c.destinations[1].endpoint,
            "https://graph.facebook.com/v21.0/123456789012345/events"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = RelayConfig::parse(&format!("{MIN}\n[dispatch]\nbatchsize = 3\n"), "t.toml")
            .expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("batchsize") && msg.contains("t.toml"), "{msg}");
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
