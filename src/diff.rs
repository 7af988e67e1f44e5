//! Drift: what a scan has that an approved baseline does not, and the reverse.
//!
//! A scan is reduced to an *inventory* of identities that ignore noise — cookie and storage
//! values are never recorded, script URLs lose their query (cache busting), findings are keyed by
//! kind, vendor and rule, and page order does not matter — so two scans of an unchanged site have
//! no drift. Each identity keeps the pages where it appears. The inventory is also the portable
//! baseline file (`pixelwatch.baseline/v1`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::ScanReport;

/// Schema id of a baseline file.
pub const BASELINE_SCHEMA: &str = "pixelwatch.baseline/v1";

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
}

impl Drift {
    /// Whether anything changed.
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

/// Reduces a scan to its inventory.
pub fn inventory(report: &ScanReport) -> Inventory {
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
                format!("{} {} {}", s.origin, s.kind, s.key),
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
        let domain = c.cookie.domain.trim_start_matches('.');
        add(
            &mut inv.cookies,
            format!("{} @ {domain}", c.cookie.name),
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
        if b.schema != BASELINE_SCHEMA {
            return Err(BaselineError::Schema {
                path: shown,
                found: b.schema,
            });
        }
        Ok(b)
    }

    /// Writes the baseline as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), BaselineError> {
        let json = serde_json::to_vec_pretty(self).expect("a baseline always serializes");
        std::fs::write(path, json).map_err(|source| BaselineError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Drift as text for a terminal or an email.
pub fn render(drift: &Drift) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if drift.is_empty() {
        let _ = writeln!(out, "No drift: {} matches its baseline.", drift.site);
        return out;
    }
    let _ = writeln!(
        out,
        "Drift on {}: {} added, {} removed",
        drift.site,
        drift.added.len(),
        drift.removed.len()
    );
    for (sign, items) in [("+", &drift.added), ("-", &drift.removed)] {
        for i in items {
            let more = if i.pages.len() > 3 {
                format!(" and {} more", i.pages.len() - 3)
            } else {
                String::new()
            };
            let pages: Vec<&str> = i.pages.iter().take(3).map(String::as_str).collect();
            let _ = writeln!(
                out,
                "  {sign} {:<18} {}  (on {}{more})",
                i.category,
                i.key,
                pages.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Page, Request, Script, Summary};

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
            schema: crate::model::SCAN_SCHEMA.into(),
            id: None,
            site: "https://c.test/".into(),
            started_at: String::new(),
            finished_at: String::new(),
            consent_mode: "none".into(),
            pages,
            skipped: vec![],
            external_links: vec![],
            cookies: vec![],
            canaries: vec![],
            findings: vec![],
            summary: Summary::default(),
        }
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
