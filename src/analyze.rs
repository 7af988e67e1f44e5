//! Judging what was recorded: `tracker` findings (a vendor's pixel on a page) and `phi_leak`
//! findings (health-revealing text, descriptive event names, or contact details in what a
//! tracker received — URL query, body, or `Referer` header).
//!
//! Each finding names the rule that fired and shows an excerpt around the sensitive part, never a
//! whole body.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use base64::Engine as _;
use regex::Regex;
use serde_json::Value;

pub mod context;

use crate::lexicon::Lexicon;
use crate::model::{Canary, Finding, Page, Request, Severity};
use crate::rules::consent::ConsentMode;
use crate::rules::filterlist::FilterLists;
use crate::rules::{Engine, Vendor};

/// Categories whose requests are judged as trackers (CDNs, fonts and payments are not).
const TRACKING_CATEGORIES: &[&str] = &[
    "advertising",
    "analytics",
    "tag_manager",
    "session_replay",
    "social",
];

/// All findings for a scan, worst first.
pub fn findings(
    pages: &[Page],
    engine: &Engine,
    lists: Option<&FilterLists>,
    consent: ConsentMode,
    canaries: &[Canary],
) -> Vec<Finding> {
    let lexicon = Lexicon::bundled();
    let mut out = Vec::new();
    for p in pages {
        let mut seen_vendor = BTreeSet::new();
        let mut seen_leak = BTreeSet::new();
        let mut seen_other = BTreeSet::new();
        for r in &p.requests {
            if !r.third_party {
                continue;
            }
            let m = engine.match_url(&r.url);
            // Canaries: searched in every third-party request, known vendor or not.
            for hit in crate::probe::search(r, canaries) {
                let who = m
                    .as_ref()
                    .map(|m| m.vendor.name.as_str())
                    .unwrap_or(&r.host);
                if seen_other.insert(("canary", hit.kind.clone(), r.host.clone())) {
                    out.push(Finding {
                        kind: "phi_leak".into(),
                        severity: Severity::Critical,
                        vendor: m.as_ref().map(|m| m.vendor.id.clone()),
                        page: p.url.clone(),
                        request_url: Some(r.url.clone()),
                        evidence: with_step(
                            format!(
                                "the {} typed into a form reached {who} ({}) {} in the {}",
                                hit.kind.replace('_', " "),
                                r.host,
                                encoding_text(hit.encoding),
                                hit.location
                            ),
                            r,
                        ),
                        rule: format!("probe:{}", hit.kind),
                        matched: None,
                    });
                }
            }
            let Some(m) = m else {
                // Unknown to the rules: an optional filter list may still know it.
                if let Some(hit) =
                    lists.and_then(|l| l.check(&r.url, &p.url, &r.resource_type, &r.method))
                    && seen_other.insert(("filter", r.host.clone(), String::new()))
                {
                    out.push(Finding {
                        kind: "tracker".into(),
                        severity: Severity::Medium,
                        vendor: None,
                        page: p.url.clone(),
                        request_url: Some(r.url.clone()),
                        evidence: format!(
                            "{} request to {} matched filter list {} line {}: {}",
                            r.resource_type, r.host, hit.list, hit.line, hit.rule
                        ),
                        rule: format!("{}:{}", hit.list, hit.line),
                        matched: None,
                    });
                }
                continue;
            };
            let v = m.vendor;
            let tracking = TRACKING_CATEGORIES.contains(&v.category.as_str());
            if tracking {
                other_findings(p, r, v, consent, &mut seen_other, &mut out);
            }
            if seen_vendor.insert(v.id.clone()) {
                out.push(Finding {
                    kind: "tracker".into(),
                    severity: v.severity,
                    vendor: Some(v.id.clone()),
                    page: p.url.clone(),
                    request_url: Some(r.url.clone()),
                    evidence: format!(
                        "{} ({}, {}) loaded: {} request to {} matched host pattern '{}'",
                        v.name,
                        v.category,
                        baa_text(v),
                        r.resource_type,
                        r.host,
                        m.pattern
                    ),
                    rule: v.rule.clone(),
                    matched: None,
                });
            }
            if !TRACKING_CATEGORIES.contains(&v.category.as_str()) {
                continue;
            }
            for leak in leaks(r, v, lexicon) {
                if seen_leak.insert((v.id.clone(), leak.dedupe_key.clone())) {
                    out.push(Finding {
                        kind: "phi_leak".into(),
                        severity: leak.severity,
                        vendor: Some(v.id.clone()),
                        page: p.url.clone(),
                        request_url: Some(r.url.clone()),
                        evidence: with_step(leak.evidence, r),
                        rule: leak.rule,
                        matched: Some(leak.matched).filter(|m| !m.is_empty()),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| {
        (a.severity, &a.kind, &a.vendor, &a.page).cmp(&(b.severity, &b.kind, &b.vendor, &b.page))
    });
    out
}

/// `phi_leak` for trackers that received the URL, path or title of a health-revealing page (see
/// [`context`]) whose URL itself names no health term (those are found by [`findings`]). The
/// evidence says why the page reveals health information.
pub fn context_leaks(pages: &[Page], engine: &Engine, roles: &context::PageRoles) -> Vec<Finding> {
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
            if !TRACKING_CATEGORIES.contains(&v.category.as_str()) || seen.contains(&v.id) {
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
                kind: "phi_leak".into(),
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

/// `no_consent` for tracking cookies that appeared before any consent interaction (every page in
/// `--consent none`; pages where no banner had been answered with `accept`), or at all with
/// `--consent reject`.
pub fn cookie_findings(
    cookies: &[crate::model::CookieSeen],
    pages: &[Page],
    engine: &Engine,
    consent: ConsentMode,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for c in cookies {
        let Some(v) = engine.match_cookie(&c.cookie.name, &c.cookie.domain) else {
            continue;
        };
        if !TRACKING_CATEGORIES.contains(&v.category.as_str()) {
            continue;
        }
        let page = pages.iter().find(|p| p.url == c.first_seen_page);
        // Pre-consent if the page that first showed it had its banner unanswered and nothing
        // before it had been answered either (its requests still in the "load" phase).
        let pre_consent = match consent {
            // With reject, a tracking cookie is wrong whenever it appeared.
            ConsentMode::None | ConsentMode::Reject | ConsentMode::Gpc => true,
            _ => page.is_some_and(|p| {
                p.consent_action.is_none() && p.requests.first().is_some_and(|r| r.phase == "load")
            }),
        };
        if consent == ConsentMode::Gpc && v.category == "advertising" {
            out.push(Finding {
                kind: "gpc_ignored".into(),
                severity: Severity::High,
                vendor: Some(v.id.clone()),
                page: c.first_seen_page.clone(),
                request_url: None,
                evidence: format!(
                    "advertising cookie {} ({}, set by {}) of {} appeared although the browser \
                     sent the Global Privacy Control opt-out",
                    short(&c.cookie.name),
                    short(&c.cookie.domain),
                    c.cookie.set_by,
                    v.name
                ),
                rule: format!("{}:cookie:gpc", v.rule),
                matched: None,
            });
        }
        if !pre_consent {
            continue;
        }
        out.push(Finding {
            kind: "no_consent".into(),
            severity: Severity::High,
            vendor: Some(v.id.clone()),
            page: c.first_seen_page.clone(),
            request_url: None,
            evidence: format!(
                "tracking cookie {} ({}, set by {}) of {} appeared {}",
                short(&c.cookie.name),
                short(&c.cookie.domain),
                c.cookie.set_by,
                v.name,
                if consent == ConsentMode::Reject {
                    "although the visitor rejected tracking"
                } else {
                    "before any consent interaction"
                }
            ),
            rule: format!("{}:cookie", v.rule),
            matched: None,
        });
    }
    out
}

/// `no_consent`, `session_replay` and `third_party_frame` findings for one tracker request.
fn other_findings(
    p: &Page,
    r: &Request,
    v: &Vendor,
    consent: ConsentMode,
    seen: &mut BTreeSet<(&'static str, String, String)>,
    out: &mut Vec<Finding>,
) {
    let mut push = |kind: &'static str, severity: Severity, evidence: String, rule: String| {
        if seen.insert((kind, v.id.clone(), String::new())) {
            out.push(Finding {
                kind: kind.into(),
                severity,
                vendor: Some(v.id.clone()),
                page: p.url.clone(),
                request_url: Some(r.url.clone()),
                evidence,
                rule,
                matched: None,
            });
        }
    };
    let before = r.phase == "load";
    let after_reject = consent == ConsentMode::Reject && r.phase != "load";
    if before || after_reject {
        let when = if after_reject {
            "after the visitor rejected tracking".to_string()
        } else if matches!(consent, ConsentMode::None | ConsentMode::Gpc) {
            "before any consent interaction (the scan never clicks a banner)".to_string()
        } else {
            format!(
                "before the consent banner was answered ({})",
                consent.as_str()
            )
        };
        push(
            "no_consent",
            Severity::High,
            format!(
                "{} sent a {} request to {} {when}",
                v.name, r.resource_type, r.host
            ),
            format!("consent:{}", consent.as_str()),
        );
    }
    if consent == ConsentMode::Gpc && v.category == "advertising" {
        push(
            "gpc_ignored",
            Severity::High,
            format!(
                "{} sent a {} request to {} although the browser sent the Global Privacy Control \
                 opt-out (Sec-GPC: 1, navigator.globalPrivacyControl)",
                v.name, r.resource_type, r.host
            ),
            format!("consent:gpc:{}", v.id),
        );
    }
    if v.category == "session_replay" && p.forms > 0 {
        push(
            "session_replay",
            Severity::High,
            format!(
                "{} records sessions on a page with {} form(s): what patients type can be captured",
                v.name, p.forms
            ),
            format!("{}:session_replay", v.rule),
        );
    }
    if let Some(frame) = r.frame_url.as_deref()
        && frame != p.url
        && p.frames.iter().any(|f| f.third_party && f.url == frame)
    {
        push(
            "third_party_frame",
            Severity::High,
            format!(
                "the third-party frame {} carries {} ({})",
                short(frame),
                v.name,
                r.host
            ),
            format!("{}:frame", v.rule),
        );
    }
}

/// How a typed value was found: "as typed", "URL-encoded", "base64-encoded", "sha256-hashed".
fn encoding_text(encoding: &str) -> String {
    match encoding {
        "plain" => "as typed".into(),
        "url-encoded" => "URL-encoded".into(),
        "base64" => "base64-encoded".into(),
        hash => format!("{hash}-hashed"),
    }
}

/// A page-derived name or URL inside evidence, cut to a bounded length.
fn short(s: &str) -> std::borrow::Cow<'_, str> {
    crate::report::untrusted::cut(s, 120)
}

/// Evidence with the walked step or journey step that caused the request, when there was one.
fn with_step(evidence: String, r: &Request) -> String {
    match &r.step {
        Some(step) => format!("{evidence} (during {step})"),
        None => evidence,
    }
}

fn baa_text(v: &Vendor) -> String {
    if v.baa {
        format!("offers a BAA (checked {})", v.baa_checked)
    } else {
        format!("offers no BAA (checked {})", v.baa_checked)
    }
}

/// One leak found in one request.
#[derive(Debug)]
struct Leak {
    severity: Severity,
    evidence: String,
    /// The health term or contact detail that matched, as it appears in the evidence.
    matched: String,
    rule: String,
    dedupe_key: String,
}

/// A named value a tracker received.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    /// "query", "body" or "header".
    location: &'static str,
    name: String,
    value: String,
}

/// Every value the request carried, decoded: query parameters, body (JSON leaves, form fields,
/// or raw text; base64 layers opened), and the Referer header.
fn fields(r: &Request) -> Vec<Field> {
    let mut out = Vec::new();
    if let Ok(u) = url::Url::parse(&r.url) {
        for (k, v) in u.query_pairs() {
            push_decoded(&mut out, "query", k.into_owned(), v.into_owned(), 0);
        }
    }
    if let Some(body) = &r.post_data {
        body_fields(&mut out, body);
    }
    if let Some(referer) = &r.referer {
        out.push(Field {
            location: "header",
            name: "Referer".into(),
            value: referer.clone(),
        });
    }
    out
}

fn body_fields(out: &mut Vec<Field>, body: &str) {
    let trimmed = body.trim();
    if let Ok(json) = serde_json::from_str::<Value>(trimmed)
        && (json.is_object() || json.is_array())
    {
        json_leaves(out, &json, String::new());
        return;
    }
    if !trimmed.contains(char::is_whitespace) && trimmed.contains('=') {
        for (k, v) in url::form_urlencoded::parse(trimmed.as_bytes()) {
            push_decoded(out, "body", k.into_owned(), v.into_owned(), 0);
        }
        return;
    }
    // Several JSON documents or lines (batched beacons): judge each line.
    for (i, line) in trimmed.lines().enumerate().take(200) {
        if let Ok(json) = serde_json::from_str::<Value>(line) {
            json_leaves(out, &json, format!("[{i}]"));
        } else {
            push_decoded(out, "body", format!("line {}", i + 1), line.to_string(), 0);
        }
    }
}

fn json_leaves(out: &mut Vec<Field>, v: &Value, path: String) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter().take(500) {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_leaves(out, v, p);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate().take(500) {
                json_leaves(out, v, format!("{path}[{i}]"));
            }
        }
        Value::String(s) => push_decoded(out, "body", path, s.clone(), 0),
        _ => {}
    }
}

/// Adds a value, and the text inside it if it is base64 or nested URL/JSON (two layers at most).
fn push_decoded(
    out: &mut Vec<Field>,
    location: &'static str,
    name: String,
    value: String,
    depth: u8,
) {
    if depth < 2 && value.len() >= 16 && looks_base64(&value) {
        let engine = base64::engine::general_purpose::STANDARD;
        let decoded = engine
            .decode(value.trim_end_matches('='))
            .or_else(|_| engine.decode(&value))
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.trim_end_matches('='))
            });
        if let Ok(bytes) = decoded
            && let Ok(text) = String::from_utf8(bytes)
            && text.chars().all(|c| !c.is_control() || c.is_whitespace())
        {
            if let Ok(json) = serde_json::from_str::<Value>(&text)
                && (json.is_object() || json.is_array())
            {
                let mut inner = Vec::new();
                json_leaves(&mut inner, &json, format!("{name}(base64)"));
                out.extend(inner.into_iter().map(|f| Field { location, ..f }));
            } else {
                push_decoded(out, location, format!("{name}(base64)"), text, depth + 1);
            }
        }
    }
    out.push(Field {
        location,
        name,
        value,
    });
}

