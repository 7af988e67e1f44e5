//! Drift: what a scan has that an approved baseline does not, and the reverse.
//!
//! A scan is reduced to an *inventory* of identities that ignore noise — cookie and storage
//! values are never recorded, script URLs lose their query (cache busting), findings are keyed by
//! kind, vendor and rule, page order does not matter, first-party hosts are written relative to
//! the site (`{site}`) and volatile parts of cookie and storage names as patterns (`cache_{n}`,
//! see [`identity`]) — so two scans of an unchanged site have no drift, and a production baseline
//! checks staging on another host. Each identity keeps the pages where it appears. The inventory
//! is also the portable baseline file (`pixelwatch.baseline/v2`; v1 files are read and
//! normalised).

pub mod identity;
pub mod mutes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::ScanReport;
use crate::report::untrusted::terminal;
pub use identity::{SiteHosts, is_site_relative, stable_name};

/// Schema id of a baseline file.
pub const BASELINE_SCHEMA: &str = "pixelwatch.baseline/v2";
/// The earlier baseline schema (hosts and volatile names as seen), still read.
pub const BASELINE_SCHEMA_V1: &str = "pixelwatch.baseline/v1";
/// Most drift items per category in the text rendering.
pub const MAX_ITEMS_SHOWN: usize = 20;

/// Identity -> pages where it appears.
pub type Items = BTreeMap<String, BTreeSet<String>>;

/// What a scan contained, by stable identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Inventory {
    pub vendors: Items,
    pub tracker_hosts: Items,
    pub third_party_hosts: Items,
    pub cookies: Items,
    pub storage: Items,
    pub third_party_scripts: Items,
    pub findings: Items,
}

/// A portable baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    pub schema: String,
    pub site: String,
    /// The scan it was made from, if it came from a database.
    pub scan_id: Option<i64>,
    pub approved_at: String,
    pub inventory: Inventory,
}

/// One drifted identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriftItem {
    /// "vendor", "tracker_host", "third_party_host", "cookie", "storage", "third_party_script", "finding"
    pub category: String,
    pub key: String,
    pub pages: Vec<String>,
}

/// Everything added and removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Drift {
    pub schema: String,
    pub site: String,
    pub baseline_scan: Option<i64>,
    pub scan: Option<i64>,
    pub added: Vec<DriftItem>,
    pub removed: Vec<DriftItem>,
    /// Added findings an active mute keeps out of the judgement ([`mutes::apply`]), listed so
    /// nothing is hidden silently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub muted: Vec<mutes::MutedItem>,
}

impl Drift {
    /// Whether anything changed (muted findings do not count).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Errors reading or writing a baseline file.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read baseline '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("baseline '{path}' is not a {BASELINE_SCHEMA} file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("baseline '{path}' has schema '{found}', expected {BASELINE_SCHEMA}")]
    Schema { path: String, found: String },
    #[error("cannot write baseline '{path}': {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

fn add(items: &mut Items, key: String, page: &str) {
    items.entry(key).or_default().insert(page.to_string());
}

/// A URL without query and fragment: cache-busting parameters are not a new script.
fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

/// The site's own hosts: the start URL's, and where the start page ended up.
fn site_hosts(report: &ScanReport) -> SiteHosts {
    let start = report
        .pages
        .iter()
        .find(|p| p.url == report.site)
        .or(report.pages.first());
    SiteHosts::new(&report.site, start.map(|p| p.final_url.as_str()))
}

fn storage_key(site: &SiteHosts, origin: &str, kind: &str, key: &str) -> String {
    format!(
        "{} {kind} {}",
        site.relative_origin(origin),
        stable_name(key)
    )
}

fn cookie_key(site: &SiteHosts, name: &str, domain: &str) -> String {
    format!("{} @ {}", stable_name(name), site.relative(domain))
}

impl Inventory {
    /// Cookie and storage identities rewritten relative to `site` with stable names (for
    /// baselines written before identities were: idempotent).
    pub fn normalized(mut self, site: &SiteHosts) -> Inventory {
        let rekey = |items: Items, f: &dyn Fn(&str) -> String| -> Items {
            let mut out = Items::new();
            for (k, pages) in items {
                out.entry(f(&k)).or_default().extend(pages);
            }
            out
        };
        self.cookies = rekey(self.cookies, &|k| match k.rsplit_once(" @ ") {
            Some((name, domain)) => cookie_key(site, name, domain),
            None => k.to_string(),
        });
        self.storage = rekey(self.storage, &|k| {
            let mut parts = k.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(origin), Some(kind), Some(key)) => storage_key(site, origin, kind, key),
                _ => k.to_string(),
            }
        });
        self
    }
}

