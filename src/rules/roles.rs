//! Page roles and topic weights (`rules/page-roles.toml`): what a page is for, read from what a
//! visitor sees, and which health topics are critical. Compiled once per scan; the health
//! context (`analyze::context`) applies them.

use std::path::Path;

use serde::Deserialize;

use crate::lexicon::{Match, Sensitivity};
use crate::model::PageHealth;

/// The bundled roles file.
pub const BUNDLED: &str = include_str!("../../rules/page-roles.toml");
const BUNDLED_NAME: &str = "page-roles.toml";

/// Why a roles file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("cannot read page roles '{path}': {message}")]
    Parse { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolesFile {
    pub(crate) role: Vec<RoleDef>,
    pub(crate) generic: GenericDef,
    pub(crate) sensitivity: SensitivityDef,
    pub(crate) density: DensityDef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleDef {
    pub(crate) id: String,
    pub(crate) label: String,
    #[serde(default)]
    pub(crate) phrases: Vec<String>,
    #[serde(default)]
    pub(crate) path_words: Vec<String>,
    #[serde(default)]
    pub(crate) schema_types: Vec<String>,
    #[serde(default)]
    pub(crate) signal: Option<Control>,
    #[serde(default)]
    pub(crate) requires: Option<Control>,
    #[serde(default = "default_min_score")]
    pub(crate) min_score: u32,
}

fn default_min_score() -> u32 {
    3
}

/// A kind of control a page may have.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Control {
    Choices,
    PasswordFields,
    DateFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenericDef {
    pub(crate) phrases: Vec<String>,
    pub(crate) path_words: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SensitivityDef {
    pub(crate) critical_categories: Vec<String>,
    pub(crate) critical_terms: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DensityDef {
    pub(crate) min_hits: usize,
    pub(crate) per_100_words: f64,
}

/// Page roles and topic weights, compiled once per scan.
#[derive(Debug)]
pub struct PageRoles {
    pub(crate) file: String,
    pub(crate) roles: Vec<RoleDef>,
    pub(crate) generic: GenericDef,
    pub(crate) sensitivity: SensitivityDef,
    pub(crate) density: DensityDef,
}

impl PageRoles {
    /// The bundled roles.
    pub fn bundled() -> PageRoles {
        PageRoles::parse(BUNDLED, BUNDLED_NAME).expect("the bundled page roles parse")
    }

    /// `DIR/page-roles.toml` when the directory has one, else the bundled roles.
    pub fn from_dir(dir: Option<&Path>) -> Result<PageRoles, RolesError> {
        let Some(path) = dir.map(|d| d.join(BUNDLED_NAME)).filter(|p| p.is_file()) else {
            return Ok(PageRoles::bundled());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| RolesError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        PageRoles::parse(&text, &path.display().to_string())
    }

    /// Parses a roles file; errors name the file and line.
    pub fn parse(text: &str, path: &str) -> Result<PageRoles, RolesError> {
        let f: RolesFile = toml::from_str(text).map_err(|e| RolesError::Parse {
            path: path.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let file = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string());
        Ok(PageRoles {
            file,
            roles: f.role,
            generic: f.generic,
            sensitivity: f.sensitivity,
            density: f.density,
        })
    }

    /// The rule id a finding about `health` names ("page-roles.toml:booking").
    pub fn rule(&self, health: &PageHealth) -> String {
        format!(
            "{}:{}",
            self.file,
            health.role.as_deref().unwrap_or("topic")
        )
    }

    pub(crate) fn critical(&self, m: &Match) -> bool {
        m.sensitivity == Sensitivity::Critical
            || self.sensitivity.critical_categories.contains(&m.category)
            || self
                .sensitivity
                .critical_terms
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&m.term))
    }
}