fn looks_base64(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_'))
        && s.chars()
            .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

fn leaks(r: &Request, v: &Vendor, lexicon: &Lexicon) -> Vec<Leak> {
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

/// The event name a pixel request carries, and where, for the vendors whose format is known.
fn event_name(r: &Request, v: &Vendor) -> Option<(String, String)> {
    let query = |key: &str| -> Option<String> {
        url::Url::parse(&r.url)
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let body_json = || -> Option<Value> { serde_json::from_str(r.post_data.as_deref()?).ok() };
    match v.parser.as_deref()? {
        "tiktok" => {
            let body = body_json()?;
            let name = body["event"].as_str()?.to_string();
            Some(("body field 'event'".into(), name))
        }
        "meta" => query("ev")
            .map(|e| ("query field 'ev'".into(), e))
            .or_else(|| {
                let body = r.post_data.as_deref()?;
                url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "ev")
                    .map(|(_, v)| ("body field 'ev'".into(), v.into_owned()))
            }),
        "ga4" => query("en").map(|e| ("query field 'en'".into(), e)),
        // Generic: the event name is in one query parameter ("query:ea" for Microsoft UET).
        other => {
            let key = other.strip_prefix("query:")?;
            query(key).map(|e| (format!("query field '{key}'"), e))
        }
    }
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
fn excerpt_around(s: &str, term: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str, body: Option<&str>, referer: Option<&str>) -> Request {
        Request {
            url: url.into(),
            host: url::Url::parse(url).unwrap().host_str().unwrap().into(),
            method: if body.is_some() { "POST" } else { "GET" }.into(),
            third_party: true,
            post_data: body.map(str::to_string),
            referer: referer.map(str::to_string),
            ..Default::default()
        }
    }

    fn page(requests: Vec<Request>) -> Page {
        Page {
            url: "https://www.clinic.test/services/semaglutide/book".into(),
            requests,
            ..Default::default()
        }
    }

    fn kinds(f: &[Finding]) -> Vec<(String, String)> {
        f.iter()
            .map(|f| (f.kind.clone(), f.evidence.clone()))
            .collect()
    }

    #[test]
    fn tiktok_body_url_and_descriptive_event_are_leaks() {
        let body = r#"{"event":"BookedGLP1Consultation","context":{"page":{"url":"https://www.clinic.test/services/semaglutide/book"}}}"#;
        let f = findings(
            &[page(vec![req(
                "https://analytics.tiktok.com/api/v2/pixel",
                Some(body),
                None,
            )])],
            &Engine::bundled(),
            None,
            ConsentMode::None,
            &[],
        );
        let k = kinds(&f);
        assert!(
            k.iter()
                .any(|(kind, e)| kind == "tracker" && e.contains("TikTok")),
            "{k:?}"
        );
        let event = f
            .iter()
            .find(|f| f.rule == "vendors.toml:tiktok:event_name")
            .expect("event finding");
        assert_eq!(event.severity, Severity::Critical);
        assert!(
            event.evidence.contains("BookedGLP1Consultation") && event.evidence.contains("glp"),
            "{}",
            event.evidence
        );
        let url = f
            .iter()
            .find(|f| f.evidence.contains("context.page.url"))
            .expect("url finding");
        assert!(url.evidence.contains("semaglutide"), "{}", url.evidence);
        assert_eq!(url.rule, "health-terms.toml:glp1_drug");
    }

    #[test]
    fn meta_query_referer_and_contact_details() {
        let r = req(
            "https://www.facebook.com/tr?id=1&ev=PageView&dl=https%3A%2F%2Fwww.clinic.test%2Fabout&ud%5Bem%5D=jane.doe%40mail.test",
            None,
            Some("https://www.clinic.test/conditions/diabetes"),
        );
        let f = findings(
            &[page(vec![r])],
            &Engine::bundled(),
            None,
            ConsentMode::None,
            &[],
        );
        let ev: Vec<_> = f.iter().map(|f| f.evidence.as_str()).collect();
        assert!(
            ev.iter()
                .any(|e| e.contains("Referer") && e.contains("diabetes")),
            "{ev:?}"
        );
        assert!(
            ev.iter()
                .any(|e| e.contains("email address") && e.contains("ud[em]")),
            "{ev:?}"
        );
        // PageView is standard, /about is not health-revealing.
        assert!(!ev.iter().any(|e| e.contains("event name")), "{ev:?}");
        assert!(!ev.iter().any(|e| e.contains("'dl'")), "{ev:?}");
    }

    #[test]
    fn base64_layers_are_opened_and_custom_events_flagged() {
        let inner =
            base64::engine::general_purpose::STANDARD.encode(r#"{"note":"ozempic refill"}"#);
        let r = req(
            &format!("https://www.facebook.com/tr?ev=ClickedButton&d={inner}"),
            None,
            None,
        );
        let f = findings(
            &[page(vec![r])],
            &Engine::bundled(),
            None,
            ConsentMode::None,
            &[],
        );
        let ev: Vec<_> = f
            .iter()
            .map(|f| (f.severity, f.evidence.as_str()))
            .collect();
        assert!(
            ev.iter()
                .any(|(_, e)| e.contains("d(base64).note") && e.contains("ozempic")),
            "{ev:?}"
        );
        assert!(
            ev.iter()
                .any(|(s, e)| *s == Severity::Medium
                    && e.contains("not a standard Meta Pixel event")),
            "{ev:?}"
        );
    }

    #[test]
    fn tracking_cookies_before_consent() {
        let seen = |name: &str, domain: &str| crate::model::CookieSeen {
            cookie: crate::model::Cookie {
                name: name.into(),
                domain: domain.into(),
                set_by: "script".into(),
                ..Default::default()
            },
            first_seen_page: "https://www.clinic.test/services/semaglutide/book".into(),
        };
        let cookies = [
            seen("_fbp", "www.clinic.test"),
            seen("ttwid", ".tiktok.com"),
            seen("session", "www.clinic.test"),
        ];
        let f = cookie_findings(
            &cookies,
            &[page(vec![])],
            &Engine::bundled(),
            ConsentMode::None,
        );
        let vendors: Vec<_> = f.iter().map(|f| f.vendor.clone().unwrap()).collect();
        assert_eq!(vendors, vec!["meta", "tiktok"]);
        assert!(f[0].evidence.contains("_fbp") && f[0].rule == "vendors.toml:meta:cookie");
    }

    #[test]
    fn query_parsers_judge_other_vendors_event_names() {
        let r = req(
            "https://bat.bing.com/action/0?ti=1&evt=custom&ea=ozempic_signup",
            None,
            None,
        );
        let f = findings(
            &[page(vec![r])],
            &Engine::bundled(),
            None,
            ConsentMode::None,
            &[],
        );
        let e = f
            .iter()
            .find(|f| f.rule == "vendors.toml:microsoft-uet:event_name")
            .expect("uet event");
        assert!(
            e.evidence.contains("query field 'ea'") && e.evidence.contains("ozempic"),
            "{}",
            e.evidence
        );
        let ok = req(
            "https://ct.pinterest.com/v3/?event=checkout&tid=1",
            None,
            None,
        );
        let f = findings(
            &[page(vec![ok])],
            &Engine::bundled(),
            None,
            ConsentMode::None,
            &[],
        );
        assert!(!f.iter().any(|f| f.rule.ends_with(":event_name")), "{f:?}");
    }

    #[test]
    fn each_canary_encoding_is_named_once() {
        for (encoding, text) in [
            ("plain", "as typed"),
            ("url-encoded", "URL-encoded"),
            ("base64", "base64-encoded"),
            ("md5", "md5-hashed"),
            ("sha256", "sha256-hashed"),
        ] {
            assert_eq!(encoding_text(encoding), text);
        }
    }

    #[test]
    fn clean_requests_and_non_trackers_produce_no_leaks() {
        let fonts = req(
            "https://fonts.googleapis.com/css2?family=Inter",
            None,
            Some("https://www.clinic.test/services/semaglutide"),
        );
        let ids = req(
            "https://analytics.tiktok.com/api/v2/pixel",
            Some(r#"{"event":"Pageview","context":{"user":{"ttp":"2F7h37YkAbcMsEd9"}}}"#),
            None,
        );
        let f = findings(
            &[page(vec![fonts, ids])],
            &Engine::bundled(),
            None,
            ConsentMode::None,
            &[],
        );
        assert!(!f.iter().any(|f| f.kind == "phi_leak"), "{:?}", kinds(&f));
    }
}
