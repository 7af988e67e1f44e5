//! The watch configuration file (`pixelwatch.toml`): sites with their schedules and scan
//! settings, and where alerts go. Unknown keys anywhere are errors naming the file and line;
//! secrets are never in the file, only the name of an environment variable or a file.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::scan::ScanOptions;
use crate::settings::ScanSettings;
use crate::store::DbTarget;

/// Errors loading or checking a config file; each names the file (and line when known).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config '{path}': line {line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("config '{path}': {message}")]
    Invalid { path: String, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SQLite file or `postgres://` URL (default as for `pixelwatch scan`); `--db` beats it.
    #[serde(default)]
    pub db: Option<DbTarget>,
    /// Chromium or Chrome executable (default: as for `pixelwatch scan`).
    #[serde(default)]
    pub browser: Option<PathBuf>,
    /// Sites scanned at the same time (each scan runs its own browser).
    #[serde(default = "one")]
    pub max_concurrent_scans: usize,
    /// Alert that a site is down after this many consecutive failed scans (not on each).
    #[serde(default = "three")]
    pub alert_after_failures: u32,
    #[serde(default, rename = "site")]
    pub sites: Vec<SiteConfig>,
    #[serde(default)]
    pub email: Option<EmailConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn one() -> usize {
    1
}
fn three() -> u32 {
    3
}

/// One watched site: where, when, and how it is scanned.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// Start URL.
    pub url: String,
    /// Cron expression (5 fields, or 6 with seconds first), e.g. "0 3 * * *".
    pub schedule: String,
    /// Every other key of the block (`max_pages`, `consent`, `rules`, ...).
    pub settings: ScanSettings,
}

impl<'de> Deserialize<'de> for SiteConfig {
    /// `url` and `schedule`, then each other key as one [`ScanSettings`] field: an unknown key or
    /// a wrong type fails at that key's line, naming it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SiteConfig, D::Error> {
        use serde::de::{DeserializeSeed, Error, MapAccess, Visitor};
        struct Setting<'a>(&'a str);
        impl<'de> DeserializeSeed<'de> for Setting<'_> {
            type Value = ScanSettings;
            fn deserialize<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<ScanSettings, D::Error> {
                let value = toml::Value::deserialize(d)?;
                ScanSettings::from_toml_pair(self.0, value).map_err(D::Error::custom)
            }
        }
        struct Site;
        impl<'de> Visitor<'de> for Site {
            type Value = SiteConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [[site]] table with url, schedule and scan settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SiteConfig, A::Error> {
                let (mut url, mut schedule) = (None, None);
                let mut settings = ScanSettings::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "url" => url = Some(map.next_value()?),
                        "schedule" => schedule = Some(map.next_value()?),
                        _ => settings = settings.merge(map.next_value_seed(Setting(&key))?),
                    }
                }
                Ok(SiteConfig {
                    url: url.ok_or_else(|| A::Error::missing_field("url"))?,
                    schedule: schedule.ok_or_else(|| A::Error::missing_field("schedule"))?,
                    settings,
                })
            }
        }
        d.deserialize_map(Site)
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (required), usually port 587.
    Starttls,
    /// TLS from the first byte ("SMTPS"), usually port 465.
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

/// SMTP settings and recipients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    pub port: Option<u16>,
    pub security: Security,
    pub username: Option<String>,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Sender, e.g. "pixelwatch <alerts@clinic.example>".
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "thirty")]
    pub timeout_secs: u64,
    /// Extra root certificate (PEM) to trust, for a relay with a private CA.
    pub ca_file: Option<PathBuf>,
}

fn thirty() -> u64 {
    30
}

impl EmailConfig {
    /// The port, defaulting by security mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        })
    }

    /// The password, read now from the environment or the file (never from the config itself).
    pub fn password(&self) -> Result<Option<String>, String> {
        if let Some(var) = &self.password_env {
            return std::env::var(var).map(Some).map_err(|_| {
                format!("environment variable {var} (email.password_env) is not set")
            });
        }
        if let Some(file) = &self.password_file {
            return std::fs::read_to_string(file)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| format!("cannot read email.password_file '{}': {e}", file.display()));
        }
        Ok(None)
    }
}

