//! A page's health context: what it is about and what it is for, read from what a visitor sees.
//!
//! URLs like `/am-i-a-candidate/` or `/schedule-now/` name no condition, yet the page is a
//! weight-loss drug candidacy quiz or a booking page for one consult: a tracker that receives
//! its URL learns the visitor's interest. The topic comes from the title, headings, breadcrumbs,
//! JSON-LD names, the path, the texts of links pointing to the page, and term density of the main
//! text (navigation, header and footer left out); the role (booking, intake, confirmation,
//! provider search, condition page, portal login) from phrases, path words, JSON-LD types and the
//! page's controls, as `rules/page-roles.toml` says. Generic pages (about, careers, privacy,
//! blog index, the home page) are not health-revealing by themselves.

use std::collections::BTreeMap;

use crate::lexicon::{Lexicon, Match, Sensitivity};
use crate::model::{Page, PageHealth, PageText};
use crate::rules::roles::{Control, PageRoles, RoleDef};

/// What the site's links call each page: texts of links pointing to a URL, a few per URL.
#[derive(Debug, Default)]
pub struct LinkTexts {
    by_url: std::collections::HashMap<String, Vec<String>>,
}

impl LinkTexts {
    const PER_URL: usize = 5;

    /// Records the links of one page.
    pub fn add(&mut self, links: &[(String, String)]) {
        for (href, text) in links {
            let Some(u) = crate::crawl::normalize(href) else {
                continue;
            };
            let texts = self.by_url.entry(u.to_string()).or_default();
            if texts.len() < Self::PER_URL && !texts.contains(text) {
                texts.push(text.clone());
            }
        }
    }

    /// Gives each page the texts of the links pointing to it.
    pub fn apply(&self, pages: &mut [Page]) {
        for p in pages.iter_mut() {
            for u in [&p.url, &p.final_url] {
                let Some(key) = crate::crawl::normalize(u) else {
                    continue;
                };
                for t in self.by_url.get(key.as_str()).into_iter().flatten() {
                    if !p.text.link_texts.contains(t) {
                        p.text.link_texts.push(t.clone());
                    }
                }
            }
        }
    }
}

/// Fills `health` on every page that reveals health information about its visitor.
pub fn classify_pages(pages: &mut [Page], lexicon: &Lexicon, roles: &PageRoles) {
    for p in pages.iter_mut() {
        if p.error.is_none() {
            p.health = classify(&p.final_url, p.title.as_deref(), &p.text, lexicon, roles);
        }
    }
}

/// Where a topic was found, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Title,
    Heading,
    StructuredData,
    Breadcrumb,
    Path,
    MainText,
    LinkText,
    Description,
}

impl Source {
    fn strong(self) -> bool {
        self <= Source::Path
    }

    fn says(self) -> &'static str {
        match self {
            Source::Title => "title names",
            Source::Heading => "heading names",
            Source::StructuredData => "structured data names",
            Source::Breadcrumb => "breadcrumb names",
            Source::Path => "path names",
            Source::MainText => "main text is about",
            Source::LinkText => "links to it say",
            Source::Description => "description names",
        }
    }
}

/// The health context of one page, or `None` when it reveals nothing about its visitor.
pub fn classify(
    url: &str,
    title: Option<&str>,
    text: &PageText,
    lexicon: &Lexicon,
    roles: &PageRoles,
) -> Option<PageHealth> {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    let role = best_role(&path, title, text, roles);
    let generic = path.trim_matches('/').is_empty() || is_generic(&path, title, roles);
    if generic && role.is_none() {
        return None;
    }
    // Topics by source; the first source that names a term is the reason given for it.
    let mut topics: Vec<(Source, Match, usize)> = Vec::new();
    let mut add = |source: Source, m: Match, count: usize| {
        if !topics.iter().any(|(_, t, _)| t.term == m.term) {
            topics.push((source, m, count));
        }
    };
    let labels = [
        (
            Source::Title,
            title.into_iter().map(str::to_string).collect::<Vec<_>>(),
        ),
        (Source::Heading, text.headings.clone()),
        (Source::StructuredData, text.schema_names.clone()),
        (Source::Breadcrumb, text.breadcrumbs.clone()),
        (Source::Path, vec![path.replace(['/', '-', '_'], " ")]),
        (
            Source::Description,
            text.description.clone().into_iter().collect(),
        ),
        (Source::LinkText, text.link_texts.clone()),
    ];
    for (source, values) in labels {
        for v in values {
            for m in health_terms(lexicon, &v) {
                add(source, m, 1);
            }
        }
    }
    let (counts, words) = term_counts(lexicon, &text.main_text);
    let hits: usize = counts.values().map(|(_, n)| n).sum();
    let dense = hits >= roles.density.min_hits
        && words > 0
        && hits as f64 * 100.0 / words as f64 >= roles.density.per_100_words;
    if dense {
        let mut by_count: Vec<_> = counts.into_values().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.term.cmp(&b.0.term)));
        for (m, n) in by_count.into_iter().take(3) {
            add(Source::MainText, m, n);
        }
    }
    topics.sort_by_key(|(s, _, _)| *s);
    let strong = topics.first().is_some_and(|(s, _, _)| s.strong());
    if topics.is_empty() || (role.is_none() && !strong) || (generic && !strong) {
        return None;
    }
    let mut reasons: Vec<String> = Vec::new();
    for (source, m, count) in topics.iter().take(3) {
        let reason = if *source == Source::MainText {
            format!("main text mentions {} {count} times", m.term)
        } else {
            format!("{} {}", source.says(), m.term)
        };
        reasons.push(reason);
    }
    let role_id = role.map(|r| {
        reasons.push(format!("page role: {}", r.label));
        r.id.clone()
    });
    let critical = topics.iter().any(|(_, m, _)| roles.critical(m));
    Some(PageHealth {
        topics: topics.iter().map(|(_, m, _)| m.term.clone()).collect(),
        category: topics.first().map(|(_, m, _)| m.category.clone()),
        sensitivity: if critical { "critical" } else { "high" }.to_string(),
        role: role_id,
        reasons,
    })
}

