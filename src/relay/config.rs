//! Relay configuration: the TOML model, destinations (`[[destination]]` or the legacy `[tiktok]`
//! table) and validation. Secrets and secret-safe error messages live in [`super::secrets`].

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::error::ConfigError;
use super::secrets;

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

/// Kind of destination.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// TikTok Events API 2.0.
    Tiktok,
    /// Meta Conversions API.
    Meta,
}

impl DestinationKind {
    /// Lowercase name as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Tiktok => "tiktok",
            DestinationKind::Meta => "meta",
        }
    }
}

/// One `[[destination]]` (or the legacy `[tiktok]`) as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationTable {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<DestinationKind>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    pixel_code: Option<String>,
    #[serde(default)]
    pixel_id: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    action_source: Option<String>,
    #[serde(default)]
    access_token_env: Option<Spanned<String>>,
    #[serde(default)]
    access_token_file: Option<PathBuf>,
    #[serde(default)]
    test_event_code: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    send_ttp: Option<bool>,
    #[serde(default)]
    send_fbp: Option<bool>,
    #[serde(default)]
    send_hashed_email: Option<bool>,
    #[serde(default)]
    send_hashed_phone: Option<bool>,
    #[serde(default)]
    send_client_ip: Option<bool>,
    #[serde(default)]
    send_user_agent: Option<bool>,
    #[serde(default)]
    mapping: Option<Vec<MappingRule>>,
}

/// Which optional values a destination receives (each off unless noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldAllowlist {
    /// TikTok `user.ttp` (the `_ttp` cookie).
    pub ttp: bool,
    /// Meta `user_data.fbp` (the `_fbp` cookie; on by default for Meta).
    pub fbp: bool,
    /// SHA-256 of the normalised email.
    pub hashed_email: bool,
    /// SHA-256 of the normalised phone number.
    pub hashed_phone: bool,
    /// Meta `client_ip_address`.
    pub client_ip: bool,
    /// Meta `client_user_agent`.
    pub user_agent: bool,
}

/// A resolved destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Unique name (`tiktok`, `meta`, ...): outbox rows, metrics and the audit log use it.
    pub name: String,
    /// Kind.
    pub kind: DestinationKind,
    /// Full URL requests are posted to.
    pub endpoint: String,
    /// TikTok pixel code or Meta pixel (dataset) id.
    pub pixel: String,
    /// Meta `action_source` (always `website` today).
    pub action_source: String,
    /// Environment variable holding the access token.
    pub access_token_env: String,
    /// File holding the access token (used when the variable is unset).
    pub access_token_file: Option<PathBuf>,
    /// When set, every event is sent as a test event with this code.
    pub test_event_code: Option<String>,
    /// Request timeout in milliseconds.
    pub timeout_ms: u64,
    /// Events per request (1..=1000).
    pub batch_size: usize,
    /// Optional values this destination receives.
    pub fields: FieldAllowlist,
    /// Descriptive event name -> this destination's standard event.
    pub mappings: Vec<MappingRule>,
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