/// A JSON webhook (Slack-compatible: the message is in `text`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default = "ten")]
    pub timeout_secs: u64,
}

fn ten() -> u64 {
    10
}

/// Retries of one alert within one run (a failed alert is also re-sent on the next run).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per alert and channel in one run.
    pub attempts: u32,
    /// Wait before the 2nd attempt; doubled each time, capped at `max_backoff_ms`, with jitter.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 4,
            backoff_ms: 2_000,
            max_backoff_ms: 60_000,
        }
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::parse(&text, &shown)
    }

    /// Parses and checks config text; `shown` names it in errors.
    pub fn parse(text: &str, shown: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.to_string(),
            line: crate::rules::toml_error_line(text, &e),
            message: e.message().to_string(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: shown.to_string(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.max_concurrent_scans == 0 {
            return Err("max_concurrent_scans must be at least 1".into());
        }
        if self.alert_after_failures == 0 {
            return Err("alert_after_failures must be at least 1".into());
        }
        if self.retry.attempts == 0 {
            return Err("retry.attempts must be at least 1".into());
        }
        for (i, s) in self.sites.iter().enumerate() {
            crate::crawl::normalize(&s.url)
                .ok_or_else(|| format!("site {} url '{}' is not an http(s) URL", i + 1, s.url))?;
            parse_schedule(&s.schedule).map_err(|e| format!("site {} ({}): {e}", i + 1, s.url))?;
            s.settings
                .check()
                .map_err(|e| format!("site {} ({}): {e}", i + 1, s.url))?;
        }
        if let Some(e) = &self.email {
            if e.to.is_empty() {
                return Err("email.to names no recipient".into());
            }
            for addr in std::iter::once(&e.from).chain(&e.to) {
                addr.parse::<lettre::message::Mailbox>()
                    .map_err(|err| format!("email address '{addr}': {err}"))?;
            }
            if e.ca_file.is_some() && e.security == Security::None {
                return Err("email.ca_file needs security = \"tls\" or \"starttls\"".into());
            }
            if e.password_env.is_some() && e.password_file.is_some() {
                return Err("set email.password_env or email.password_file, not both".into());
            }
            if e.username.is_some() && e.password_env.is_none() && e.password_file.is_none() {
                return Err(
                    "email.username is set but no password source: set email.password_env or email.password_file"
                        .into(),
                );
            }
        }
        if let Some(w) = &self.webhook {
            let ok = url::Url::parse(&w.url)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false);
            if !ok {
                return Err(format!("webhook.url '{}' is not an http(s) URL", w.url));
            }
        }
        Ok(())
    }
}

/// Parses a cron expression: 5 fields, or 6 with seconds first.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(expr).map_err(|e| format!("bad schedule '{expr}': {e}"))
}

impl SiteConfig {
    /// Scan options for this site; `browser` comes from the top of the file.
    pub fn scan_options(&self, browser: Option<&PathBuf>) -> ScanOptions {
        self.settings.to_options(&self.url, browser.cloned())
    }

