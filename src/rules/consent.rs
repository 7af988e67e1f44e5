//! Consent-manager buttons (`rules/consent.toml`): what `--consent accept|reject` presses.

use serde::Deserialize;

use super::RulesError;

const BUNDLED: &str = include_str!("../../rules/consent.toml");

/// Whether and how a scan answers consent banners.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ConsentMode {
    /// Never click: everything that fires is pre-consent.
    #[default]
    None,
    /// Press the banner's accept button.
    Accept,
    /// Press the banner's reject button.
    Reject,
    /// Never click, but send the Global Privacy Control signal (`Sec-GPC: 1`,
    /// `navigator.globalPrivacyControl`): advertising that still fires ignores an opt-out.
    Gpc,
}

impl ConsentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentMode::None => "none",
            ConsentMode::Accept => "accept",
            ConsentMode::Reject => "reject",
            ConsentMode::Gpc => "gpc",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    generic_accept: String,
    generic_reject: String,
    cmp: Vec<Cmp>,
}

/// One consent manager.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cmp {
    pub name: String,
    pub accept: Vec<String>,
    pub reject: Vec<String>,
}

/// The compiled consent rules.
#[derive(Debug, Clone)]
pub struct ConsentRules {
    pub cmps: Vec<Cmp>,
    pub generic_accept: String,
    pub generic_reject: String,
}

impl ConsentRules {
    /// The bundled rules.
    pub fn bundled() -> ConsentRules {
        Self::parse("consent.toml", BUNDLED)
            .unwrap_or_else(|e| panic!("bundled rules are broken: {e}"))
    }

    /// Parses a consent rules file; regexes are checked here, not at click time.
    pub fn parse(path: &str, text: &str) -> Result<ConsentRules, RulesError> {
        let f: File = toml::from_str(text).map_err(|e| RulesError::Parse {
            path: path.to_string(),
            line: super::toml_error_line(text, &e),
            message: e.message().to_string(),
        })?;
        for (name, re) in [
            ("generic_accept", &f.generic_accept),
            ("generic_reject", &f.generic_reject),
        ] {
            regex::Regex::new(re).map_err(|e| RulesError::Invalid {
                path: path.to_string(),
                id: name.to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(ConsentRules {
            cmps: f.cmp,
            generic_accept: f.generic_accept,
            generic_reject: f.generic_reject,
        })
    }

    /// (CMP name, selector) pairs to try for `mode`, in order, and the generic text regex.
    pub fn buttons(&self, mode: ConsentMode) -> (Vec<(String, String)>, String) {
        let mut out = Vec::new();
        for c in &self.cmps {
            let sels = match mode {
                ConsentMode::Accept => &c.accept,
                ConsentMode::Reject => &c.reject,
                ConsentMode::None | ConsentMode::Gpc => continue,
            };
            out.extend(sels.iter().map(|s| (c.name.clone(), s.clone())));
        }
        let generic = match mode {
            ConsentMode::Reject => self.generic_reject.clone(),
            _ => self.generic_accept.clone(),
        };
        (out, generic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_rules_cover_the_common_cmps() {
        let r = ConsentRules::bundled();
        for name in [
            "OneTrust",
            "Cookiebot",
            "CookieYes",
            "Termly",
            "Osano",
            "Usercentrics",
            "TrustArc",
            "Iubenda",
            "Complianz",
        ] {
            assert!(r.cmps.iter().any(|c| c.name == name), "{name}");
        }
        let (accept, generic) = r.buttons(ConsentMode::Accept);
        assert_eq!(
            accept[0],
            ("OneTrust".into(), "#onetrust-accept-btn-handler".into())
        );
        let re = regex::Regex::new(&format!("(?i){generic}")).unwrap();
        assert!(
            re.is_match("Accept all")
                && re.is_match("OK")
                && !re.is_match("Accept our terms of service")
        );
        let (_, generic) = r.buttons(ConsentMode::Reject);
        let re = regex::Regex::new(&format!("(?i){generic}")).unwrap();
        assert!(re.is_match("Reject All") && re.is_match("Only necessary"));
    }

    #[test]
    fn a_bad_regex_names_the_file() {
        let e = ConsentRules::parse(
            "mine.toml",
            "generic_accept = '('\ngeneric_reject = 'x'\ncmp = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("mine.toml") && e.contains("generic_accept"),
            "{e}"
        );
    }
}
