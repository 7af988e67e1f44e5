//! The crawl frontier: which same-site URLs to visit, in what order, and which to skip and why.

pub mod sitemap;
pub mod urls;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use regex::Regex;

use crate::model::Skipped;
pub use urls::{normalize, registrable_domain, same_site};

/// Limits that keep a crawl finite on sites with traps.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_pages: usize,
    pub max_depth: u32,
    /// Pages sharing one path pattern (`/calendar/{n}/{n}`, `/blog?page`).
    pub max_per_pattern: usize,
}

/// A URL waiting to be visited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub url: String,
    pub depth: u32,
    pub via: &'static str,
}

const MAX_SKIPPED: usize = 5000;
const MAX_EXTERNAL: usize = 5000;

/// Breadth-first frontier scoped to one registrable domain.
#[derive(Debug)]
pub struct Frontier {
    site: String,
    limits: Limits,
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    seen: HashSet<String>,
    queue: VecDeque<Pending>,
    patterns: HashMap<String, usize>,
    handed_out: usize,
    skipped: Vec<Skipped>,
    skipped_total: usize,
    external: BTreeSet<String>,
}

impl Frontier {
    /// A frontier for the site of `start` (already normalised).
    pub fn new(start: &url::Url, limits: Limits, include: Vec<Regex>, exclude: Vec<Regex>) -> Self {
        let site = registrable_domain(start.host_str().unwrap_or_default());
        let mut f = Frontier {
            site,
            limits,
            include,
            exclude,
            seen: HashSet::new(),
            queue: VecDeque::new(),
            patterns: HashMap::new(),
            handed_out: 0,
            skipped: Vec::new(),
            skipped_total: 0,
            external: BTreeSet::new(),
        };
        f.seen.insert(start.to_string());
        f.queue.push_back(Pending {
            url: start.to_string(),
            depth: 0,
            via: "start",
        });
        *f.patterns.entry(urls::path_pattern(start)).or_default() += 1;
        f
    }

    /// The registrable domain being crawled.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Offers a URL found on a page at `depth - 1` (or in a sitemap).
    pub fn offer(&mut self, raw: &str, depth: u32, via: &'static str) {
        let Some(u) = normalize(raw) else { return };
        let host = u.host_str().unwrap_or_default();
        if !same_site(&self.site, host) {
            if self.external.len() < MAX_EXTERNAL {
                self.external.insert(u.to_string());
            }
            return;
        }
        let key = u.to_string();
        if !self.seen.insert(key.clone()) {
            return;
        }
        let reason = if urls::is_dangerous(&u) {
            Some("looks like a logout or state-changing link".to_string())
        } else if urls::is_download(&u) {
            Some("download, not a page (recorded, not opened)".to_string())
        } else if self.exclude.iter().any(|r| r.is_match(&key)) {
            Some("matches --exclude".to_string())
        } else if !self.include.is_empty() && !self.include.iter().any(|r| r.is_match(&key)) {
            Some("does not match --include".to_string())
        } else if depth > self.limits.max_depth {
            Some(format!("deeper than --max-depth {}", self.limits.max_depth))
        } else {
            let pattern = urls::path_pattern(&u);
            let n = self.patterns.entry(pattern.clone()).or_default();
            if *n >= self.limits.max_per_pattern {
                Some(format!(
                    "more than {} pages share the pattern {pattern} (trap guard)",
                    self.limits.max_per_pattern
                ))
            } else {
                *n += 1;
                None
            }
        };
        match reason {
            Some(reason) => self.skip(key, reason),
            None => self.queue.push_back(Pending {
                url: key,
                depth,
                via,
            }),
        }
    }

    fn skip(&mut self, url: String, reason: String) {
        self.skipped_total += 1;
        if self.skipped.len() < MAX_SKIPPED {
            self.skipped.push(Skipped { url, reason });
        }
    }

    /// The next URL to visit, while the page limit allows.
    pub fn next_page(&mut self) -> Option<Pending> {
        if self.handed_out >= self.limits.max_pages {
            return None;
        }
        let p = self.queue.pop_front()?;
        self.handed_out += 1;
        Some(p)
    }

    /// URLs waiting.
    pub fn queued(&self) -> usize {
        self.queue
            .len()
            .min(self.limits.max_pages.saturating_sub(self.handed_out))
    }

    /// Ends the crawl: whatever is still queued is skipped for the page limit.
    pub fn finish(mut self) -> (Vec<Skipped>, usize, Vec<String>) {
        let rest: Vec<Pending> = self.queue.drain(..).collect();
        for p in rest {
            let reason = format!("--max-pages {} reached", self.limits.max_pages);
            self.skip(p.url, reason);
        }
        (
            self.skipped,
            self.skipped_total,
            self.external.into_iter().collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontier(max_pages: usize) -> Frontier {
        let start = normalize("https://www.clinic.test/").unwrap();
        Frontier::new(
            &start,
            Limits {
                max_pages,
                max_depth: 3,
                max_per_pattern: 3,
            },
            vec![],
            vec![Regex::new("/private/").unwrap()],
        )
    }

    #[test]
    fn scope_dedupe_and_traps() {
        let mut f = frontier(100);
        assert_eq!(f.next_page().unwrap().via, "start");
        f.offer("https://clinic.test/about#team", 1, "link");
        f.offer("https://www.clinic.test/about?utm_source=x", 1, "link");
        f.offer("https://other.example/x", 1, "link");
        f.offer("https://www.clinic.test/logout", 1, "link");
        f.offer("https://www.clinic.test/intake.pdf", 1, "link");
        f.offer("https://www.clinic.test/private/a", 1, "link");
        f.offer("https://www.clinic.test/deep", 4, "link");
        for m in 1..=9 {
            f.offer(&format!("https://www.clinic.test/cal/2031/{m}"), 1, "link");
        }
        let mut got = vec![];
        while let Some(p) = f.next_page() {
            got.push(p.url);
        }
        assert_eq!(
            got,
            vec![
                "https://clinic.test/about",
                "https://www.clinic.test/about",
                "https://www.clinic.test/cal/2031/1",
                "https://www.clinic.test/cal/2031/2",
                "https://www.clinic.test/cal/2031/3",
            ]
        );
        let (skipped, total, external) = f.finish();
        assert_eq!(external, vec!["https://other.example/x"]);
        assert_eq!(total, 10);
        assert!(skipped.iter().any(|s| s.reason.contains("trap guard")));
        assert!(skipped.iter().any(|s| s.reason.contains("logout")));
        assert!(skipped.iter().any(|s| s.reason.contains("download")));
        assert!(skipped.iter().any(|s| s.reason.contains("--exclude")));
        assert!(skipped.iter().any(|s| s.reason.contains("--max-depth")));
    }

    #[test]
    fn page_limit_skips_the_rest() {
        let mut f = frontier(2);
        f.next_page();
        f.offer("https://www.clinic.test/a", 1, "link");
        f.offer("https://www.clinic.test/b", 1, "link");
        assert!(f.next_page().is_some());
        assert!(f.next_page().is_none());
        let (skipped, _, _) = f.finish();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].reason.contains("--max-pages 2"));
    }
}
