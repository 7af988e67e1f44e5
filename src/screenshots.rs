//! `--screenshots DIR`: a PNG of each page as a visitor first sees it, written while the scan runs (a
//! site's pictures are never all held in memory) and kept afterwards only for the pages with a
//! finding, each named on its page in the report.
//!
//! File names are built here from the page URL, never taken from it: a lower-case ASCII slug of
//! host and path, cut short, then a hash of the whole URL, so a hostile URL cannot reach outside
//! the directory or collide with another page's picture.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::model::ScanReport;

/// Longest slug in a file name, before the hash.
const SLUG_MAX: usize = 60;

/// A directory of screenshots being filled by one scan.
#[derive(Debug)]
pub struct Screenshots {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Names written by this scan.
    written: BTreeSet<String>,
    /// Pictures that could not be written, and the first reason.
    failed: usize,
    first_failure: Option<String>,
}

/// The directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--screenshots {dir}: {source}")]
pub struct DirError {
    dir: String,
    source: std::io::Error,
}

impl Screenshots {
    /// Creates `dir` (and its parents) if needed and checks that files can be written in it,
    /// before a long scan starts.
    pub fn create(dir: &Path) -> Result<Screenshots, DirError> {
        let err = |source| DirError {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let probe = dir.join(format!(".pixelwatch-{}.probe", std::process::id()));
        std::fs::write(&probe, b"").map_err(err)?;
        let _ = std::fs::remove_file(&probe);
        Ok(Screenshots {
            dir: dir.to_path_buf(),
            state: Mutex::default(),
        })
    }

    /// The directory the pictures go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the picture of the page at `url` and returns its file name; `None` (counted, the
    /// reason kept for [`Self::failure`]) when it cannot be written.
    pub fn save(&self, url: &str, png: &[u8]) -> Option<String> {
        let mut st = self.lock();
        let base = file_stem(url);
        let name = (1..)
            .map(|i| match i {
                1 => format!("{base}.png"),
                i => format!("{base}-{i}.png"),
            })
            .find(|n| !st.written.contains(n))
            .expect("an unused name");
        match std::fs::write(self.dir.join(&name), png) {
            Ok(()) => {
                st.written.insert(name.clone());
                Some(name)
            }
            Err(e) => {
                st.failed += 1;
                st.first_failure
                    .get_or_insert_with(|| format!("{}: {e}", self.dir.join(&name).display()));
                None
            }
        }
    }

    /// Keeps the pictures of pages with a finding and deletes the rest; the report names only
    /// the pictures kept. Returns how many were kept.
    pub fn keep_pages_with_findings(&self, report: &mut ScanReport) -> usize {
        let with_finding: BTreeSet<&str> =
            report.findings.iter().map(|f| f.page.as_str()).collect();
        let mut st = self.lock();
        let mut kept = 0;
        for p in &mut report.pages {
            let Some(name) = p.screenshot.take() else {
                continue;
            };
            if with_finding.contains(p.url.as_str()) {
                p.screenshot = Some(name);
                kept += 1;
            } else if std::fs::remove_file(self.dir.join(&name)).is_ok() {
                st.written.remove(&name);
            }
        }
        kept
    }

    /// "N screenshots could not be written: first reason", when any could not.
    pub fn failure(&self) -> Option<String> {
        let st = self.lock();
        st.first_failure.as_ref().map(|why| {
            format!(
                "{} screenshot{} could not be written: {why}",
                st.failed,
                if st.failed == 1 { "" } else { "s" }
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `www-clinic-test-services-semaglutide-book-1f3a9c2b`: host and path as a slug, then the
/// first 8 hex digits of the URL's SHA-256.
fn file_stem(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let mut slug = String::new();
    for c in rest.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= SLUG_MAX {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let hash = hex::encode(&Sha256::digest(url.as_bytes())[..4]);
    if slug.is_empty() {
        format!("page-{hash}")
    } else {
        format!("{slug}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Finding, FindingKind, Page, Severity};

    #[test]
    fn names_are_slugs_of_the_url_that_cannot_escape_the_directory() {
        let n = file_stem("https://www.clinic.test/services/semaglutide/book?x=1#top");
        assert!(
            n.starts_with("www-clinic-test-services-semaglutide-book-"),
            "{n}"
        );
        for hostile in [
            "https://x.test/../../etc/passwd",
            "https://x.test/%2e%2e%2f%2e%2e/\u{202e}gnp.exe",
            "https://x.test/\0/\n/`rm -rf`",
            "javascript:alert(1)",
            "",
        ] {
            let n = file_stem(hostile);
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{hostile:?} -> {n}"
            );
            assert!(n.len() <= SLUG_MAX + 9, "{n}");
        }
        // Two URLs with the same slug are still two files.
        assert_ne!(
            file_stem("https://x.test/a-b"),
            file_stem("https://x.test/a/b")
        );
        let long = format!("https://x.test/{}", "a".repeat(5000));
        assert!(file_stem(&long).len() <= SLUG_MAX + 9);
    }

    #[test]
    fn only_pages_with_a_finding_keep_their_picture() {
        let dir = tempfile::tempdir().unwrap();
        let shots = Screenshots::create(&dir.path().join("shots/nested")).unwrap();
        let page = |url: &str| Page {
            url: url.into(),
            screenshot: shots.save(url, b"\x89PNG"),
            ..Default::default()
        };
        let mut report = crate::report::empty_report("https://x.test/");
        report.pages = vec![
            page("https://x.test/"),
            page("https://x.test/book"),
            page("https://x.test/book"),
        ];
        report.findings = vec![Finding {
            kind: FindingKind::Tracker,
            severity: Severity::High,
            vendor: None,
            page: "https://x.test/book".into(),
            request_url: None,
            evidence: String::new(),
            rule: String::new(),
            matched: None,
        }];
        let names: Vec<_> = report
            .pages
            .iter()
            .map(|p| p.screenshot.clone().unwrap())
            .collect();
        assert_ne!(names[1], names[2], "the same URL twice is two files");
        assert_eq!(shots.keep_pages_with_findings(&mut report), 2);
        assert_eq!(report.pages[0].screenshot, None);
        assert!(!shots.dir().join(&names[0]).exists());
        for n in &names[1..] {
            assert!(shots.dir().join(n).exists(), "{n}");
        }
        assert_eq!(shots.failure(), None);
    }

    #[test]
    fn an_unwritable_directory_is_refused_before_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let e = Screenshots::create(&file.join("shots"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--screenshots "), "{e}");
        assert!(e.contains("a-file"), "{e}");
    }
}
