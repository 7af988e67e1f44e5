//! Reports for people and programs: the JSON scan report, the terminal summary, HTML, HAR and
//! the CI formats. Every page-derived string goes through [`untrusted`] for its output.

pub mod ci;
pub mod har;
pub mod html;
pub mod progress;
pub mod terminal;
pub mod untrusted;
pub mod verdict;

use std::io::Write as _;
use std::path::Path;

use crate::model::ScanReport;

/// Errors writing a report file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write '{path}': {source}")]
pub struct WriteError {
    pub path: String,
    pub source: std::io::Error,
}

/// Writes a report file atomically (a temporary file in the same directory, then a rename), so a
/// reader never sees half of it. Every report file (JSON, HTML, HAR, SARIF, JUnit, Markdown,
/// drift) is written here, so all get the same permissions: those of a new file under the
/// process umask (0644 with the usual umask 022).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = dir.join(format!(
        ".{name}.{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o666);
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Writes the JSON scan report (`pixelwatch.scan/v1`).
pub fn write_json(report: &ScanReport, path: &Path) -> Result<(), WriteError> {
    let json = serde_json::to_vec_pretty(report).expect("a report always serializes");
    write_file(path, &json)
}

/// An empty report of `site` (no pages, findings or totals), for unit tests to fill in.
#[cfg(test)]
pub(crate) fn empty_report(site: &str) -> ScanReport {
    ScanReport {
        schema: crate::model::SCAN_SCHEMA.into(),
        id: None,
        site: site.into(),
        started_at: String::new(),
        finished_at: String::new(),
        consent_mode: "none".into(),
        pages: vec![],
        skipped: vec![],
        external_links: vec![],
        cookies: vec![],
        canaries: vec![],
        findings: vec![],
        summary: crate::model::Summary::default(),
    }
}
