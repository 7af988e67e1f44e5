//! Scripted journeys: a user flow written as TOML steps (`goto`, `click`, `type`, `select`,
//! `wait_for`, `submit`), run by `scan --journey FILE` after the crawl, like the user flows paid
//! monitors offer. Findings name the journey and the step.
//!
//! ```toml
//! name = "book-glp1-consult"
//!
//! [[step]]
//! goto = "https://www.clinic.test/start"
//! [[step]]
//! click = "Weight management"              # visible text, or { selector = "#wl" }
//! [[step]]
//! type = { selector = "#email", canary = "email" }
//! [[step]]
//! type = { selector = "#password", env = "PORTAL_PASSWORD" }   # secrets: environment only
//! [[step]]
//! select = { selector = "#state", value = "CA" }
//! [[step]]
//! submit = "#intake"                        # the form's selector
//! [[step]]
//! wait_for = "Thank you"                    # visible text, or { selector = "..." }
//! ```
//!
//! Typed canaries never leave the browser (the probe's guard holds back every request that
//! carries one); literal values and secrets from the environment do — a login needs them. A
//! secret's value is never written to the report, the logs or an error: it is replaced by
//! `[secret]` wherever a request carried it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a journey file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JourneyError {
    #[error("cannot read journey '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("journey '{path}': {message}")]
    Invalid { path: String, message: String },
}

/// What to find on the page: visible text, or a CSS selector.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Target {
    Text(String),
    Spec {
        #[serde(default)]
        selector: Option<String>,
        #[serde(default)]
        text: Option<String>,
    },
}

impl Target {
    /// (selector, text): exactly one is set.
    pub fn parts(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Target::Text(t) => (None, Some(t.as_str())),
            Target::Spec { selector, text } => (selector.as_deref(), text.as_deref()),
        }
    }

    fn describe(&self) -> String {
        match self.parts() {
            (Some(s), _) => format!("'{s}'"),
            (None, Some(t)) => format!("text '{t}'"),
            (None, None) => "nothing".into(),
        }
    }
}

/// What to type: a canary kind, a literal, or a secret from the environment.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TypeSpec {
    pub selector: String,
    #[serde(default)]
    pub canary: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
}

/// Which option to choose.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectSpec {
    pub selector: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    #[serde(default)]
    goto: Option<String>,
    #[serde(default)]
    click: Option<Target>,
    #[serde(default, rename = "type")]
    type_: Option<TypeSpec>,
    #[serde(default)]
    select: Option<SelectSpec>,
    #[serde(default)]
    wait_for: Option<Target>,
    #[serde(default)]
    submit: Option<Target>,
    /// How long the step may wait for its element (ms).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JourneyFile {
    name: String,
    step: Vec<StepFile>,
}

/// One step's action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Goto(String),
    Click(Target),
    Type(TypeSpec),
    Select(SelectSpec),
    WaitFor(Target),
    Submit(Target),
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub action: Action,
    pub timeout_ms: u64,
}

impl Step {
    /// A short description for step labels and errors (never a secret's value).
    pub fn describe(&self) -> String {
        match &self.action {
            Action::Goto(u) => format!("goto {u}"),
            Action::Click(t) => format!("click {}", t.describe()),
            Action::Type(t) => {
                let what = match (&t.canary, &t.value, &t.env) {
                    (Some(c), _, _) => format!("the {c} canary"),
                    (_, Some(_), _) => "a literal".to_string(),
                    (_, _, Some(e)) => format!("${e}"),
                    _ => "nothing".into(),
                };
                format!("type {what} into '{}'", t.selector)
            }
            Action::Select(s) => format!("select in '{}'", s.selector),
            Action::WaitFor(t) => format!("wait for {}", t.describe()),
            Action::Submit(t) => format!("submit {}", t.describe()),
        }
    }
}

/// A parsed, validated journey.
#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    pub name: String,
    pub file: PathBuf,
    pub steps: Vec<Step>,
}

impl Journey {
    /// The first `goto`: where the journey starts.
    pub fn start(&self) -> Option<&str> {
        self.steps.iter().find_map(|s| match &s.action {
            Action::Goto(u) => Some(u.as_str()),
            _ => None,
        })
    }