/// Health terms in `text`, clinical-context words left out, each once.
fn health_terms(lexicon: &Lexicon, text: &str) -> Vec<Match> {
    let mut out: Vec<Match> = Vec::new();
    for m in all_terms(lexicon, text) {
        if !out.iter().any(|o| o.term == m.term) {
            out.push(m);
        }
    }
    out
}

/// (term -> (match, count)) of health terms in a long text, and its word count.
fn term_counts(lexicon: &Lexicon, text: &str) -> (BTreeMap<String, (Match, usize)>, usize) {
    let mut counts: BTreeMap<String, (Match, usize)> = BTreeMap::new();
    for m in all_terms(lexicon, text) {
        counts.entry(m.term.clone()).or_insert((m, 0)).1 += 1;
    }
    (counts, text.split_whitespace().count())
}

/// Every health term occurrence in `text`, clinical-context words left out.
fn all_terms(lexicon: &Lexicon, text: &str) -> Vec<Match> {
    lexicon
        .find_all(text)
        .into_iter()
        .filter(|m| m.sensitivity != Sensitivity::Context)
        .collect()
}

/// Words of a text for phrase matching: lowercase, punctuation folded to single spaces.
fn folded(text: &str) -> String {
    let mut out = String::from(" ");
    for w in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        out.push_str(w);
        out.push(' ');
    }
    out
}

fn has_phrase(folded_text: &str, phrase: &str) -> bool {
    let p = folded(phrase);
    p.trim().len() > 1 && folded_text.contains(&p)
}

fn path_has(path: &str, word: &str) -> bool {
    let word = word.to_lowercase();
    path.to_lowercase()
        .split('/')
        .any(|seg| seg == word || seg.split(['-', '_', '.']).any(|t| t == word))
}

fn is_generic(path: &str, title: Option<&str>, roles: &PageRoles) -> bool {
    let g = &roles.generic;
    let title = folded(title.unwrap_or_default());
    let last = path
        .trim_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    g.path_words.iter().any(|w| w.eq_ignore_ascii_case(last))
        || g.phrases
            .iter()
            .any(|p| has_phrase(&title, p) && title.trim() == folded(p).trim())
}

