//! The generated lexicon against ordinary business text (precision), real health phrases in the
//! spellings trackers receive (recall), and the generator (the committed file is what it makes).
//!
//! Corpus and tables live in tests/data/lexicon-corpus/.

use std::path::Path;
use std::process::Command;

use pixelwatch::lexicon::{Lexicon, Sensitivity};

const PAGES: &str = include_str!("data/lexicon-corpus/pages.txt");
const URLS: &str = include_str!("data/lexicon-corpus/urls.txt");
const EVENTS: &str = include_str!("data/lexicon-corpus/events.txt");
const IDS: &str = include_str!("data/lexicon-corpus/ids.txt");
const ACCEPTED: &str = include_str!("data/lexicon-corpus/accepted.txt");
const RECALL: &str = include_str!("data/lexicon-corpus/recall.toml");

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn snippets(text: &str) -> Vec<String> {
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    body.join("\n")
        .split("\n---\n")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn ordinary_business_text_has_no_health_terms() {
    let lex = Lexicon::bundled();
    let pages = snippets(PAGES);
    assert!(pages.len() >= 30, "only {} page snippets", pages.len());
    let mut found = Vec::new();
    let mut checked = 0;
    for text in pages
        .iter()
        .map(String::as_str)
        .chain(lines(URLS))
        .chain(lines(EVENTS))
    {
        checked += 1;
        // Every match, in both splitting modes: no term anywhere.
        for m in lex.find_all(text) {
            found.push(format!("{:?} ({}) in {text:.80?}", m.term, m.category));
        }
        if let Some(m) = lex.find_plain(text) {
            found.push(format!(
                "plain: {:?} ({}) in {text:.80?}",
                m.term, m.category
            ));
        }
    }
    for id in lines(IDS) {
        checked += 1;
        if let Some(m) = lex.find_plain(id) {
            found.push(format!("plain: {:?} ({}) in id {id:?}", m.term, m.category));
        }
    }
    assert!(
        found.is_empty(),
        "{} lexicon matches in {checked} ordinary texts:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn accepted_matches_are_still_what_they_were() {
    // Boilerplate that does name a health term; listed so that a change in what it matches is seen.
    let lex = Lexicon::bundled();
    for line in lines(ACCEPTED) {
        let (term, text) = line.split_once(" | ").expect("term | text");
        let terms: Vec<String> = lex.find_all(text).into_iter().map(|m| m.term).collect();
        assert_eq!(terms, [term], "{text}");
    }
}

#[derive(serde::Deserialize)]
struct RecallTable {
    cases: Vec<RecallCase>,
}

#[derive(serde::Deserialize)]
struct RecallCase {
    text: String,
    category: String,
}

#[test]
fn health_phrases_in_tracker_spellings_match() {
    let lex = Lexicon::bundled();
    let table: RecallTable = toml::from_str(RECALL).expect("recall.toml");
    let mut wrong = Vec::new();
    for c in &table.cases {
        // The phrase must be recognised with its category; a path may name a specialty or
        // "medications" first ("/oncology/non-hodgkin-lymphoma"), so every match counts.
        let all = lex.find_all(&c.text);
        if !all.iter().any(|m| m.category == c.category) {
            let got: Vec<String> = all
                .iter()
                .map(|m| format!("{:?} ({})", m.term, m.category))
                .collect();
            wrong.push(format!("{}: expected {}, got {got:?}", c.text, c.category));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} recall cases wrong:\n{}",
        wrong.len(),
        table.cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn critical_topics_are_critical() {
    let lex = Lexicon::bundled();
    for text in [
        "/hiv/biktarvy",
        "/conditions/postpartum-depression",
        "/sexual-health/genital-herpes",
        "/programs/alcohol-use-disorder",
        "/services/vaginoplasty",
        "/abortion-pill",
        "/rx/sertraline",
    ] {
        let m = lex.find(text).expect(text);
        assert_eq!(m.sensitivity, Sensitivity::Critical, "{text}: {m:?}");
    }
    for text in ["/rx/lisinopril", "/conditions/gout", "/weight-loss"] {
        let m = lex.find(text).expect(text);
        assert_eq!(m.sensitivity, Sensitivity::High, "{text}: {m:?}");
    }
    let m = lex.find("/patient-portal").expect("context");
    assert_eq!(m.sensitivity, Sensitivity::Context);
}

#[test]
fn lexicon_is_large_and_every_group_has_a_sensitivity() {
    let lex = Lexicon::bundled();
    assert!(lex.len() >= 5000, "only {} terms", lex.len());
    let groups = pixelwatch::lexicon::BUNDLED_SOURCE
        .lines()
        .filter(|l| *l == "[[group]]")
        .count();
    let sens = pixelwatch::lexicon::BUNDLED_SOURCE
        .lines()
        .filter(|l| l.starts_with("sensitivity = "))
        .count();
    assert_eq!(groups, sens, "a group without sensitivity");
}

/// The done-when of issue 9: rerunning the generator gives the committed file, byte for byte.
/// Needs only python3 (3.11+, for tomllib) and files committed in scripts/lexicon/.
#[test]
fn generator_reproduces_the_committed_lexicon() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = ["python3", "python"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import tomllib"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        eprintln!(
            "SKIPPED generator_reproduces_the_committed_lexicon: no python3 with tomllib (3.11+) \
             on PATH; run `python3 scripts/gen-lexicon.py --check` where there is one"
        );
        return;
    };
    let out = Command::new(python)
        .arg(root.join("scripts/gen-lexicon.py"))
        .arg("--check")
        .current_dir(root)
        .output()
        .expect("run scripts/gen-lexicon.py");
    assert!(
        out.status.success(),
        "rules/health-terms.toml is not what scripts/gen-lexicon.py makes:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
