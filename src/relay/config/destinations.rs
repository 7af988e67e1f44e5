//! Destinations in the config: the `[[destination]]` table (and the legacy `[tiktok]` one) as
//! written, and the resolved [`Destination`] with its defaults, mapping and allowlist.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{
    DEFAULT_META_API_VERSION, DEFAULT_META_TOKEN_ENV, DEFAULT_TOKEN_ENV, DispatchConfig,
    MappingRule, valid_name, valid_test_code,
};
use crate::relay::secrets;

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
pub(super) struct DestinationTable {
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) kind: Option<DestinationKind>,
    #[serde(default)]
    endpoint: Option<Spanned<String>>,
    #[serde(default)]
    pixel_code: Option<String>,
    #[serde(default)]
    pixel_id: Option<String>,
    #[serde(default)]
    api_version: Option<Spanned<String>>,
    #[serde(default)]
    action_source: Option<String>,
    #[serde(default)]
    access_token_env: Option<Spanned<String>>,
    #[serde(default)]
    access_token_file: Option<PathBuf>,
    #[serde(default)]
    test_event_code: Option<Spanned<String>>,
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

pub(super) fn resolve_destination(
    path: &str,
    t: DestinationTable,
    default_mapping: &[MappingRule],
    dispatch: &DispatchConfig,
    text: &str,
) -> Result<Destination, String> {
    let kind = t
        .kind
        .ok_or_else(|| format!("{path}.kind is required: \"tiktok\" or \"meta\""))?;
    // Values of this table are never quoted in errors (a token may have been pasted into
    // any of them): errors name the key and, where known, the line.
    let line = |v: &Option<Spanned<String>>| {
        v.as_ref()
            .map(|v| secrets::at_line(text, v))
            .unwrap_or_default()
    };
    let name = t
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| kind.as_str().to_string());
    if !valid_name(&name) {
        return Err(format!(
            "{path}.name{} must be a lowercase name (a-z, 0-9, _; at most 32)",
            line(&t.name)
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
            let endpoint = t
                .endpoint
                .as_ref()
                .map(|e| e.get_ref().clone())
                .unwrap_or_else(|| {
                    "https://business-api.tiktok.com/open_api/v1.3/event/track/".to_string()
                });
            (pixel, endpoint)
        }
        Meta => {
            let pixel = t
                .pixel_id
                .filter(|p| !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("{path}.pixel_id is required: the numeric pixel (dataset) id")
                })?;
            let version = t
                .api_version
                .as_ref()
                .map(|v| v.get_ref().clone())
                .unwrap_or_else(|| DEFAULT_META_API_VERSION.to_string());
            let ok = version.len() <= 8
                && version.strip_prefix('v').is_some_and(|v| {
                    v.split('.').count() == 2
                        && v.split('.')
                            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                });
            if !ok {
                return Err(format!(
                    "{path}.api_version{} must look like \"v21.0\"",
                    line(&t.api_version)
                ));
            }
            let endpoint = t
                .endpoint
                .as_ref()
                .map(|e| e.get_ref().clone())
                .unwrap_or_else(|| format!("https://graph.facebook.com/{version}/{pixel}/events"));
            (pixel, endpoint)
        }
    };
    let bad_endpoint = || {
        format!(
            "{path}.endpoint{} must be an http(s) URL without a query (tokens never go in it)",
            line(&t.endpoint)
        )
    };
    let u = url::Url::parse(&endpoint).map_err(|_| bad_endpoint())?;
    if u.query().is_some() || !matches!(u.scheme(), "http" | "https") {
        return Err(bad_endpoint());
    }
    let action_source = t.action_source.unwrap_or_else(|| "website".to_string());
    if action_source != "website" {
        return Err(format!(
            "{path}.action_source: only \"website\" is supported (the relay receives web events)"
        ));
    }
    if let Some(c) = &t.test_event_code
        && !valid_test_code(c.get_ref())
    {
        return Err(format!(
            "{path}.test_event_code{} must look like TEST12345",
            line(&t.test_event_code)
        ));
    }
    let batch_size = t.batch_size.unwrap_or(dispatch.batch_size);
    if !(1..=1000).contains(&batch_size) {
        return Err(format!(
            "{path}.batch_size must be 1..=1000, got {batch_size}"
        ));
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
                "{path} mapping[{i}].to is not a {which} standard event (value not shown; see docs/relay.md)"
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
        test_event_code: t.test_event_code.map(Spanned::into_inner),
        timeout_ms: t.timeout_ms.unwrap_or(10_000),
        batch_size,
        fields,
        mappings,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_META_TOKEN_ENV, RelayConfig};

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
            (
                text.replace("pixel_id = \"1234\"", "pixel_code = \"1234\""),
                "applies to kind = \"tiktok\" only",
            ),
            (
                text.replace("kind = \"meta\"", "kind = \"meta\"\nname = \"tiktok\""),
                "same name",
            ),
            (
                text.replace("to = \"Lead\"", "to = \"ApplicationApproval\""),
                "not a Meta standard event",
            ),
            (
                format!("{text}\n[tiktok]\npixel_code = \"C\"\n"),
                "both [tiktok] and [[destination]]",
            ),
            (
                text.replace(
                    "pixel_id = \"1234\"",
                    "pixel_id = \"1234\"\nendpoint = \"https://g.example/x?access_token=1\"",
                ),
                "without a query",
            ),
        ];
        for (t, want) in bad {
            let e = RelayConfig::parse(&t, "t").expect_err(want).to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