    /// Reads and validates a journey file.
    pub fn load(path: &Path) -> Result<Journey, JourneyError> {
        let text = std::fs::read_to_string(path).map_err(|source| JourneyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Journey::parse(&text, path)
    }

    /// Parses a journey; errors name the file, the line and the step.
    pub fn parse(text: &str, path: &Path) -> Result<Journey, JourneyError> {
        let invalid = |message: String| JourneyError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let f: JourneyFile =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().replace('\n', " ")))?;
        if f.name.trim().is_empty() {
            return Err(invalid("`name` is empty".into()));
        }
        let mut steps = Vec::new();
        for (i, s) in f.step.into_iter().enumerate() {
            let n = i + 1;
            let mut actions = Vec::new();
            if let Some(u) = s.goto {
                if crate::crawl::normalize(&u).is_none() {
                    return Err(invalid(format!(
                        "step {n}: goto '{u}' is not an http(s) URL"
                    )));
                }
                actions.push(Action::Goto(u));
            }
            if let Some(t) = s.click {
                actions.push(Action::Click(
                    check_target(t, n, "click").map_err(&invalid)?,
                ));
            }
            if let Some(t) = s.type_ {
                let sources = [t.canary.is_some(), t.value.is_some(), t.env.is_some()];
                if sources.iter().filter(|b| **b).count() != 1 {
                    return Err(invalid(format!(
                        "step {n}: type needs exactly one of canary, value or env"
                    )));
                }
                if let Some(c) = &t.canary
                    && !CANARY_KINDS.contains(&c.as_str())
                {
                    return Err(invalid(format!(
                        "step {n}: unknown canary '{c}' (one of {})",
                        CANARY_KINDS.join(", ")
                    )));
                }
                if let Some(e) = &t.env {
                    let ok = !e.is_empty()
                        && e.chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                    if !ok {
                        // Never echo it: a secret pasted here must not land in a log.
                        return Err(invalid(format!(
                            "step {n}: env must name an environment variable (A-Z, 0-9, _), not hold a value"
                        )));
                    }
                }
                actions.push(Action::Type(t));
            }
            if let Some(sel) = s.select {
                if sel.value.is_some() == sel.text.is_some() {
                    return Err(invalid(format!(
                        "step {n}: select needs exactly one of value or text"
                    )));
                }
                actions.push(Action::Select(sel));
            }
            if let Some(t) = s.wait_for {
                actions.push(Action::WaitFor(
                    check_target(t, n, "wait_for").map_err(&invalid)?,
                ));
            }
            if let Some(t) = s.submit {
                actions.push(Action::Submit(
                    check_target(t, n, "submit").map_err(&invalid)?,
                ));
            }
            if actions.len() != 1 {
                return Err(invalid(format!(
                    "step {n}: needs exactly one of goto, click, type, select, wait_for, submit"
                )));
            }
            steps.push(Step {
                action: actions.remove(0),
                timeout_ms: s.timeout_ms.unwrap_or(10_000).min(120_000),
            });
        }
        let journey = Journey {
            name: f.name,
            file: path.to_path_buf(),
            steps,
        };
        if !matches!(
            journey.steps.first().map(|s| &s.action),
            Some(Action::Goto(_))
        ) {
            return Err(invalid("the first step must be a goto".into()));
        }
        Ok(journey)
    }
}

const CANARY_KINDS: &[&str] = &[
    "email",
    "phone",
    "first_name",
    "last_name",
    "name",
    "dob",
    "text",
];

fn check_target(t: Target, n: usize, what: &str) -> Result<Target, String> {
    match t.parts() {
        (Some(_), None) | (None, Some(_)) => Ok(t),
        _ => Err(format!(
            "step {n}: {what} needs visible text or exactly one of selector or text"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Journey, JourneyError> {
        Journey::parse(text, Path::new("j.toml"))
    }

    #[test]
    fn a_journey_parses_into_steps() {
        let j = parse(
            r##"name = "book"
            [[step]]
            goto = "https://www.clinic.test/start"
            [[step]]
            click = "Weight management"
            [[step]]
            type = { selector = "#email", canary = "email" }
            [[step]]
            type = { selector = "#pw", env = "PORTAL_PASSWORD" }
            [[step]]
            select = { selector = "#state", text = "California" }
            [[step]]
            submit = { selector = "form#intake" }
            [[step]]
            wait_for = "Thank you"
            timeout_ms = 5000
            "##,
        )
        .unwrap();
        assert_eq!(j.name, "book");
        assert_eq!(j.steps.len(), 7);
        assert_eq!(j.start(), Some("https://www.clinic.test/start"));
        assert_eq!(j.steps[6].timeout_ms, 5000);
        assert_eq!(j.steps[3].describe(), "type $PORTAL_PASSWORD into '#pw'");
    }

    #[test]
    fn bad_journeys_say_which_step_and_never_echo_a_secret() {
        for (text, needle) in [
            (
                "name = \"x\"\n[[step]]\nclick = \"A\"",
                "first step must be a goto",
            ),
            ("name = \"x\"\n[[step]]\ngoto = \"notaurl\"", "step 1: goto"),
            (
                "name = \"x\"\n[[step]]\ngoto = \"https://a.test/\"\nclick = \"B\"",
                "step 1: needs exactly one",
            ),
            (
                "name = \"x\"\n[[step]]\ngoto = \"https://a.test/\"\n[[step]]\ntype = { selector = \"#e\", canary = \"ssn\" }",
                "unknown canary 'ssn'",
            ),
            (
                "name = \"x\"\n[[step]]\ngoto = \"https://a.test/\"\n[[step]]\nhover = \"A\"",
                "line 5",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let e = parse("name = \"x\"\n[[step]]\ngoto = \"https://a.test/\"\n[[step]]\ntype = { selector = \"#p\", env = \"hunter2-secret\" }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("step 2") && !e.contains("hunter2"), "{e}");
    }
}
