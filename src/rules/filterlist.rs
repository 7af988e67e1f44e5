//! Optional Adblock-syntax filter lists (EasyPrivacy and the like, supplied by the user: their
//! licences forbid bundling) to catch trackers the vendor rules do not know. Each match names the
//! list file and the line of the rule.

use std::path::{Path, PathBuf};

use super::RulesError;

/// Compiled filter lists.
pub struct FilterLists {
    engine: adblock::Engine,
    files: Vec<String>,
}

impl std::fmt::Debug for FilterLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterLists")
            .field("files", &self.files)
            .finish()
    }
}

/// A filter-list match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterHit {
    /// The list file.
    pub list: String,
    /// 1-based line of the rule in that file.
    pub line: usize,
    pub rule: String,
}

impl FilterLists {
    /// Loads every file; `None` when no file was given. A missing or unreadable file is an error
    /// naming it; an empty list is an error too (a wrong file is the likely cause).
    pub fn load(paths: &[PathBuf]) -> Result<Option<FilterLists>, RulesError> {
        if paths.is_empty() {
            return Ok(None);
        }
        let mut set = adblock::lists::FilterSet::new(true);
        let mut files = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|source| RulesError::Read {
                path: p.display().to_string(),
                source,
            })?;
            let rules = text
                .lines()
                .filter(|l| {
                    let l = l.trim();
                    !l.is_empty() && !l.starts_with('!') && !l.starts_with('[')
                })
                .count();
            if rules == 0 {
                return Err(RulesError::Invalid {
                    path: p.display().to_string(),
                    id: "filter list".into(),
                    message: "contains no filter rules".into(),
                });
            }
            set.add_filter_list(text, adblock::lists::ParseOptions::default());
            files.push(display_name(p));
        }
        Ok(Some(FilterLists {
            engine: adblock::Engine::new_with_filter_set(set),
            files,
        }))
    }

    /// The blocking rule a request matches, if any (exception rules are honoured).
    pub fn check(
        &self,
        url: &str,
        page_url: &str,
        resource_type: &str,
        method: &str,
    ) -> Option<FilterHit> {
        let kind = match resource_type {
            "Document" => "sub_frame",
            "Script" => "script",
            "Image" => "image",
            "Stylesheet" => "stylesheet",
            "Font" => "font",
            "Media" => "media",
            "XHR" | "Fetch" | "EventSource" => "xmlhttprequest",
            "Ping" | "CSPViolationReport" => "ping",
            "WebSocket" => "websocket",
            _ => "other",
        };
        let req = adblock::request::Request::new(url, page_url, kind, method).ok()?;
        let res = self.engine.check_network_request(&req);
        if !res.should_block() {
            return None;
        }
        let info = res.filter?;
        let loc = info.source_location?;
        Some(FilterHit {
            list: self
                .files
                .get(loc.source_index as usize)
                .cloned()
                .unwrap_or_default(),
            line: loc.line_number as usize + 1,
            rule: info.raw_line.unwrap_or_default(),
        })
    }
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_name_the_list_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("easyprivacy-sample.txt");
        std::fs::write(&a, "! Title: sample\n||tracker.example^\n@@||tracker.example/allowed^\n/beacon.gif?$image\n").unwrap();
        let lists = FilterLists::load(&[a]).unwrap().unwrap();
        let hit = lists
            .check(
                "https://tracker.example/t.js",
                "https://clinic.test/",
                "Script",
                "GET",
            )
            .unwrap();
        assert_eq!(
            (hit.list.as_str(), hit.line, hit.rule.as_str()),
            ("easyprivacy-sample.txt", 2, "||tracker.example^")
        );
        let hit = lists
            .check(
                "https://cdn.other.test/beacon.gif?x=1",
                "https://clinic.test/",
                "Image",
                "GET",
            )
            .unwrap();
        assert_eq!(hit.line, 4);
        assert!(
            lists
                .check(
                    "https://tracker.example/allowed/x",
                    "https://clinic.test/",
                    "Script",
                    "GET"
                )
                .is_none()
        );
        assert!(
            lists
                .check(
                    "https://cdn.other.test/app.js",
                    "https://clinic.test/",
                    "Script",
                    "GET"
                )
                .is_none()
        );
    }

    #[test]
    fn bad_files_are_named() {
        let e = FilterLists::load(&[PathBuf::from("/nonexistent/list.txt")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/list.txt"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "! only a comment\n").unwrap();
        let e = FilterLists::load(&[empty]).unwrap_err().to_string();
        assert!(
            e.contains("empty.txt") && e.contains("no filter rules"),
            "{e}"
        );
    }
}
