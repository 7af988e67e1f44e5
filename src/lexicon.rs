//! Health-term lexicon: loads `rules/health-terms.toml` and finds whole-word health terms in text.
//!
//! Text and terms are split into lowercase words the same way, and a term matches only a run of
//! whole words, so `ms` never fires inside `terms`. Besides the term itself these forms match:
//!
//! - its plural: `s` added to the last word when that is all letters and does not end in `s`;
//! - its slug, hyphen and underscore spellings (`cold-sores`, `cold_sores`): punctuation only
//!   separates words;
//! - for a term of two or more words whose letters joined are at least [`JOINED_MIN`] long, the
//!   joined word (`coldsores`, `weightloss`) and its plural. Shorter joins (`lapband`) are left
//!   out: short letter runs are too often something else.
//!
//! [`Lexicon::find`] additionally splits `camelCase` and letter/digit boundaries
//! (`BookedGLP1Consultation` -> `booked glp 1 consultation`), which suits URLs, event names and
//! JSON keys; [`Lexicon::find_plain`] splits only on non-alphanumeric characters, which suits
//! opaque identifiers such as click ids whose random letters would otherwise form words by
//! accident. Both return the leftmost match, the longest one at that position
//! (`type 2 diabetes` before `diabetes`).
//!
//! Every group of the file has a category (what a finding names) and a [`Sensitivity`]; a file
//! without `sensitivity` keys still loads (see [`Sensitivity`] for the default).
//!
//! Matching is a hash lookup per word and candidate length, never a regex per term: each text word
//! is looked up once in the vocabulary of term words, and only at words that start some term are
//! word runs up to that word's longest term looked up. Cost grows with the text's length, not with
//! the number of terms.

use rustc_hash::FxHashMap as HashMap;
use std::fmt;

use serde::Deserialize;

/// The bundled lexicon source, compiled into the binary.
pub const BUNDLED_SOURCE: &str = include_str!("../rules/health-terms.toml");
/// The file name reported in errors about the bundled lexicon.
pub const BUNDLED_PATH: &str = "rules/health-terms.toml";
/// Fewest letters and digits a multi-word term needs for its joined form to match.
pub const JOINED_MIN: usize = 8;

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

/// How much a health term reveals about the person it concerns.
///
/// A group without a `sensitivity` key is [`Sensitivity::Context`] when its category is
/// `clinical_context` and [`Sensitivity::High`] otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Says "this is a clinic", not what anyone has (`patient portal`, `medicare`).
    Context,
    /// A condition, drug, procedure or specialty.
    High,
    /// Reproductive and sexual health, mental health, substance use, HIV, gender-affirming care.
    Critical,
}

impl Sensitivity {
    /// The name used in the lexicon file and in reports: `context`, `high` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Context => "context",
            Sensitivity::High => "high",
            Sensitivity::Critical => "critical",
        }
    }
}

impl fmt::Display for Sensitivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health term found in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The term as written in the lexicon.
    pub term: String,
    /// Its category (e.g. `glp1_drug`, `condition`).
    pub category: String,
    /// Its group's sensitivity.
    pub sensitivity: Sensitivity,
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
    #[serde(default)]
    sensitivity: Option<Sensitivity>,
    terms: Vec<String>,
}

#[derive(Debug, Clone)]
struct Term {
    text: String,
    category: String,
    sensitivity: Sensitivity,
}

/// Word id for a text word that is in no term.
const UNKNOWN: u32 = u32::MAX;

