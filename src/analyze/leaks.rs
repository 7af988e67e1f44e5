//! `phi_leak`: health terms, descriptive event names and contact details in what a tracker
//! received, and the URLs, paths and titles of health-revealing pages (see `context`).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use regex::Regex;

use super::payload::{event_name, fields};
use super::{baa_text, short};
use crate::lexicon::Lexicon;
use crate::model::{Finding, FindingKind, Page, Request, Severity};
use crate::rules::roles::PageRoles;
use crate::rules::{Engine, Vendor};

/// One leak found in one request.
#[derive(Debug)]
pub(super) struct Leak {
    pub(super) severity: Severity,
    pub(super) evidence: String,
    /// The health term or contact detail that matched, as it appears in the evidence.
    pub(super) matched: String,
    pub(super) rule: String,
    pub(super) dedupe_key: String,
}

pub(super) fn leaks(r: &Request, v: &Vendor, lexicon: &Lexicon) -> Vec<Leak> {
    let critical_or_high = if v.baa {
        Severity::High
    } else {
        Severity::Critical
    };
    let mut out = Vec::new();
    // Event name against the vendor's standard list.
    if let Some((field, name)) = event_name(r, v) {
        let health = find_health(lexicon, &name, true);
        let standard = v
            .standard_events
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&name));
        if health.is_some() || !standard {
            let (severity, why) = match &health {
                Some(m) => (
                    health_severity(m, v),
                    format!("contains the health term '{}' ({})", m.term, m.category),
                ),
                None => (
                    Severity::Medium,
                    format!("is not a standard {} event", v.name),
                ),
            };
            let shown = match &health {
                Some(m) => excerpt_around(&name, &m.term),
                None => excerpt(&name, 0, 0),
            };
            out.push(Leak {
                severity,
                matched: health.as_ref().map(|m| m.term.clone()).unwrap_or_default(),
                evidence: format!("event name '{shown}' in {field} {why}"),
                rule: format!("{}:event_name", v.rule),
                dedupe_key: format!("event:{name}"),
            });
        }
    }
    for f in fields(r) {
        if let Some(m) = find_health(lexicon, &f.value, false) {
            let what = if f.location == "header" {
                "the Referer header carries a health-revealing page URL".to_string()
            } else if looks_like_url(&f.value) {
                format!(
                    "{} field '{}' carries a health-revealing URL",
                    f.location,
                    short(&f.name)
                )
            } else {
                format!(
                    "{} field '{}' carries health text",
                    f.location,
                    short(&f.name)
                )
            };
            out.push(Leak {
                severity: health_severity(&m, v),
                matched: m.term.clone(),
                evidence: format!(
                    "{what}: health term '{}' ({}) in \"{}\"",
                    m.term,
                    m.category,
                    excerpt_around(&f.value, &m.term)
                ),
                rule: format!("health-terms.toml:{}", m.category),
                dedupe_key: format!("{}:{}:{}", f.location, f.name, m.term),
            });
        }
        for (kind, re) in contact_patterns() {
            if let Some(found) = re.find(&f.value) {
                out.push(Leak {
                    severity: critical_or_high,
                    matched: found.as_str().to_string(),
                    evidence: format!(
                        "{} field '{}' carries what looks like {kind}: \"{}\"",
                        f.location,
                        short(&f.name),
                        excerpt(&f.value, found.start(), found.end())
                    ),
                    rule: format!("builtin:{}", kind.replace(' ', "_")),
                    dedupe_key: format!("{}:{}:{kind}", f.location, f.name),
                });
            }
        }
    }
    out
}

/// `phi_leak` for trackers that received the URL, path or title of a health-revealing page (see
/// [`context`]) whose URL itself names no health term (those are found by [`findings`]). The
/// evidence says why the page reveals health information.
pub fn context_leaks(pages: &[Page], engine: &Engine, roles: &PageRoles) -> Vec<Finding> {
    let lexicon = Lexicon::bundled();
    let mut out = Vec::new();
    for p in pages {
        let Some(health) = &p.health else { continue };
        if find_health(lexicon, &p.final_url, true)
            .is_some_and(|m| !CONTEXT_CATEGORIES.contains(&m.category.as_str()))
        {
            continue;
        }
        let needles = page_needles(p);
        let mut seen = BTreeSet::new();
        for r in p.requests.iter().filter(|r| r.third_party) {
            let Some(m) = engine.match_url(&r.url) else {
                continue;
            };
            let v = m.vendor;
            if !v.category.is_tracking() || seen.contains(&v.id) {
                continue;
            }
            let hit = fields(r).into_iter().find_map(|f| {
                let value = f.value.to_lowercase();
                needles
                    .iter()
                    .find(|(n, _)| value.contains(n.as_str()))
                    .map(|(n, what)| (f, n.clone(), *what))
            });
            let Some((field, needle, what)) = hit else {
                continue;
            };
            seen.insert(v.id.clone());
            let severity = match (health.sensitivity.as_str(), v.baa) {
                ("critical", false) => Severity::Critical,
                ("critical", true) | (_, false) => Severity::High,
                (_, true) => Severity::Medium,
            };
            let where_ = if field.location == "header" {
                format!("{} header", field.name)
            } else {
                format!("{} ({})", field.location, field.name)
            };
            out.push(Finding {
                kind: FindingKind::PhiLeak,
                severity,
                vendor: Some(v.id.clone()),
                page: p.url.clone(),
                request_url: Some(r.url.clone()),
                evidence: format!(
                    "{} ({}) received the {what} of a health-revealing page in the {where_}: {}. \
                     The page reveals health information: {}",
                    v.name,
                    baa_text(v),
                    excerpt_around(&field.value.to_lowercase(), &needle),
                    health.reasons.join("; ")
                ),
                rule: roles.rule(health),
                matched: health.topics.first().cloned(),
            });
        }
    }
    out
}

