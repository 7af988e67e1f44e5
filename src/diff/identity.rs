//! Identities that travel: a first-party host written relative to the scanned site, and cookie
//! and storage names with volatile parts (timestamps, UUIDs, hex or numeric ids) written as a
//! pattern, so a production baseline checks staging on another host and `cache_1733012345678`
//! is the same key on every scan (`cache_{n}`).
//!
//! Both rewrites are idempotent: an identity already written this way is left as it is, so a
//! baseline can be normalised again on every read.

use std::sync::OnceLock;

use regex::Regex;

use crate::crawl::registrable_domain;

/// The scanned site's own hosts, for writing first-party identities relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteHosts {
    /// The start URL's host and the host it redirected to.
    hosts: Vec<String>,
    /// Their registrable domain.
    domain: String,
}

/// Whether an identity part was written relative to the site (`{site}`, `{domain}`).
pub fn is_site_relative(s: &str) -> bool {
    s.contains("{site}") || s.contains("{domain}")
}

fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
}

impl SiteHosts {
    /// The site of a start URL, and optionally where its start page ended up.
    pub fn new(site: &str, final_url: Option<&str>) -> SiteHosts {
        let mut hosts: Vec<String> = [Some(site), final_url]
            .into_iter()
            .flatten()
            .filter_map(host_of)
            .collect();
        hosts.dedup();
        let domain = hosts
            .first()
            .map(|h| registrable_domain(h))
            .unwrap_or_default();
        SiteHosts { hosts, domain }
    }

    /// `{site}` for the site's own host or its registrable domain (a host-only cookie on an
    /// apex site and a domain cookie are one identity), `sub.{domain}` for another host of the
    /// domain; any other host unchanged.
    pub fn relative(&self, host: &str) -> String {
        let h = host
            .trim_start_matches('.')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if self.hosts.contains(&h) || (!self.domain.is_empty() && h == self.domain) {
            return "{site}".into();
        }
        if self.domain.is_empty() {
            return host.to_string();
        }
        match h.strip_suffix(&format!(".{}", self.domain)) {
            Some(sub) => format!("{sub}.{{domain}}"),
            None => host.to_string(),
        }
    }

    /// An origin (`https://host:port`) relative to the site: `{site}` for the site's own
    /// origins (scheme and port dropped, they differ between environments), unchanged otherwise.
    pub fn relative_origin(&self, origin: &str) -> String {
        match host_of(origin) {
            Some(h) => {
                let rel = self.relative(&h);
                if is_site_relative(&rel) {
                    rel
                } else {
                    origin.to_string()
                }
            }
            None => origin.to_string(),
        }
    }
}

fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("identity pattern");
        vec![
            (
                re(r"(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
                "{uuid}",
            ),
            // A token of 8+ hex digits with at least one digit and one letter.
            (
                re(r"(?i)(?:^|\b|_)([0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*|[0-9a-f]*[a-f][0-9a-f]*[0-9][0-9a-f]*)(?:\b|_|$)"),
                "{hex}",
            ),
            // Runs of 4+ digits: timestamps, numeric ids.
            (re(r"[0-9]{4,}"), "{n}"),
        ]
    })
}

/// A cookie or storage name with its volatile parts written as a pattern: UUIDs `{uuid}`, hex
/// tokens of 8+ characters `{hex}`, runs of 4+ digits `{n}`.
pub fn stable_name(name: &str) -> String {
    let [uuid, hex, digits] = patterns() else {
        unreachable!("three patterns")
    };
    let out = uuid.0.replace_all(name, uuid.1).into_owned();
    let out = replace_hex(&hex.0, &out);
    digits.0.replace_all(&out, digits.1).into_owned()
}

/// Replaces hex tokens (group 1) of 8+ characters, keeping the delimiters around them.
fn replace_hex(re: &Regex, s: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let Some(m) = caps.get(1) else { continue };
        if m.as_str().len() < 8 {
            continue;
        }
        out.push_str(&s[last..m.start()]);
        out.push_str("{hex}");
        last = m.end();
    }
    out.push_str(&s[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_names_become_patterns_and_stay_so() {
        for (name, stable) in [
            ("cache_1733012345678", "cache_{n}"),
            ("sess_5f3a9c2e1b", "sess_{hex}"),
            ("id-0b8e2f4a-1c3d-4e5f-8a9b-0c1d2e3f4a5b", "id-{uuid}"),
            ("_hjSession_3456789", "_hjSession_{n}"),
            ("_ga", "_ga"),
            ("_ga_ABC123XYZ", "_ga_ABC123XYZ"),
            ("ab_test_2", "ab_test_2"),
            ("deadbeefcafe", "deadbeefcafe"),
            ("visit", "visit"),
            ("ts:1700000000:last", "ts:{n}:last"),
        ] {
            assert_eq!(stable_name(name), stable, "{name}");
            assert_eq!(stable_name(stable), stable, "idempotent: {stable}");
        }
    }

    #[test]
    fn first_party_hosts_are_written_relative_to_the_site() {
        let prod = SiteHosts::new(
            "https://example-clinic.com/",
            Some("https://www.example-clinic.com/"),
        );
        assert_eq!(prod.relative("www.example-clinic.com"), "{site}");
        assert_eq!(prod.relative(".example-clinic.com"), "{site}");
        assert_eq!(prod.relative("book.example-clinic.com"), "book.{domain}");
        assert_eq!(prod.relative("tiktok.com"), "tiktok.com");
        assert_eq!(
            prod.relative_origin("https://www.example-clinic.com"),
            "{site}"
        );
        assert_eq!(
            prod.relative_origin("https://x.tiktok.com"),
            "https://x.tiktok.com"
        );
        let staging = SiteHosts::new("https://clinic-staging.test:8443/", None);
        assert_eq!(staging.relative("clinic-staging.test"), "{site}");
        assert_eq!(
            staging.relative_origin("https://clinic-staging.test:8443"),
            "{site}"
        );
        assert_eq!(staging.relative("{site}"), "{site}");
    }
}
