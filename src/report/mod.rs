//! Reports for people and programs: the JSON scan report and the terminal summary.

pub mod ci;
pub mod html;
pub mod progress;
pub mod terminal;

use std::path::Path;

use crate::model::ScanReport;

/// Errors writing a report file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write report '{path}': {source}")]
pub struct WriteError {
    pub path: String,
    pub source: std::io::Error,
}

/// Writes the JSON report atomically (temp file, then rename), so a reader never sees half.
pub fn write_json(report: &ScanReport, path: &Path) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.display().to_string(),
        source,
    };
    let json = serde_json::to_vec_pretty(report).expect("a report always serializes");
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    std::io::Write::write_all(&mut tmp, &json).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}