/// An immutable, compiled health-term matcher.
#[derive(Debug, Clone)]
pub struct Lexicon {
    terms: Vec<Term>,
    /// Every word of every term form, numbered. The maps use FxHash, not SipHash: every word
    /// of every scanned string is looked up here, and the keys are fixed at compile time (only
    /// lookups take caller text, never inserts, so a caller cannot grow a collision chain).
    vocab: HashMap<String, u32>,
    /// Longest form (in words) starting with each word id; absent when no form starts there.
    longest_from: HashMap<u32, usize>,
    /// Term forms as word-id sequences -> index into `terms`.
    forms: HashMap<Box<[u32]>, usize>,
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
        let mut base = Vec::new();
        for group in model.group {
            let sensitivity =
                group
                    .sensitivity
                    .unwrap_or(if group.category == "clinical_context" {
                        Sensitivity::Context
                    } else {
                        Sensitivity::High
                    });
            for term in group.terms {
                let words = words(&term, true);
                if words.is_empty() {
                    return Err(LexiconError::EmptyTerm {
                        path: path.to_string(),
                        category: group.category.clone(),
                        term,
                    });
                }
                base.push((words, terms.len()));
                terms.push(Term {
                    text: term,
                    category: group.category.clone(),
                    sensitivity,
                });
            }
        }
        // Terms as written first, then their variants, so that a term listed in its own right
        // ("patients") wins over another term's variant; among equals the earlier group wins.
        let mut all: Vec<(Vec<String>, usize)> = base.clone();
        for (words, idx) in &base {
            all.extend(variants(words).into_iter().map(|v| (v, *idx)));
        }
        let mut lex = Lexicon {
            terms,
            vocab: HashMap::default(),
            longest_from: HashMap::default(),
            forms: HashMap::default(),
        };
        for (words, idx) in all {
            let ids: Box<[u32]> = words
                .iter()
                .map(|w| {
                    let next = lex.vocab.len() as u32;
                    *lex.vocab.entry(w.clone()).or_insert(next)
                })
                .collect();
            let longest = lex.longest_from.entry(ids[0]).or_insert(0);
            *longest = (*longest).max(ids.len());
            lex.forms.entry(ids).or_insert(idx);
        }
        Ok(lex)
    }

    /// Number of terms (not counting generated plurals and joined forms).
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// True when the lexicon has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// First health term in `text`, splitting camelCase and letter/digit boundaries too.
    pub fn find(&self, text: &str) -> Option<Match> {
        self.scan(&self.ids(text, true), true).into_iter().next()
    }

    /// First health term in `text`, splitting only on non-alphanumeric characters.
    pub fn find_plain(&self, text: &str) -> Option<Match> {
        self.scan(&self.ids(text, false), true).into_iter().next()
    }

    /// Every health term in `text`, left to right and not overlapping, splitting as
    /// [`Lexicon::find`] does. Lets a caller prefer a condition over clinical context without
    /// searching the text again.
    pub fn find_all(&self, text: &str) -> Vec<Match> {
        self.scan(&self.ids(text, true), false)
    }

    fn scan(&self, ids: &[u32], first_only: bool) -> Vec<Match> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            let Some(&longest) = self.longest_from.get(&ids[i]) else {
                i += 1;
                continue;
            };
            let mut found = None;
            for len in (1..=longest.min(ids.len() - i)).rev() {
                if let Some(&idx) = self.forms.get(&ids[i..i + len]) {
                    found = Some((idx, len));
                    break;
                }
            }
            match found {
                Some((idx, len)) => {
                    let t = &self.terms[idx];
                    out.push(Match {
                        term: t.text.clone(),
                        category: t.category.clone(),
                        sensitivity: t.sensitivity,
                    });
                    if first_only {
                        break;
                    }
                    i += len;
                }
                None => i += 1,
            }
        }
        out
    }

    /// Word ids of `text`: one vocabulary lookup per word, no allocation per word.
    fn ids(&self, text: &str, split_case: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut push = |cur: &mut String| {
            if !cur.is_empty() {
                out.push(self.vocab.get(cur.as_str()).copied().unwrap_or(UNKNOWN));
                cur.clear();
            }
        };
        split_words(text, split_case, &mut cur, &mut push);
        push(&mut cur);
        out
    }
}

/// Plural and joined forms of a term's words (see the module doc).
fn variants(words: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let pluralize = |w: &str| !w.ends_with('s') && w.chars().all(|c| c.is_alphabetic());
    let last = words.last().expect("non-empty");
    if pluralize(last) {
        let mut plural = words.to_vec();
        plural.last_mut().expect("non-empty").push('s');
        out.push(plural);
    }
    if words.len() >= 2 {
        let joined: String = words.concat();
        if joined.chars().count() >= JOINED_MIN {
            if pluralize(last) {
                out.push(vec![format!("{joined}s")]);
            }
            out.push(vec![joined]);
        }
    }
    out
}

/// Split `text` into lowercase words, calling `emit` at each word end with the word in `cur`.
/// With `split_case`, also split at lower->upper case changes, at letter<->digit changes and
/// before the last capital of an acronym run (`GLPConsult`). An apostrophe joins a word
/// (`men's` -> `mens`).
fn split_words(text: &str, split_case: bool, cur: &mut String, emit: &mut impl FnMut(&mut String)) {
    let mut prev: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_alphanumeric() {
            if c != '\'' && c != '\u{2019}' {
                emit(cur);
                prev = None;
            }
            continue;
        }
        if split_case
            && !cur.is_empty()
            && let Some(p) = prev
        {
            let next = chars.peek().copied();
            let boundary = (p.is_lowercase() && c.is_uppercase())
                || (p.is_alphabetic() != c.is_alphabetic())
                || (p.is_uppercase() && c.is_uppercase() && next.is_some_and(|n| n.is_lowercase()));
            if boundary {
                emit(cur);
            }
        }
        if c.is_ascii() {
            cur.push(c.to_ascii_lowercase()); // the same as `to_lowercase`, without its tables
        } else {
            cur.extend(c.to_lowercase());
        }
        prev = Some(c);
    }
}

