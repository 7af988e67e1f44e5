//! Health-term lexicon: loads `rules/health-terms.toml` and finds whole-word health terms in text.
//!
//! Text and terms are split into lowercase words the same way, and a term matches only a run of
//! whole words, so `ms` never fires inside `terms`. [`Lexicon::find`] additionally splits
//! `camelCase` and letter/digit boundaries (`BookedGLP1Consultation` -> `booked glp 1
//! consultation`), which suits URLs, event names and JSON keys; [`Lexicon::find_plain`] splits only
//! on non-alphanumeric characters, which suits opaque identifiers such as click ids whose random
//! letters would otherwise form words by accident.

use std::collections::HashMap;

use serde::Deserialize;

/// The bundled lexicon source, compiled into the binary.
pub const BUNDLED_SOURCE: &str = include_str!("../rules/health-terms.toml");
/// The file name reported in errors about the bundled lexicon.
pub const BUNDLED_PATH: &str = "rules/health-terms.toml";

/// Why a lexicon file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    /// The TOML did not parse or did not match the schema.
    #[error("cannot read lexicon '{path}': {message}")]
    Parse {
        /// File the lexicon came from.
        path: String,
        /// Parser message, with line and column.
        message: String,
    },
    /// A term produced no words (empty or only punctuation).
    #[error("lexicon '{path}': group '{category}' has a term with no letters or digits: {term:?}")]
    EmptyTerm {
        /// File the lexicon came from.
        path: String,
        /// Category of the bad term.
        category: String,
        /// The offending term.
        term: String,
    },
}

/// A health term found in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The term as written in the lexicon.
    pub term: String,
    /// Its category (e.g. `glp1_drug`, `condition`).
    pub category: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    group: Vec<GroupModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupModel {
    category: String,
    terms: Vec<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    words: Vec<String>,
    term: usize,
}

/// An immutable, compiled health-term matcher.
#[derive(Debug, Clone)]
pub struct Lexicon {
    terms: Vec<(String, String)>,
    by_first: HashMap<String, Vec<Entry>>,
}

impl Lexicon {
    /// The lexicon bundled with the crate.
    pub fn bundled() -> &'static Lexicon {
        static BUNDLED: std::sync::OnceLock<Lexicon> = std::sync::OnceLock::new();
        BUNDLED.get_or_init(|| {
            Lexicon::parse(BUNDLED_SOURCE, BUNDLED_PATH)
                .expect("bundled rules/health-terms.toml is valid (checked by tests)")
        })
    }

    /// Compile a lexicon from TOML source; `path` is only used in error messages.
    pub fn parse(source: &str, path: &str) -> Result<Lexicon, LexiconError> {
        let model: FileModel = toml::from_str(source).map_err(|e| LexiconError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let mut terms = Vec::new();
        let mut by_first: HashMap<String, Vec<Entry>> = HashMap::new();
        for group in model.group {
            for term in group.terms {
                let words = words(&term, true);
                if words.is_empty() {
                    return Err(LexiconError::EmptyTerm {
                        path: path.to_string(),
                        category: group.category.clone(),
                        term,
                    });
                }
                let idx = terms.len();
                terms.push((term, group.category.clone()));
                let mut variants = vec![words.clone()];
                let last = words.last().expect("non-empty");
                if !last.ends_with('s') && last.chars().all(|c| c.is_alphabetic()) {
                    let mut plural = words.clone();
                    plural.last_mut().expect("non-empty").push('s');
                    variants.push(plural);
                }
                for v in variants {
                    by_first.entry(v[0].clone()).or_default().push(Entry {
                        words: v,
                        term: idx,
                    });
                }
            }
        }
        // Longest terms first so "type 2 diabetes" wins over "diabetes"-less prefixes.
        for entries in by_first.values_mut() {
            entries.sort_by_key(|e| std::cmp::Reverse(e.words.len()));
        }
        Ok(Lexicon { terms, by_first })
    }

    /// Number of terms (not counting generated plurals).
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// True when the lexicon has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// First health term in `text`, splitting camelCase and letter/digit boundaries too.
    pub fn find(&self, text: &str) -> Option<Match> {
        self.find_in(&words(text, true))
    }

    /// First health term in `text`, splitting only on non-alphanumeric characters.
    pub fn find_plain(&self, text: &str) -> Option<Match> {
        self.find_in(&words(text, false))
    }

    fn find_in(&self, words: &[String]) -> Option<Match> {
        for (i, w) in words.iter().enumerate() {
            let Some(entries) = self.by_first.get(w) else {
                continue;
            };
            for e in entries {
                if words.len() - i >= e.words.len() && words[i..i + e.words.len()] == e.words[..] {
                    let (term, category) = &self.terms[e.term];
                    return Some(Match {
                        term: term.clone(),
                        category: category.clone(),
                    });
                }
            }
        }
        None
    }
}

