//! Cookies: what the jar holds, and which page set each one, by protocol signals only.
//!
//! A page *set* a cookie when a response of that page carried a `Set-Cookie` naming it (`http`),
//! or when the cookie appeared or changed in the jar while the page was open without such a header
//! (`script`: `document.cookie` or the CookieStore). No main-world hook is involved. Tabs run
//! side by side, so a script cookie of one page can appear during another's visit; an `http`
//! claim is proof and wins over a `script` inference, whichever page finished first.
//! Values are never kept: only their length and a hash, to see changes.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde_json::{Value, json};

use super::capture::{PageState, host_of};
use super::cdp::Connection;
use crate::model::{Cookie, CookieSeen, SetBy};

/// (name, domain, path, partition key): one cookie in the jar.
pub type CookieKey = (String, String, String, String);

/// A cookie as the jar holds it, without its value.
#[derive(Debug, Clone)]
pub struct JarCookie {
    pub cookie: Cookie,
    value_hash: u64,
}

impl JarCookie {
    pub fn key(&self) -> CookieKey {
        let c = &self.cookie;
        (
            c.name.clone(),
            c.domain.clone(),
            c.path.clone(),
            c.partition_key.clone().unwrap_or_default(),
        )
    }
}

/// What one visit did to the jar.
#[derive(Debug, Default, Clone)]
pub struct VisitCookies {
    /// The whole jar after the visit.
    pub jar: Vec<JarCookie>,
    /// Cookies that appeared or changed while the page was open.
    pub changed: HashSet<CookieKey>,
    /// (name, Domain attribute or host) of each cookie a Set-Cookie header of the page named.
    pub http_set: Vec<(String, String)>,
}

/// Every cookie in the browser, third-party and partitioned ones included. `None` when the
/// browser did not answer.
pub(super) async fn read_jar(conn: &Connection, context: Option<&str>) -> Option<Vec<JarCookie>> {
    let params = match context {
        Some(id) => json!({"browserContextId": id}),
        None => json!({}),
    };
    let v = conn
        .call_with_timeout("Storage.getCookies", params, None, Duration::from_secs(5))
        .await
        .ok()?;
    Some(v["cookies"].as_array()?.iter().map(jar_cookie).collect())
}

/// The jar difference of one visit: `before` is the jar when the page was opened.
pub(super) fn visit_cookies(
    before: &[JarCookie],
    after: Vec<JarCookie>,
    st: &PageState,
) -> VisitCookies {
    let old: HashMap<CookieKey, u64> = before.iter().map(|c| (c.key(), c.value_hash)).collect();
    let changed = after
        .iter()
        .filter(|c| old.get(&c.key()) != Some(&c.value_hash))
        .map(JarCookie::key)
        .collect();
    VisitCookies {
        jar: after,
        changed,
        http_set: set_cookie_names(st),
    }
}

fn jar_cookie(c: &Value) -> JarCookie {
    let domain = c["domain"].as_str().unwrap_or_default().to_string();
    let expires = c["expires"].as_f64().filter(|e| *e > 0.0);
    let partition_key = match &c["partitionKey"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("topLevelSite")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    };
    let value = c["value"].as_str().unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    JarCookie {
        cookie: Cookie {
            name: c["name"].as_str().unwrap_or_default().to_string(),
            domain,
            path: c["path"].as_str().unwrap_or("/").to_string(),
            expires,
            http_only: c["httpOnly"].as_bool().unwrap_or(false),
            secure: c["secure"].as_bool().unwrap_or(false),
            same_site: c["sameSite"].as_str().map(str::to_string),
            third_party: false,
            set_by: SetBy::Script,
            partition_key,
            value_len: value.len(),
        },
        value_hash: h.finish(),
    }
}

/// (name, domain) of each cookie set by a Set-Cookie header on this page.
fn set_cookie_names(st: &PageState) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, text) in &st.set_cookie {
        let host = st
            .reqs
            .get(key)
            .map(|r| host_of(&r.request.url))
            .unwrap_or_default();
        for line in text.lines() {
            let mut parts = line.split(';');
            let name = parts
                .next()
                .and_then(|kv| kv.split('=').next())
                .unwrap_or_default()
                .trim();
            if name.is_empty() {
                continue;
            }
            let domain = parts
                .filter_map(|a| {
                    let (k, v) = a.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("domain").then(|| v.trim())
                })
                .next()
                .unwrap_or(&host);
            out.push((name.to_string(), domain.to_string()));
        }
    }
    out
}

/// How sure we are who set a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Claim {
    /// Only seen in the jar.
    Seen,
    /// Appeared while a page was open, without a Set-Cookie naming it.
    Script,
    /// A Set-Cookie header of the page named it.
    Http,
}

/// The scan's cookies, each once, with the page that set it (or first saw it).
#[derive(Debug, Default)]
pub struct CookieLedger {
    site: String,
    cookies: HashMap<CookieKey, (CookieSeen, Claim)>,
}

