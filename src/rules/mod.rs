//! Vendor rules: `rules/*.toml` compiled once into an immutable engine that names the vendor of
//! a request URL and the rule (file and id) that said so.

pub mod consent;
pub mod filterlist;
pub mod roles;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Category, Severity};

/// The vendor rules shipped in the binary.
pub const BUNDLED: &[(&str, &str)] = &[("vendors.toml", include_str!("../../rules/vendors.toml"))];

/// Every rule a scan judges by, loaded and compiled once: vendors, the health lexicon, consent
/// managers, page roles and optional filter lists.
pub struct RuleSet {
    pub vendors: Engine,
    pub lexicon: &'static crate::lexicon::Lexicon,
    pub consent: consent::ConsentRules,
    pub page_roles: roles::PageRoles,
    pub filters: Option<filterlist::FilterLists>,
}

impl RuleSet {
    /// The bundled rules plus the user's `dir` (vendor files, `page-roles.toml`) and filter
    /// lists. A broken file is an error naming it.
    pub fn load(dir: Option<&Path>, filter_lists: &[PathBuf]) -> Result<RuleSet, RulesError> {
        Ok(RuleSet {
            vendors: match dir {
                Some(d) => Engine::with_dir(d)?,
                None => Engine::bundled(),
            },
            lexicon: crate::lexicon::Lexicon::bundled(),
            consent: consent::ConsentRules::bundled(),
            page_roles: roles::PageRoles::from_dir(dir)?,
            filters: filterlist::FilterLists::load(filter_lists)?,
        })
    }
}

/// Errors loading rules; each names the file and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Roles(#[from] roles::RolesError),
    #[error("cannot read rules file '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("rules file '{path}': line {line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("rules file '{path}': vendor '{id}': {message}")]
    Invalid {
        path: String,
        id: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    vendor: Vec<VendorDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VendorDef {
    id: String,
    name: String,
    category: Category,
    hosts: Vec<String>,
    baa: bool,
    baa_checked: String,
    severity: Severity,
    /// The vendor's standard event names; anything else is a custom (descriptive) event.
    #[serde(default)]
    standard_events: Vec<String>,
    /// Payload parser for event names: "tiktok", "meta", "ga4", or "query:PARAM".
    #[serde(default)]
    parser: Option<String>,
    /// Names of the cookies this vendor sets (a trailing `*` matches a prefix).
    #[serde(default)]
    cookies: Vec<String>,
}

/// One vendor as compiled.
#[derive(Debug, Clone)]
pub struct Vendor {
    pub id: String,
    pub name: String,
    pub category: Category,
    pub baa: bool,
    pub baa_checked: String,
    pub severity: Severity,
    pub standard_events: Vec<String>,
    pub parser: Option<String>,
    pub cookies: Vec<String>,
    /// "file:id", for provenance.
    pub rule: String,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// Host, or suffix when `wildcard`.
    host: String,
    wildcard: bool,
    path_prefix: String,
    vendor: usize,
    text: String,
}

/// Why a URL matched.
#[derive(Debug, Clone)]
pub struct RuleMatch<'a> {
    pub vendor: &'a Vendor,
    pub pattern: &'a str,
}

/// The compiled, immutable rule set.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    vendors: Vec<Vendor>,
    patterns: Vec<Pattern>,
}

impl Engine {
    /// The rules shipped with pixelwatch.
    pub fn bundled() -> Engine {
        let mut e = Engine::default();
        for (file, text) in BUNDLED {
            e.add_file(file, text)
                .unwrap_or_else(|err| panic!("bundled rules are broken: {err}"));
        }
        e
    }

    /// Bundled rules plus every `*.toml` in `dir` (a user's own rules).
    pub fn with_dir(dir: &Path) -> Result<Engine, RulesError> {
        let mut e = Engine::bundled();
        for path in toml_files(dir)? {
            let text = std::fs::read_to_string(&path).map_err(|source| RulesError::Read {
                path: path.display().to_string(),
                source,
            })?;
            e.add_file(&path.display().to_string(), &text)?;
        }
        Ok(e)
    }