/// Reduces a scan to its inventory.
pub fn inventory(report: &ScanReport) -> Inventory {
    let site = site_hosts(report);
    let mut inv = Inventory::default();
    for p in &report.pages {
        let page = p.url.as_str();
        for r in &p.requests {
            if r.third_party {
                add(&mut inv.third_party_hosts, r.host.clone(), page);
            }
            if let Some(v) = &r.vendor {
                add(&mut inv.vendors, v.clone(), page);
                if r.third_party {
                    add(&mut inv.tracker_hosts, r.host.clone(), page);
                }
            }
        }
        for s in &p.storage {
            add(
                &mut inv.storage,
                storage_key(&site, &s.origin, &s.kind, &s.key),
                page,
            );
        }
        for s in &p.scripts {
            if let (true, Some(url)) = (s.third_party, &s.url) {
                add(&mut inv.third_party_scripts, strip_query(url), page);
            }
        }
    }
    for c in &report.cookies {
        add(
            &mut inv.cookies,
            cookie_key(&site, &c.cookie.name, &c.cookie.domain),
            &c.first_seen_page,
        );
    }
    for f in &report.findings {
        let vendor = f.vendor.as_deref().unwrap_or("-");
        add(
            &mut inv.findings,
            format!("{} {} {} [{}]", f.severity.as_str(), f.kind, vendor, f.rule),
            &f.page,
        );
    }
    inv
}

/// Drift of `now` against `baseline`.
pub fn diff(baseline: &Baseline, now: &ScanReport) -> Drift {
    let current = inventory(now);
    let base = &baseline.inventory;
    let mut drift = Drift {
        schema: "pixelwatch.drift/v1".into(),
        site: now.site.clone(),
        baseline_scan: baseline.scan_id,
        scan: now.id,
        ..Default::default()
    };
    let pairs: [(&str, &Items, &Items); 7] = [
        ("vendor", &base.vendors, &current.vendors),
        ("tracker_host", &base.tracker_hosts, &current.tracker_hosts),
        (
            "third_party_host",
            &base.third_party_hosts,
            &current.third_party_hosts,
        ),
        ("cookie", &base.cookies, &current.cookies),
        ("storage", &base.storage, &current.storage),
        (
            "third_party_script",
            &base.third_party_scripts,
            &current.third_party_scripts,
        ),
        ("finding", &base.findings, &current.findings),
    ];
    for (category, before, after) in pairs {
        for (key, pages) in after {
            if !before.contains_key(key) {
                drift.added.push(DriftItem {
                    category: category.into(),
                    key: key.clone(),
                    pages: pages.iter().cloned().collect(),
                });
            }
        }
        for (key, pages) in before {
            if !after.contains_key(key) {
                drift.removed.push(DriftItem {
                    category: category.into(),
                    key: key.clone(),
                    pages: pages.iter().cloned().collect(),
                });
            }
        }
    }
    drift
}

impl Baseline {
    /// A baseline from a scan.
    pub fn from_scan(report: &ScanReport) -> Baseline {
        Baseline {
            schema: BASELINE_SCHEMA.into(),
            site: report.site.clone(),
            scan_id: report.id,
            approved_at: crate::scan::now_rfc3339(),
            inventory: inventory(report),
        }
    }