    /// The normalized start URL (what scan reports and baselines are keyed by).
    pub fn site_key(&self) -> String {
        crate::crawl::normalize(&self.url)
            .map(|u| u.to_string())
            .unwrap_or_else(|| self.url.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
db = "/tmp/x.db"
[[site]]
url = "https://www.clinic.test/"
schedule = "0 3 * * *"
max_pages = 20

[email]
host = "smtp.example.com"
security = "starttls"
username = "u"
password_env = "SMTP_PW"
from = "pixelwatch <a@clinic.example>"
to = ["it@clinic.example"]

[webhook]
url = "https://hooks.example.com/x"
"#;

    #[test]
    fn the_example_in_docs_watch_md_parses() {
        let doc = include_str!("../docs/watch.md");
        let start = doc.find("```toml\n").expect("a toml example") + 8;
        let end = start + doc[start..].find("```").unwrap();
        let c = Config::parse(&doc[start..end], "docs/watch.md").unwrap();
        assert_eq!(c.sites.len(), 2);
        assert_eq!(c.email.unwrap().security, Security::Starttls);
    }

    #[test]
    fn a_site_block_takes_every_scan_setting_and_names_a_bad_one_with_its_line() {
        let text = GOOD.replace(
            "max_pages = 20",
            "consent = \"gpc\"\nprobe_forms = false\nrules = \"my-rules\"\nfilter_lists = [\"easyprivacy.txt\"]",
        );
        let c = Config::parse(&text, "w.toml").unwrap();
        let o = c.sites[0].scan_options(None);
        assert_eq!(o.consent, crate::rules::consent::ConsentMode::Gpc);
        assert!(!o.probe_forms);
        assert_eq!(o.rules_dir, Some(PathBuf::from("my-rules")));
        assert_eq!(o.filter_lists, vec![PathBuf::from("easyprivacy.txt")]);
        let bad = GOOD.replace("max_pages = 20", "max_pages = 20\nconsent = \"maybe\"");
        let e = Config::parse(&bad, "w.toml").unwrap_err().to_string();
        assert!(
            e.contains("line 7") && e.contains("consent") && e.contains("maybe"),
            "{e}"
        );
        let bad = GOOD.replace("schedule = \"0 3 * * *\"\n", "");
        let e = Config::parse(&bad, "w.toml").unwrap_err().to_string();
        assert!(e.contains("missing field `schedule`"), "{e}");
    }

    #[test]
    fn the_fleet_configs_in_deploy_parse() {
        let c = Config::parse(include_str!("../deploy/fleet.toml"), "deploy/fleet.toml").unwrap();
        assert!(c.sites.is_empty() && c.email.is_some());
        let k8s = include_str!("../deploy/kubernetes/config.yaml");
        let start = k8s.find("fleet.toml: |\n").expect("the ConfigMap's file") + 14;
        let text: String = k8s[start..]
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse(&text, "deploy/kubernetes/config.yaml").unwrap();
        assert_eq!(
            c.email.unwrap().password_env.as_deref(),
            Some("PIXELWATCH_SMTP_PASSWORD")
        );
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = Config::parse(GOOD, "w.toml").unwrap();
        assert_eq!(c.sites.len(), 1);
        assert_eq!(c.email.as_ref().unwrap().port(), 587);
        assert_eq!(c.retry.attempts, 4);
        assert_eq!(c.sites[0].scan_options(None).max_pages, 20);
    }

    #[test]
    fn unknown_keys_name_the_file_and_line() {
        let bad = GOOD.replace("max_pages = 20", "max_pages = 20\nmax_pagez = 3");
        let e = Config::parse(&bad, "w.toml").unwrap_err().to_string();
        assert!(
            e.contains("w.toml") && e.contains("line 7") && e.contains("max_pagez"),
            "{e}"
        );
        let bad = GOOD.replace("security = \"starttls\"", "security = \"ssl\"");
        let e = Config::parse(&bad, "w.toml").unwrap_err().to_string();
        assert!(e.contains("line 10") && e.contains("ssl"), "{e}");
    }

    #[test]
    fn a_password_in_the_file_is_rejected_and_schedules_are_checked() {
        let bad = GOOD.replace("password_env = \"SMTP_PW\"", "password = \"hunter2\"");
        let e = Config::parse(&bad, "w.toml").unwrap_err().to_string();
        assert!(e.contains("password"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let bad = GOOD.replace("0 3 * * *", "every day");
        let e = Config::parse(&bad, "w.toml").unwrap_err().to_string();
        assert!(e.contains("bad schedule 'every day'"), "{e}");
        assert!(parse_schedule("*/5 * * * * *").is_ok());
        let bad = GOOD.replace("max_pages = 20", "exclude = [\"(\"]");
        let e = Config::parse(&bad, "w.toml").unwrap_err().to_string();
        assert!(e.contains("bad exclude pattern '('"), "{e}");
    }
}