/// Split text into lowercase words. With `split_case`, also split at lower->upper case changes,
/// at letter<->digit changes and before the last capital of an acronym run (`GLPConsult`).
fn words(text: &str, split_case: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if c == '\'' || c == '\u{2019}' {
                // "men's" -> "mens": an apostrophe joins the word.
                continue;
            }
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if split_case && !cur.is_empty() {
            let prev = chars[i - 1];
            let next = chars.get(i + 1).copied();
            let boundary = (prev.is_lowercase() && c.is_uppercase())
                || (prev.is_alphabetic() != c.is_alphabetic() && prev.is_alphanumeric())
                || (prev.is_uppercase()
                    && c.is_uppercase()
                    && next.is_some_and(|n| n.is_lowercase()));
            if boundary {
                out.push(std::mem::take(&mut cur));
            }
        }
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_lexicon_loads_with_enough_terms() {
        let lex = Lexicon::bundled();
        assert!(lex.len() >= 300, "only {} terms", lex.len());
    }

    #[test]
    fn table_of_hits_and_misses() {
        let lex = Lexicon::bundled();
        let hits = [
            ("Start Ozempic today", "ozempic", "glp1_drug"),
            ("BookedGLP1Consultation", "glp-1", "glp1_drug"),
            ("/services/glp-1-weight-loss", "glp-1", "glp1_drug"),
            ("https://c.example/mounjaro?x=1", "mounjaro", "glp1_drug"),
            ("history of Type 2 Diabetes", "type 2 diabetes", "condition"),
            ("erectile_dysfunction", "erectile dysfunction", "condition"),
            ("Men's Health clinic", "men's health", "specialty"),
            ("two tumors found", "tumor", "condition"),
        ];
        for (text, term, cat) in hits {
            let m = lex
                .find(text)
                .unwrap_or_else(|| panic!("no match in {text:?}"));
            assert_eq!(
                (m.term.as_str(), m.category.as_str()),
                (term, cat),
                "{text}"
            );
        }
        let misses = [
            "terms and conditions",
            "Ed booked a table",
            "Our team is ready",
            "shipping address",
            "prepare your visit",
            "thermostat",
            "https://clinic.example/booking",
            "https://clinic.example/contact-us",
            "Schedule",
            "aidan",
        ];
        for text in misses {
            assert_eq!(lex.find(text), None, "false positive in {text:?}");
        }
    }

    #[test]
    fn plain_mode_ignores_case_boundaries() {
        let lex = Lexicon::bundled();
        assert!(lex.find("xQHivTq").is_some());
        assert_eq!(lex.find_plain("E.C.P.xQHivTq"), None);
        assert!(lex.find_plain("E.C.P.ozempic").is_some());
    }

    #[test]
    fn broken_file_names_path_and_line() {
        let err = Lexicon::parse("[[group]]\ncategory = \"x\"\nterm = []\n", "bad.toml")
            .expect_err("unknown key must fail");
        let msg = err.to_string();
        assert!(msg.contains("bad.toml") && msg.contains("line"), "{msg}");
    }
}
