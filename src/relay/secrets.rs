//! Secrets: loading access tokens and the HMAC key from the environment or files, and keeping
//! them out of every message.
//!
//! Rule: no config error quotes a value from the file. A TOML error names the line, the column,
//! the table and the key (when the key looks like a config key), and its message has every
//! quoted value removed; `*_env` keys must hold a variable name, and one that does not is
//! refused without being printed (it may be a token pasted into the wrong key).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use regex::Regex;
use toml::Spanned;

use super::config::RelayConfig;
use super::error::ConfigError;

/// Secrets loaded from the environment or files; never printed.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Access token per destination name.
    pub tokens: BTreeMap<String, String>,
    /// HMAC key for back-end callers.
    pub hmac_secret: Option<Vec<u8>>,
}

impl Secrets {
    /// The access token of one destination.
    pub fn token(&self, destination: &str) -> Option<&str> {
        self.tokens.get(destination).map(String::as_str)
    }

    /// Secrets with one token (tests and embedding).
    pub fn with_token(destination: &str, token: &str) -> Secrets {
        let mut s = Secrets::default();
        s.tokens.insert(destination.to_string(), token.to_string());
        s
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("tokens", &self.tokens.keys().collect::<Vec<_>>())
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl RelayConfig {
    /// Load secrets: for each destination its access token, then the HMAC key; environment
    /// variable first, then file.
    pub fn load_secrets(&self) -> Result<Secrets, ConfigError> {
        let mut tokens = BTreeMap::new();
        for d in &self.destinations {
            if let Some(t) = secret(&d.access_token_env, &d.access_token_file)? {
                tokens.insert(d.name.clone(), t);
            }
        }
        let hmac_secret = secret(
            self.auth.hmac_secret_env.get_ref(),
            &self.auth.hmac_secret_file,
        )?
        .map(String::into_bytes);
        Ok(Secrets {
            tokens,
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

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// " (line N)" for a value read from the config text.
pub(crate) fn at_line(text: &str, v: &Spanned<String>) -> String {
    let span = v.span();
    if span.is_empty() {
        return String::new();
    }
    format!(" (line {})", line_col(text, span.start).0)
}

/// A key is shown only when it looks like a config key: letters and `_` (no digits, which
/// tokens almost always have), at most 40 characters.
fn shown_key(k: &str) -> Option<&str> {
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && k.len() <= 40 && k.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_'))
        .then_some(k)
}

/// Key names that hold a secret when someone puts one in the file by mistake.
const SECRET_KEYS: &[&str] = &[
    "access_token",
    "token",
    "secret",
    "hmac_secret",
    "password",
    "api_key",
    "app_secret",
];

static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*"|'[^']*'|`[^`]*`"#).expect("quote regex"));

/// Describe a TOML error without quoting any value from the file: line and column, the table
/// header above the error, the key of the line, and the parser's message with every quoted
/// string replaced (keys in backticks are kept when they look like config keys).
pub fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return redact(e.message());
    };
    let (line, col) = line_col(text, span.start);
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    let table = text
        .lines()
        .take(line)
        .filter(|l| l.trim_start().starts_with('['))
        .last()
        .map(|l| l.trim())
        .filter(|l| {
            let inner = l.trim_matches(|c| c == '[' || c == ']');
            l.ends_with(']') && shown_key(&inner.replace('.', "_")).is_some()
        });
    let key = line_text.split_once('=').and_then(|(k, _)| shown_key(k));
    let mut out = format!("line {line}, column {col}");
    if let Some(t) = table {
        out.push_str(&format!(" in {t}"));
    }
    if let Some(k) = key {
        out.push_str(&format!(", key `{k}`"));
        if SECRET_KEYS.contains(&k) {
            out.push_str(
                ": secrets never go in the config file; name an environment variable in \
                 access_token_env / hmac_secret_env, or a file in access_token_file / \
                 hmac_secret_file (the value is not shown)",
            );
            return out;
        }
    } else if line_text.contains('=') {
        out.push_str(", a key that does not look like a config key (not shown)");
    }
    out.push_str(": ");
    out.push_str(&redact(e.message()));
    out.push_str(" (values are not shown)");
    out
}

fn redact(message: &str) -> String {
    let first = message.lines().next().unwrap_or("").trim();
    QUOTED
        .replace_all(first, |c: &regex::Captures<'_>| {
            let m = &c[0];
            match m.strip_prefix('`').and_then(|s| s.strip_suffix('`')) {
                Some(k) if shown_key(k).is_some() => m.to_string(),
                _ => "<value>".to_string(),
            }
        })
        .into_owned()
}

/// Environment variable names: upper-case letters, digits and `_`, not starting with a digit.
pub fn valid_env_name(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// Refuse an `*_env` value that is not a variable name, naming key and line but not the value.
pub fn check_env_name(key: &str, v: &Spanned<String>, text: &str) -> Result<(), String> {
    if valid_env_name(v.get_ref()) {
        return Ok(());
    }
    let (line, _) = line_col(text, v.span().start);
    Err(format!(
        "{key} (line {line}) must name an environment variable (A-Z, 0-9, _), and this value \
         does not look like one; it is not shown in case it is the secret itself"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = crate::relay::config::TEST_CONFIG;

    const TOKEN: &str = "9f3c2aa7e41b5d6c8e0f1a2b3c4d5e6f7a8b9c0d";

    #[test]
    fn secrets_in_secret_tables_are_never_echoed() {
        let cases = [
            // A token pasted into the file under a secret-looking key.
            MIN.replace(
                "pixel_code",
                &format!("access_token = \"{TOKEN}\"\npixel_code"),
            ),
            // A token as the value of a key with the wrong type.
            MIN.replace(
                "pixel_code = \"C1\"",
                &format!("pixel_code = \"C1\"\ntimeout_ms = \"{TOKEN}\""),
            ),
            // A token pasted as a bare line, and as an unquoted value.
            MIN.replace(
                "pixel_code = \"C1\"",
                &format!("pixel_code = \"C1\"\n{TOKEN}"),
            ),
            MIN.replace(
                "pixel_code = \"C1\"",
                &format!("pixel_code = \"C1\"\nsend_ttp = {TOKEN}"),
            ),
            // A token used as a key.
            MIN.replace(
                "pixel_code = \"C1\"",
                &format!("pixel_code = \"C1\"\nx{TOKEN} = 1"),
            ),
            // A token where a variable name goes.
            MIN.replace(
                "pixel_code = \"C1\"",
                &format!("pixel_code = \"C1\"\naccess_token_env = \"{TOKEN}\""),
            ),
            format!("{MIN}\n[auth]\nhmac_secret_env = \"{TOKEN}\"\n"),
            // A token pasted where a URL, a name or a test code goes.
            MIN.replace(
                "pixel_code = \"C1\"",
                &format!("pixel_code = \"C1\"\nendpoint = \"{TOKEN}\""),
            ),
            MIN.replace(
                "pixel_code = \"C1\"",
                &format!("pixel_code = \"C1\"\ntest_event_code = \"{TOKEN}\""),
            ),
            format!("{MIN}\n[auth]\nhmac_secret_file = {TOKEN}\n"),
            format!("{MIN}\n[auth]\nhmac_secret_env = \"lower-case {TOKEN}\"\n"),
        ];
        for text in cases {
            let e = RelayConfig::parse(&text, "t.toml")
                .expect_err(&text)
                .to_string();
            assert!(!e.contains(&TOKEN[..12]), "value echoed: {e}");
            assert!(e.contains("line "), "names the line: {e}");
        }
        let e = RelayConfig::parse(
            &MIN.replace(
                "pixel_code",
                &format!("access_token = \"{TOKEN}\"\npixel_code"),
            ),
            "t.toml",
        )
        .expect_err("token in file")
        .to_string();
        assert!(
            e.contains("line 7") && e.contains("`access_token`") && e.contains("[tiktok]"),
            "{e}"
        );
        assert!(e.contains("secrets never go in the config file"), "{e}");
        let e = RelayConfig::parse(
            &MIN.replace(
                "pixel_code = \"C1\"",
                &format!("pixel_code = \"C1\"\naccess_token_env = \"{TOKEN}\""),
            ),
            "t.toml",
        )
        .expect_err("token as env name")
        .to_string();
        assert!(e.contains("access_token_env (line 8)"), "{e}");
    }

    #[test]
    fn env_names_and_redaction() {
        assert!(valid_env_name("PIXELWATCH_TIKTOK_ACCESS_TOKEN"));
        assert!(valid_env_name("_X1"));
        for bad in ["", "1X", "lower", "HAS SPACE", "A-B", TOKEN] {
            assert!(!valid_env_name(bad), "{bad}");
        }
        assert_eq!(
            redact("invalid type: string \"s3cr3t\", expected u64"),
            "invalid type: string <value>, expected u64"
        );
        assert_eq!(
            redact("unknown field `x9f3c`, expected one of `endpoint`, `pixel_code`"),
            "unknown field <value>, expected one of `endpoint`, `pixel_code`"
        );
    }
}