fn best_role<'a>(
    path: &str,
    title: Option<&str>,
    text: &PageText,
    roles: &'a PageRoles,
) -> Option<&'a RoleDef> {
    let prominent: Vec<String> = title
        .into_iter()
        .map(folded)
        .chain(text.headings.iter().map(|h| folded(h)))
        .chain(text.breadcrumbs.iter().map(|h| folded(h)))
        .chain(text.buttons.iter().map(|h| folded(h)))
        .collect();
    let main = folded(&text.main_text);
    let count = |c: Control| match c {
        Control::Choices => text.choices >= 2,
        Control::PasswordFields => text.password_fields > 0,
        Control::DateFields => text.date_fields > 0,
    };
    let mut best: Option<(u32, &RoleDef)> = None;
    for role in &roles.roles {
        if role.requires.is_some_and(|c| !count(c)) {
            continue;
        }
        let prominent_hits = role
            .phrases
            .iter()
            .filter(|p| prominent.iter().any(|t| has_phrase(t, p)))
            .count() as u32;
        let main_hits = role.phrases.iter().filter(|p| has_phrase(&main, p)).count() as u32;
        let path_hits = role.path_words.iter().filter(|w| path_has(path, w)).count() as u32;
        let schema = role
            .schema_types
            .iter()
            .any(|t| text.schema_types.iter().any(|s| s == t));
        let score = (prominent_hits * 2).min(6)
            + main_hits.min(2)
            + path_hits.min(2)
            + if schema { 3 } else { 0 }
            + if role.signal.is_some_and(count) { 2 } else { 0 };
        if score >= role.min_score && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, role));
        }
    }
    best.map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(headings: &[&str], main: &str) -> PageText {
        PageText {
            headings: headings.iter().map(|s| s.to_string()).collect(),
            main_text: main.to_string(),
            ..Default::default()
        }
    }

    fn classify_at(url: &str, title: &str, t: &PageText) -> Option<PageHealth> {
        classify(
            url,
            Some(title),
            t,
            Lexicon::bundled(),
            &PageRoles::bundled(),
        )
    }

    #[test]
    fn opaque_urls_of_health_pages_are_health_revealing_with_reasons() {
        // A candidacy quiz: title and choices say it all.
        let quiz = PageText {
            choices: 6,
            buttons: vec!["Next".into()],
            ..text(
                &["Am I a candidate?"],
                "Answer five questions to see if semaglutide is right for you.",
            )
        };
        let h = classify_at(
            "https://www.clinic.test/am-i-a-candidate/",
            "Semaglutide candidacy quiz | Clinic",
            &quiz,
        )
        .expect("health-revealing");
        assert_eq!(h.role.as_deref(), Some("intake"));
        assert_eq!(h.topics[0], "semaglutide");
        assert!(
            h.reasons.iter().any(|r| r == "title names semaglutide"),
            "{h:?}"
        );
        assert!(
            h.reasons.iter().any(|r| r.starts_with("page role: intake")),
            "{h:?}"
        );
        assert_eq!(h.sensitivity, "high");
        // A booking page whose only topic is in the links pointing to it and its main text.
        let booking = PageText {
            date_fields: 1,
            buttons: vec!["Book now".into()],
            link_texts: vec!["Book your erectile dysfunction consult".into()],
            ..text(&["Schedule now"], "Choose a time for your visit.")
        };
        let h = classify_at(
            "https://www.clinic.test/schedule-now/",
            "Schedule",
            &booking,
        )
        .expect("health-revealing");
        assert_eq!(h.role.as_deref(), Some("booking"));
        assert_eq!(h.sensitivity, "critical", "{h:?}");
        assert!(
            h.reasons
                .iter()
                .any(|r| r.contains("links to it say erectile dysfunction"))
        );
    }

    #[test]
    fn generic_pages_are_not_health_revealing_by_themselves() {
        let nav_heavy = "We are a weight loss clinic offering semaglutide and tirzepatide. \
            Semaglutide programs, tirzepatide programs, weight loss coaching.";
        for (url, title) in [
            (
                "https://www.clinic.test/",
                "Clinic | Semaglutide weight loss",
            ),
            ("https://www.clinic.test/about-us/", "About us"),
            ("https://www.clinic.test/careers", "Careers"),
            ("https://www.clinic.test/privacy-policy", "Privacy policy"),
            ("https://www.clinic.test/blog/", "Blog"),
        ] {
            let h = classify_at(url, title, &text(&[title], nav_heavy));
            assert!(h.is_none(), "{url} should not be health-revealing: {h:?}");
        }
        // A page with no health topic at all, whatever its role.
        let h = classify_at(
            "https://www.bakery.test/order",
            "Order a cake",
            &PageText {
                date_fields: 1,
                ..text(&["Book now"], "Pick a time to collect your cake.")
            },
        );
        assert!(h.is_none(), "{h:?}");
    }

    #[test]
    fn a_condition_page_is_known_by_its_structured_data_and_main_text() {
        let t = PageText {
            schema_types: vec!["MedicalWebPage".into(), "MedicalCondition".into()],
            schema_names: vec!["Psoriasis".into()],
            ..text(
                &["Living with it"],
                "Psoriasis causes plaques. Psoriasis treatment options include biologics. Psoriasis flares.",
            )
        };
        let h = classify_at("https://www.derm.test/programs/reset/", "Reset program", &t)
            .expect("health-revealing");
        assert_eq!(h.role.as_deref(), Some("condition"));
        assert!(h.reasons[0].contains("psoriasis"), "{h:?}");
    }

    #[test]
    fn a_broken_roles_file_names_file_and_line() {
        let e = PageRoles::parse("[[role]]\nid = 1\n", "my/page-roles.toml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("my/page-roles.toml") && msg.contains("line 2"),
            "{msg}"
        );
    }
}