    /// Reads a baseline file.
    pub fn read(path: &Path) -> Result<Baseline, BaselineError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
            path: shown.clone(),
            source,
        })?;
        let b: Baseline = serde_json::from_str(&text).map_err(|source| BaselineError::Parse {
            path: shown.clone(),
            source,
        })?;
        if b.schema != BASELINE_SCHEMA && b.schema != BASELINE_SCHEMA_V1 {
            return Err(BaselineError::Schema {
                path: shown,
                found: b.schema,
            });
        }
        Ok(b.normalized())
    }

    /// The baseline with identities in the current form (a v1 baseline becomes v2).
    pub fn normalized(mut self) -> Baseline {
        self.inventory = self.inventory.normalized(&SiteHosts::new(&self.site, None));
        self.schema = BASELINE_SCHEMA.into();
        self
    }

    /// Writes the baseline as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), BaselineError> {
        let json = serde_json::to_vec_pretty(self).expect("a baseline always serializes");
        crate::report::write_file(path, &json).map_err(|e| BaselineError::Write {
            path: e.path,
            source: e.source,
        })
    }
}

/// Drift as text for a terminal or an email: page-derived text made visible-safe, at most
/// [`MAX_ITEMS_SHOWN`] items per category and direction, then "and K more".
pub fn render(drift: &Drift) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let site = terminal(&drift.site);
    if drift.is_empty() {
        let _ = writeln!(out, "No drift: {site} matches its baseline.");
        render_muted(&mut out, drift);
        return out;
    }
    let _ = writeln!(
        out,
        "Drift on {site}: {} added, {} removed",
        drift.added.len(),
        drift.removed.len()
    );
    for (sign, items) in [("+", &drift.added), ("-", &drift.removed)] {
        for (category, items) in by_category(items) {
            for i in items.iter().take(MAX_ITEMS_SHOWN) {
                let _ = writeln!(
                    out,
                    "  {sign} {:<18} {}  (on {})",
                    category,
                    terminal(&i.key),
                    crate::report::untrusted::list_more(&i.pages, 3, terminal)
                );
            }
            if items.len() > MAX_ITEMS_SHOWN {
                let _ = writeln!(
                    out,
                    "  {sign} {:<18} ... and {} more",
                    category,
                    items.len() - MAX_ITEMS_SHOWN
                );
            }
        }
    }
    render_muted(&mut out, drift);
    out
}

/// The muted findings of a drift, one line each with who muted them, until when and why.
fn render_muted(out: &mut String, drift: &Drift) {
    use std::fmt::Write as _;
    for m in drift.muted.iter().take(MAX_ITEMS_SHOWN) {
        let _ = writeln!(
            out,
            "  muted {:<12} {}  (muted by {} until {}: {})",
            m.item.category,
            terminal(&m.item.key),
            terminal(&m.muted_by),
            m.expires_at,
            terminal(&m.reason)
        );
    }
    if drift.muted.len() > MAX_ITEMS_SHOWN {
        let _ = writeln!(
            out,
            "  muted ... and {} more",
            drift.muted.len() - MAX_ITEMS_SHOWN
        );
    }
}