/// Split text into lowercase words (see [`split_words`]).
fn words(text: &str, split_case: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut push = |cur: &mut String| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    split_words(text, split_case, &mut cur, &mut push);
    push(&mut cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_lexicon_loads_with_enough_terms() {
        let lex = Lexicon::bundled();
        assert!(lex.len() >= 5000, "only {} terms", lex.len());
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
            (
                "erectile_dysfunction",
                "erectile dysfunction",
                "sexual_health",
            ),
            ("Men's Health clinic", "men's health", "specialty"),
            ("two tumors found", "tumor", "condition"),
            ("/cold-sores", "cold sores", "condition"),
            ("cold_sores", "cold sores", "condition"),
            ("coldsores", "cold sores", "condition"),
            ("ColdSores", "cold sores", "condition"),
            ("/blog/weightloss-tips", "weight loss", "weight_loss"),
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
            "cold weather",
            "lapband",
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
        assert!(lex.find_plain("coldsores").is_some());
    }

    #[test]
    fn variants_of_a_small_lexicon() {
        let lex = Lexicon::parse(
            "[[group]]\ncategory = \"c\"\nterms = [\"cold sores\", \"lap band\", \"patients\"]\n\
             [[group]]\ncategory = \"clinical_context\"\nterms = [\"patient\"]\n",
            "t.toml",
        )
        .expect("parses");
        let term = |t: &str| lex.find(t).map(|m| m.term);
        assert_eq!(term("Cold-Sores"), Some("cold sores".into()));
        assert_eq!(term("coldsore"), None, "the joined form is 'coldsores'");
        assert_eq!(term("cold sore"), None);
        assert_eq!(term("lap_bands"), Some("lap band".into()));
        assert_eq!(term("lapband"), None, "7 letters joined: too short");
        assert_eq!(
            term("our patients"),
            Some("patients".into()),
            "a term beats a plural"
        );
        let m = lex.find("patient").expect("context term");
        assert_eq!(
            m.sensitivity,
            Sensitivity::Context,
            "default for clinical_context"
        );
        assert_eq!(
            lex.find("coldsores").expect("c").sensitivity,
            Sensitivity::High
        );
    }

    #[test]
    fn longest_and_all_matches() {
        let lex = Lexicon::bundled();
        let all: Vec<String> = lex
            .find_all("new patient portal for type 2 diabetes and HIV")
            .into_iter()
            .map(|m| m.term)
            .collect();
        assert_eq!(all, ["new patient", "type 2 diabetes", "hiv"]);
        let m = lex.find("/hiv-testing").expect("hiv");
        assert_eq!(m.sensitivity, Sensitivity::Critical);
    }

    #[test]
    fn sensitivity_is_checked_and_defaults() {
        let err = Lexicon::parse(
            "[[group]]\ncategory = \"x\"\nsensitivity = \"extreme\"\nterms = [\"a\"]\n",
            "bad.toml",
        )
        .expect_err("unknown sensitivity must fail");
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }

    #[test]
    fn broken_file_names_path_and_line() {
        let err = Lexicon::parse("[[group]]\ncategory = \"x\"\nterm = []\n", "bad.toml")
            .expect_err("unknown key must fail");
        let msg = err.to_string();
        assert!(msg.contains("bad.toml") && msg.contains("line"), "{msg}");
    }

    /// Throughput over realistic request fields. Run with
    /// `cargo test --release --lib lexicon::tests::matching_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints a timing; run by hand in release mode"]
    fn matching_speed() {
        let start = std::time::Instant::now();
        let lex = Lexicon::parse(BUNDLED_SOURCE, BUNDLED_PATH).expect("bundled");
        println!("{} terms compiled in {:?}", lex.len(), start.elapsed());
        let fields = [
            "https://www.example-shop.test/collections/summer-sale/products/linen-shirt?variant=123&utm_source=newsletter",
            "AddToCart",
            "{\"content_name\":\"Blue running shoes\",\"value\":59.99,\"currency\":\"USD\"}",
            "Free shipping on orders over $50 - shop the new arrivals today",
            "https://clinic.test/conditions/type-2-diabetes/book?utm_source=ads",
        ];
        let bytes: usize = fields.iter().map(|f| f.len()).sum();
        let words: usize = fields.iter().map(|f| super::words(f, true).len()).sum();
        let rounds = 20_000;
        let start = std::time::Instant::now();
        let mut hits = 0;
        for _ in 0..rounds {
            for f in &fields {
                hits += usize::from(lex.find(f).is_some());
            }
        }
        let el = start.elapsed();
        let calls = rounds * fields.len();
        println!(
            "{calls} fields ({} MB, {} words) in {el:?}: {:.2} µs per field, {:.0} words per µs, \
             {:.0} MB/s, {hits} hits",
            rounds * bytes / 1_000_000,
            rounds * words,
            el.as_secs_f64() * 1e6 / calls as f64,
            (rounds * words) as f64 / (el.as_secs_f64() * 1e6),
            (rounds * bytes) as f64 / el.as_secs_f64() / 1e6,
        );
        assert_eq!(hits, rounds, "only the clinic URL matches");
    }
}