/// What of a page a tracker may receive, lowercased: its URLs, its path, its title.
fn page_needles(p: &Page) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    for u in [&p.url, &p.final_url] {
        let u = u.split('#').next().unwrap_or(u).to_lowercase();
        if !out.iter().any(|(n, _)| *n == u) {
            out.push((u, "URL"));
        }
    }
    if let Ok(u) = url::Url::parse(&p.final_url) {
        let path = u.path().to_lowercase();
        if path.trim_matches('/').len() >= 4 {
            out.push((path, "path"));
        }
    }
    if let Some(t) = p.title.as_deref().map(str::trim).filter(|t| t.len() >= 12) {
        out.push((t.to_lowercase(), "title"));
    }
    out
}

/// Lexicon categories that say "this is a clinic" rather than "this person has a condition":
/// alone they make a medium finding, not a critical one.
const CONTEXT_CATEGORIES: &[&str] = &["clinical_context"];

/// The most telling health term in a value (`name_like`: split camelCase, for event names): a specific one (drug, condition, procedure) is
/// preferred over clinical context ("patient", "appointment"). Identifiers without separators
/// are split only on punctuation so random ids do not spell words by accident.
fn find_health(lexicon: &Lexicon, value: &str, name_like: bool) -> Option<crate::lexicon::Match> {
    if value.len() > 200_000 {
        return None;
    }
    let split_words =
        name_like || value.contains(|c: char| c.is_whitespace() || "/-_.:?&=".contains(c));
    let find = |text: &str| {
        if split_words {
            lexicon.find(text)
        } else {
            lexicon.find_plain(text)
        }
    };
    let first = find(value)?;
    let mut text = value.to_string();
    let mut current = first.clone();
    for _ in 0..5 {
        if !CONTEXT_CATEGORIES.contains(&current.category.as_str()) {
            return Some(current);
        }
        // Blank out the context term and look again for something more specific.
        let Ok(re) = Regex::new(&format!("(?i){}", regex::escape(&current.term))) else {
            break;
        };
        let blanked = re.replace_all(&text, " ").into_owned();
        if blanked == text {
            break;
        }
        text = blanked;
        match find(&text) {
            Some(m) => current = m,
            None => break,
        }
    }
    Some(first)
}

/// Severity of a leak of health term `m` to a vendor.
fn health_severity(m: &crate::lexicon::Match, v: &Vendor) -> Severity {
    match (CONTEXT_CATEGORIES.contains(&m.category.as_str()), v.baa) {
        (true, _) => Severity::Medium,
        (false, true) => Severity::High,
        (false, false) => Severity::Critical,
    }
}

fn looks_like_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with('/')
}

fn contact_patterns() -> &'static [(&'static str, Regex)] {
    static PATTERNS: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        vec![
            (
                "an email address",
                Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b").expect("regex"),
            ),
            (
                "a phone number",
                Regex::new(r"(?:\+?1[\s.-]?)?\(?\b[2-9]\d{2}\)?[\s.-]\d{3}[\s.-]\d{4}\b")
                    .expect("regex"),
            ),
            (
                "a date of birth",
                Regex::new(r"(?i)\b(?:dob|birth|born)\b\D{0,12}\d{1,4}[/-]\d{1,2}[/-]\d{1,4}\b")
                    .expect("regex"),
            ),
        ]
    })
}

/// Up to ~120 characters of `s` around `term` (case-insensitive), with ellipses.
pub(super) fn excerpt_around(s: &str, term: &str) -> String {
    let lower = s.to_lowercase();
    let first = term
        .split_whitespace()
        .next()
        .unwrap_or(term)
        .to_lowercase();
    match lower.find(&first) {
        Some(i) if lower.len() == s.len() => excerpt(s, i, i + first.len()),
        _ => excerpt(s, 0, 0),
    }
}

/// Up to ~120 characters of `s` around `start..end`, with ellipses where cut.
fn excerpt(s: &str, start: usize, end: usize) -> String {
    let from = floor_char(s, start.saturating_sub(50));
    let to = floor_char(s, (end + 50).min(s.len()).max(from));
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    out.push_str(&s[from..to]);
    if to < s.len() {
        out.push('…');
    }
    out
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
