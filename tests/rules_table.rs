//! Rule behaviour, table-driven from data files in tests/data/.

use pixelwatch::lexicon::Lexicon;
use pixelwatch::rules::Engine;

#[derive(serde::Deserialize)]
struct VendorCases {
    cases: Vec<VendorCase>,
}

#[derive(serde::Deserialize)]
struct VendorCase {
    url: String,
    vendor: String,
}

#[test]
fn vendor_rules_match_the_table() {
    let table: VendorCases = toml::from_str(include_str!("data/vendor-matches.toml")).unwrap();
    let engine = Engine::bundled();
    let mut wrong = Vec::new();
    for c in &table.cases {
        let got = engine
            .match_url(&c.url)
            .map(|m| m.vendor.id.clone())
            .unwrap_or_default();
        if got != c.vendor {
            wrong.push(format!("{}: expected '{}', got '{got}'", c.url, c.vendor));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        table.cases.len(),
        wrong.join("\n")
    );
}

#[derive(serde::Deserialize)]
struct TermCases {
    cases: Vec<TermCase>,
}

#[derive(serde::Deserialize)]
struct TermCase {
    text: String,
    category: String,
}

#[test]
fn health_terms_match_the_table() {
    let table: TermCases = toml::from_str(include_str!("data/health-terms.toml")).unwrap();
    let lexicon = Lexicon::bundled();
    let mut wrong = Vec::new();
    for c in &table.cases {
        let got = lexicon
            .find(&c.text)
            .map(|m| m.category)
            .unwrap_or_default();
        if got != c.category {
            wrong.push(format!(
                "{}: expected '{}', got '{got}'",
                c.text, c.category
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