    /// Parses and adds one rules file.
    pub fn add_file(&mut self, path: &str, text: &str) -> Result<(), RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::Parse {
            path: path.to_string(),
            line: toml_error_line(text, &e),
            message: e.message().to_string(),
        })?;
        let short = Path::new(path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string());
        for def in file.vendor {
            let invalid = |message: &str| RulesError::Invalid {
                path: path.to_string(),
                id: def.id.clone(),
                message: message.to_string(),
            };
            if let Some(p) = def.parser.as_deref()
                && !["tiktok", "meta", "ga4"].contains(&p)
                && p.strip_prefix("query:").is_none_or(str::is_empty)
            {
                return Err(invalid(&format!(
                    "unknown parser '{p}' (known: tiktok, meta, ga4, query:PARAM)"
                )));
            }
            if def.hosts.is_empty() {
                return Err(invalid("`hosts` is empty"));
            }
            if self.vendors.iter().any(|v| v.id == def.id) {
                return Err(invalid("duplicate vendor id"));
            }
            let idx = self.vendors.len();
            for h in &def.hosts {
                let (host, path_prefix) = match h.split_once('/') {
                    Some((host, p)) => (host, format!("/{p}")),
                    None => (h.as_str(), String::new()),
                };
                if host.is_empty() || host.contains(' ') {
                    return Err(invalid(&format!("bad host pattern '{h}'")));
                }
                let (host, wildcard) = match host.strip_prefix("*.") {
                    Some(rest) => (rest, true),
                    None => (host, false),
                };
                self.patterns.push(Pattern {
                    host: host.to_ascii_lowercase(),
                    wildcard,
                    path_prefix,
                    vendor: idx,
                    text: h.clone(),
                });
            }
            self.vendors.push(Vendor {
                rule: format!("{short}:{}", def.id),
                id: def.id,
                name: def.name,
                category: def.category,
                baa: def.baa,
                baa_checked: def.baa_checked,
                severity: def.severity,
                standard_events: def.standard_events,
                parser: def.parser,
                cookies: def.cookies,
            });
        }
        // Most specific first: a path pattern beats a host, an exact host beats a wildcard.
        self.patterns
            .sort_by_key(|p| std::cmp::Reverse((p.path_prefix.len(), !p.wildcard, p.host.len())));
        Ok(())
    }

    /// The vendor that sets a cookie: by its name, else by its domain's host patterns.
    pub fn match_cookie(&self, name: &str, domain: &str) -> Option<&Vendor> {
        let by_name = self.vendors.iter().find(|v| {
            v.cookies.iter().any(|c| match c.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => c == name,
            })
        });
        by_name.or_else(|| {
            let host = domain.trim_start_matches('.');
            self.match_url(&format!("https://{host}/"))
                .map(|m| m.vendor)
        })
    }

    /// All vendors.
    pub fn vendors(&self) -> &[Vendor] {
        &self.vendors
    }

    /// The vendor by id.
    pub fn vendor(&self, id: &str) -> Option<&Vendor> {
        self.vendors.iter().find(|v| v.id == id)
    }

    /// The vendor a request URL belongs to, with the pattern that matched.
    pub fn match_url(&self, url: &str) -> Option<RuleMatch<'_>> {
        let u = url::Url::parse(url).ok()?;
        let host = u.host_str()?.to_ascii_lowercase();
        let path = u.path();
        self.patterns
            .iter()
            .find(|p| {
                let host_ok = if p.wildcard {
                    host == p.host || host.ends_with(&format!(".{}", p.host))
                } else {
                    host == p.host
                };
                host_ok && path.starts_with(&p.path_prefix)
            })
            .map(|p| RuleMatch {
                vendor: &self.vendors[p.vendor],
                pattern: &p.text,
            })
    }
}

/// The 1-based line a TOML error points at (0 when it points nowhere).
pub(crate) fn toml_error_line(text: &str, e: &toml::de::Error) -> usize {
    e.span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(0)
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, RulesError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RulesError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_rules_match_the_big_pixels() {
        let e = Engine::bundled();
        assert!(e.vendors().len() >= 35);
        let cases = [
            (
                "https://analytics.tiktok.com/i18n/pixel/events.js",
                "tiktok",
            ),
            ("https://www.facebook.com/tr?id=1&ev=PageView", "meta"),
            ("https://connect.facebook.net/en_US/fbevents.js", "meta"),
            (
                "https://www.googletagmanager.com/gtag/js?id=G-1",
                "google-analytics",
            ),
            (
                "https://www.googletagmanager.com/gtm.js?id=GTM-1",
                "google-tag-manager",
            ),
            (
                "https://region1.google-analytics.com/g/collect",
                "google-analytics",
            ),
            ("https://bat.bing.com/action/0", "microsoft-uet"),
        ];
        for (url, id) in cases {
            let m = e
                .match_url(url)
                .unwrap_or_else(|| panic!("{url} unmatched"));
            assert_eq!(m.vendor.id, id, "{url}");
        }
        assert!(e.match_url("https://www.facebook.com/clinicpage").is_none());
        assert!(e.match_url("https://cdn.clinic.test/app.js").is_none());
        assert_eq!(
            e.match_url("https://analytics.tiktok.com/api/v2/pixel")
                .unwrap()
                .vendor
                .rule,
            "vendors.toml:tiktok"
        );
    }

    #[test]
    fn broken_file_names_file_and_line() {
        let mut e = Engine::default();
        let text = "[[vendor]]\nid = \"x\"\nname = \"X\"\ncategory = \"advertising\"\nhots = [\"a.com\"]\n";
        let err = e.add_file("rules/x.toml", text).unwrap_err().to_string();
        assert!(err.contains("rules/x.toml"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("hots"), "{err}");
        // A category is an enum: a typo is an error with its line, not a vendor never judged.
        let text = "[[vendor]]\nid = \"x\"\nname = \"X\"\ncategory = \"ads\"\n";
        let err = e.add_file("rules/x.toml", text).unwrap_err().to_string();
        assert!(
            err.contains("line 4") && err.contains("unknown variant `ads`"),
            "{err}"
        );
    }
}