/// Meta standard events accepted as mapping targets.
pub const META_STANDARD_EVENTS: &[&str] = &[
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Donate",
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
fn valid_name(n: &str) -> bool {
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
                    return Err("[tiktok] takes no kind or name; use [[destination]] for that".into());
                }
                t.kind = Some(DestinationKind::Tiktok);
                vec![("tiktok".to_string(), t)]
            }
            (None, d) if d.is_empty() => {
                return Err(
                    "no destination: add a [[destination]] with kind = \"tiktok\" or \"meta\"".into(),
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
            destinations.push(resolve_destination(&path, t, &raw.mapping, &raw.dispatch, text)?);
        }
        for (i, d) in destinations.iter().enumerate() {
            if destinations[..i].iter().any(|o| o.name == d.name) {
                return Err(format!(
                    "destination name {:?} is used twice; give each [[destination]] its own name",
                    d.name
                ));
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
        for (key, list) in [("consent.sources", &c.sources), ("consent.purposes", &c.purposes)] {
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

fn resolve_destination(
    path: &str,
    t: DestinationTable,
    default_mapping: &[MappingRule],
    dispatch: &DispatchConfig,
    text: &str,
) -> Result<Destination, String> {
    let kind = t
        .kind
        .ok_or_else(|| format!("{path}.kind is required: \"tiktok\" or \"meta\""))?;
    let name = t.name.clone().unwrap_or_else(|| kind.as_str().to_string());
    if !valid_name(&name) {
        return Err(format!(
            "{path}.name {name:?} must be a lowercase name (a-z, 0-9, _; at most 32)"
        ));
    }
    let only = |key: &str, set: bool, for_kind: DestinationKind| -> Result<(), String> {
        if set && kind != for_kind {
            return Err(format!(
                "{path}.{key} applies to kind = \"{}\" only, this destination is \"{}\"",
                for_kind.as_str(),
                kind.as_str()
            ));
        }
        Ok(())
    };
    use DestinationKind::{Meta, Tiktok};
    only("pixel_code", t.pixel_code.is_some(), Tiktok)?;
    only("send_ttp", t.send_ttp.is_some(), Tiktok)?;
    only("pixel_id", t.pixel_id.is_some(), Meta)?;
    only("api_version", t.api_version.is_some(), Meta)?;
    only("action_source", t.action_source.is_some(), Meta)?;
    only("send_fbp", t.send_fbp.is_some(), Meta)?;
    only("send_client_ip", t.send_client_ip.is_some(), Meta)?;
    only("send_user_agent", t.send_user_agent.is_some(), Meta)?;
    let default_env = match kind {
        Tiktok => DEFAULT_TOKEN_ENV,
        Meta => DEFAULT_META_TOKEN_ENV,
    };
    let access_token_env = match &t.access_token_env {
        Some(env) => {
            secrets::check_env_name(&format!("{path}.access_token_env"), env, text)?;
            env.get_ref().clone()
        }
        None => default_env.to_string(),
    };
    let (pixel, endpoint) = match kind {
        Tiktok => {
            let pixel = t
                .pixel_code
                .filter(|p| !p.trim().is_empty())
                .ok_or_else(|| format!("{path}.pixel_code is required"))?;
            let endpoint = t.endpoint.unwrap_or_else(|| {
                "https://business-api.tiktok.com/open_api/v1.3/event/track/".to_string()
            });
            (pixel, endpoint)
        }
        Meta => {
            let pixel = t
                .pixel_id
                .filter(|p| !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("{path}.pixel_id is required: the numeric pixel (dataset) id"))?;
            let version = t
                .api_version
                .unwrap_or_else(|| DEFAULT_META_API_VERSION.to_string());
            let ok = version.len() <= 8
                && version.strip_prefix('v').is_some_and(|v| {
                    v.split('.').count() == 2
                        && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                });
            if !ok {
                return Err(format!(
                    "{path}.api_version {version:?} must look like \"v21.0\""
                ));
            }
            let endpoint = t.endpoint.unwrap_or_else(|| {
                format!("https://graph.facebook.com/{version}/{pixel}/events")
            });
            (pixel, endpoint)
        }
    };
    let u = url::Url::parse(&endpoint).map_err(|e| format!("{path}.endpoint {endpoint:?}: {e}"))?;
    if u.query().is_some() || !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "{path}.endpoint must be an http(s) URL without a query (tokens never go in it)"
        ));
    }
    let action_source = t.action_source.unwrap_or_else(|| "website".to_string());
    if action_source != "website" {
        return Err(format!(
            "{path}.action_source: only \"website\" is supported (the relay receives web events)"
        ));
    }
    if let Some(c) = &t.test_event_code
        && !valid_test_code(c)
    {
        return Err(format!(
            "{path}.test_event_code must look like TEST12345"
        ));
    }
    let batch_size = t.batch_size.unwrap_or(dispatch.batch_size);
    if !(1..=1000).contains(&batch_size) {
        return Err(format!("{path}.batch_size must be 1..=1000, got {batch_size}"));
    }
    let mappings = t.mapping.unwrap_or_else(|| default_mapping.to_vec());
    let standard = match kind {
        Tiktok => STANDARD_EVENTS,
        Meta => META_STANDARD_EVENTS,
    };
    let which = if kind == Tiktok { "TikTok" } else { "Meta" };
    for (i, m) in mappings.iter().enumerate() {
        if !standard.contains(&m.to.as_str()) {
            return Err(format!(
                "{path} mapping[{i}].to: {:?} is not a {which} standard event",
                m.to
            ));
        }
    }
    let fields = FieldAllowlist {
        ttp: t.send_ttp.unwrap_or(false),
        fbp: t.send_fbp.unwrap_or(true),
        hashed_email: t.send_hashed_email.unwrap_or(false),
        hashed_phone: t.send_hashed_phone.unwrap_or(false),
        client_ip: t.send_client_ip.unwrap_or(false),
        user_agent: t.send_user_agent.unwrap_or(false),
    };
    Ok(Destination {
        name,
        kind,
        endpoint,
        pixel,
        action_source,
        access_token_env,
        access_token_file: t.access_token_file,
        test_event_code: t.test_event_code,
        timeout_ms: t.timeout_ms.unwrap_or(10_000),
        batch_size,
        fields,
        mappings,
    })
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
            include_str!("../../relay.example.toml"),
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
    fn destinations_resolve_defaults_mappings_and_kinds() {
        let text = r#"
[server]
listen = "127.0.0.1:0"
[database]
path = "r.db"
[[mapping]]
from = "Booked"
to = "Schedule"
[[destination]]
kind = "tiktok"
pixel_code = "C1"
[[destination]]
kind = "meta"
pixel_id = "1234"
send_client_ip = true
[[destination.mapping]]
from = "Booked"
to = "Lead"
[[page_category]]
path_pattern = ".*"
url = "https://clinic.example/"
"#;
        let c = RelayConfig::parse(text, "t").expect("valid");
        assert_eq!(c.destinations[0].mappings[0].to, "Schedule");
        assert_eq!(c.destinations[1].mappings[0].to, "Lead");
        assert_eq!(c.destinations[1].access_token_env, DEFAULT_META_TOKEN_ENV);
        assert!(c.destinations[1].fields.client_ip && c.destinations[1].fields.fbp);
        let bad = [
            (text.replace("pixel_id = \"1234\"", "pixel_code = \"1234\""), "applies to kind = \"tiktok\" only"),
            (text.replace("kind = \"meta\"", "kind = \"meta\"\nname = \"tiktok\""), "used twice"),
            (text.replace("to = \"Lead\"", "to = \"ApplicationApproval\""), "not a Meta standard event"),
            (format!("{text}\n[tiktok]\npixel_code = \"C\"\n"), "both [tiktok] and [[destination]]"),
            (text.replace("pixel_id = \"1234\"", "pixel_id = \"1234\"\nendpoint = \"https://g.example/x?access_token=1\""), "without a query"),
        ];
        for (t, want) in bad {
            let e = RelayConfig::parse(&t, "t").expect_err(want).to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
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