/// Drift items grouped by category, in the order they first appear.
pub fn by_category(items: &[DriftItem]) -> Vec<(&str, Vec<&DriftItem>)> {
    let mut out: Vec<(&str, Vec<&DriftItem>)> = Vec::new();
    for i in items {
        match out.iter_mut().find(|(c, _)| *c == i.category) {
            Some((_, v)) => v.push(i),
            None => out.push((i.category.as_str(), vec![i])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Page, Request, Script};

    fn report(pixel_on: &[&str], script_query: &str) -> ScanReport {
        let pages = ["https://c.test/", "https://c.test/deep/page"]
            .iter()
            .map(|u| {
                let mut requests = vec![Request {
                    url: "https://cdn.other.test/lib.js".into(),
                    host: "cdn.other.test".into(),
                    third_party: true,
                    ..Default::default()
                }];
                if pixel_on.contains(u) {
                    requests.push(Request {
                        url: "https://analytics.tiktok.com/api/v2/pixel".into(),
                        host: "analytics.tiktok.com".into(),
                        third_party: true,
                        vendor: Some("tiktok".into()),
                        ..Default::default()
                    });
                }
                Page {
                    url: u.to_string(),
                    requests,
                    scripts: vec![Script {
                        url: Some(format!("https://cdn.other.test/lib.js{script_query}")),
                        sha256: None,
                        third_party: true,
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ScanReport {
            pages,
            ..crate::report::empty_report("https://c.test/")
        }
    }

    #[test]
    fn a_v1_baseline_of_production_checks_staging_on_another_host() {
        let mut prod = report(&[], "");
        prod.pages[0].storage = vec![crate::model::StorageEntry {
            origin: "https://c.test".into(),
            kind: "local".into(),
            key: "cache_1733012345678".into(),
            ..Default::default()
        }];
        // A baseline written before identities were site-relative (schema v1).
        let mut v1 = Baseline::from_scan(&prod);
        v1.schema = BASELINE_SCHEMA_V1.into();
        v1.inventory.storage = [(
            "https://c.test local cache_1733012345678".to_string(),
            ["https://c.test/".to_string()].into(),
        )]
        .into();
        v1.inventory.cookies = [(
            "sid @ c.test".to_string(),
            ["https://c.test/".to_string()].into(),
        )]
        .into();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.json");
        v1.write(&file).unwrap();
        let read = Baseline::read(&file).unwrap();
        assert_eq!(read.schema, BASELINE_SCHEMA);
        assert!(
            read.inventory
                .storage
                .contains_key("{site} local cache_{n}")
        );
        assert!(read.inventory.cookies.contains_key("sid @ {site}"));

        let mut staging = report(&[], "");
        staging.site = "https://staging.other.test/".into();
        for p in &mut staging.pages {
            p.url = p
                .url
                .replace("https://c.test", "https://staging.other.test");
            p.final_url = p.url.clone();
        }
        staging.pages[0].storage = vec![crate::model::StorageEntry {
            origin: "https://staging.other.test".into(),
            kind: "local".into(),
            key: "cache_1799999999999".into(),
            ..Default::default()
        }];
        staging.cookies = vec![crate::model::CookieSeen {
            cookie: crate::model::Cookie {
                name: "sid".into(),
                domain: "staging.other.test".into(),
                ..Default::default()
            },
            first_seen_page: "https://staging.other.test/".into(),
        }];
        let d = diff(&read, &staging);
        assert!(d.is_empty(), "{}", render(&d));
    }

    #[test]
    fn unchanged_site_has_no_drift_despite_cache_busting_and_order() {
        let a = report(&[], "?v=1");
        let mut b = report(&[], "?v=2");
        b.pages.reverse();
        assert!(diff(&Baseline::from_scan(&a), &b).is_empty());
    }

    #[test]
    fn a_pixel_on_a_deep_page_is_added_with_its_page() {
        let base = Baseline::from_scan(&report(&[], ""));
        let d = diff(&base, &report(&["https://c.test/deep/page"], ""));
        let keys: Vec<_> = d
            .added
            .iter()
            .map(|i| (i.category.as_str(), i.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("vendor", "tiktok"),
                ("tracker_host", "analytics.tiktok.com"),
                ("third_party_host", "analytics.tiktok.com")
            ]
        );
        assert_eq!(d.added[0].pages, vec!["https://c.test/deep/page"]);
        assert!(d.removed.is_empty());
        let back = diff(
            &Baseline::from_scan(&report(&["https://c.test/deep/page"], "")),
            &report(&[], ""),
        );
        assert_eq!(back.removed.len(), 3);
        assert!(render(&d).contains("+ vendor"));
    }
}