impl CookieLedger {
    /// A ledger for the site (registrable domain) being scanned.
    pub fn new(site: &str) -> CookieLedger {
        CookieLedger {
            site: site.to_string(),
            cookies: HashMap::new(),
        }
    }

    /// Records one visit of `page_url`; returns the cookies that page set.
    pub fn record(&mut self, page_url: &str, visit: &VisitCookies) -> Vec<Cookie> {
        let mut set_here = Vec::new();
        for jc in &visit.jar {
            let mut cookie = jc.cookie.clone();
            cookie.third_party =
                !crate::crawl::same_site(&self.site, cookie.domain.trim_start_matches('.'));
            let named = |list: &[(String, String)]| {
                list.iter()
                    .any(|(n, d)| *n == cookie.name && domain_matches(&cookie.domain, d))
            };
            let key = jc.key();
            let claim = if named(&visit.http_set) {
                Claim::Http
            } else if visit.changed.contains(&key) {
                Claim::Script
            } else {
                Claim::Seen
            };
            cookie.set_by = match claim {
                Claim::Http => SetBy::Http,
                Claim::Script => SetBy::Script,
                // Not set by this page: the best guess until a page claims it.
                Claim::Seen if cookie.http_only => SetBy::Http,
                Claim::Seen => SetBy::Script,
            };
            if claim != Claim::Seen {
                set_here.push(cookie.clone());
            }
            let seen = CookieSeen {
                cookie,
                first_seen_page: page_url.to_string(),
            };
            match self.cookies.entry(key) {
                Entry::Occupied(mut e) if e.get().1 < claim => {
                    e.insert((seen, claim));
                }
                Entry::Occupied(_) => {}
                Entry::Vacant(e) => {
                    e.insert((seen, claim));
                }
            }
        }
        set_here
    }

    /// Every cookie of the scan, sorted by domain and name.
    pub fn finish(self) -> Vec<CookieSeen> {
        let mut out: Vec<CookieSeen> = self.cookies.into_values().map(|(c, _)| c).collect();
        out.sort_by(|a, b| {
            (&a.cookie.domain, &a.cookie.name).cmp(&(&b.cookie.domain, &b.cookie.name))
        });
        out
    }
}

/// Whether a jar cookie domain (".clinic.test" or "www.clinic.test") is the one a Set-Cookie
/// named (its Domain attribute, or the host that set it).
fn domain_matches(jar: &str, named: &str) -> bool {
    let j = jar.trim_start_matches('.').to_ascii_lowercase();
    let n = named.trim_start_matches('.').to_ascii_lowercase();
    n == j || n.ends_with(&format!(".{j}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jc(name: &str, domain: &str, value: &str, http_only: bool) -> JarCookie {
        jar_cookie(
            &json!({"name": name, "domain": domain, "path": "/", "value": value,
            "httpOnly": http_only, "expires": -1}),
        )
    }

    #[test]
    fn http_claims_win_over_script_inferences_whoever_finished_first() {
        let mut ledger = CookieLedger::new("clinic.test");
        let sid = jc("sid", "www.clinic.test", "1", true);
        let fbp = jc("_fbp", ".clinic.test", "fb.1", false);
        // Page A saw both appear, but set neither by header (a tab beside it did).
        let a = VisitCookies {
            jar: vec![sid.clone(), fbp.clone()],
            changed: [sid.key(), fbp.key()].into_iter().collect(),
            http_set: vec![],
        };
        let set_a = ledger.record("https://www.clinic.test/a", &a);
        assert_eq!(set_a.len(), 2);
        // Page B's response set sid.
        let b = VisitCookies {
            jar: vec![sid.clone(), fbp.clone()],
            changed: [sid.key()].into_iter().collect(),
            http_set: vec![("sid".into(), "www.clinic.test".into())],
        };
        let set_b = ledger.record("https://www.clinic.test/b", &b);
        assert_eq!(set_b.len(), 1);
        let all = ledger.finish();
        let sid = all.iter().find(|c| c.cookie.name == "sid").unwrap();
        assert_eq!(
            (sid.cookie.set_by.as_str(), sid.first_seen_page.as_str()),
            ("http", "https://www.clinic.test/b")
        );
        let fbp = all.iter().find(|c| c.cookie.name == "_fbp").unwrap();
        assert_eq!(
            (
                fbp.cookie.set_by.as_str(),
                fbp.first_seen_page.as_str(),
                fbp.cookie.third_party
            ),
            ("script", "https://www.clinic.test/a", false)
        );
    }

    #[test]
    fn a_changed_value_counts_as_set_and_values_are_never_kept() {
        let before = vec![jc("c", "t.test", "old", false)];
        let after = vec![jc("c", "t.test", "new-secret", false)];
        let st = PageState::default();
        let v = visit_cookies(&before, after, &st);
        assert_eq!(v.changed.len(), 1);
        assert_eq!(v.jar[0].cookie.value_len, "new-secret".len());
        assert!(!format!("{:?}", v.jar[0]).contains("new-secret"));
    }
}
