//! What a command returns, and the one place that turns it into an exit code.
//!
//! Exit codes (a contract, see README): 0 clean / no drift; 1 run error; 2 policy violation or
//! drift found; 3 bad configuration or arguments.

use std::process::ExitCode;

use crate::alert::AlertError;
use crate::config::ConfigError;
use crate::diff::BaselineError;
use crate::policy::PolicyError;
use crate::report::WriteError;
use crate::rules::RulesError;
use crate::scan::ScanError;
use crate::store::StoreError;
use crate::watch::WatchError;

/// How a command that ran to the end came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Clean, no drift (exit 0).
    Clean,
    /// A policy violation or drift was found (exit 2).
    Violation,
}

/// Why a command failed, typed by where it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Alert(#[from] AlertError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// An argument the command cannot use (named in the message).
    #[error("{0}")]
    Usage(String),
    /// The run failed for a reason without a typed source (named in the message).
    #[error("{0}")]
    Run(String),
}

/// The exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Clean = 0,
    RunError = 1,
    Violation = 2,
    Usage = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

impl From<Outcome> for Exit {
    fn from(o: Outcome) -> Exit {
        match o {
            Outcome::Clean => Exit::Clean,
            Outcome::Violation => Exit::Violation,
        }
    }
}

impl From<&Error> for Exit {
    /// Bad input is 3; anything that went wrong while running — a locked, unreadable or corrupt
    /// database, a browser that died, a file that cannot be written, a channel that failed — is 1.
    fn from(e: &Error) -> Exit {
        let usage = match e {
            Error::Scan(e) => e.is_usage(),
            Error::Watch(e) => e.is_usage(),
            Error::Store(e) => e.is_usage(),
            Error::Fleet(e) => e.is_usage(),
            Error::Policy(_)
            | Error::Baseline(BaselineError::Read { .. })
            | Error::Baseline(BaselineError::Parse { .. })
            | Error::Baseline(BaselineError::Schema { .. })
            | Error::Config(_)
            | Error::Rules(_)
            | Error::Alert(_)
            | Error::Usage(_) => true,
            Error::Baseline(BaselineError::Write { .. }) | Error::Write(_) | Error::Run(_) => false,
        };
        if usage { Exit::Usage } else { Exit::RunError }
    }
}

impl Error {
    /// The exit code this error ends the process with.
    pub fn exit(&self) -> Exit {
        Exit::from(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_or_corrupt_database_is_a_run_error_and_a_missing_scan_is_usage() {
        let locked = Error::Store(StoreError::Locked {
            path: "x.db".into(),
        });
        assert_eq!(locked.exit(), Exit::RunError);
        let corrupt = Error::Store(StoreError::Corrupt {
            path: "x.db".into(),
            id: 1,
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        });
        assert_eq!(corrupt.exit(), Exit::RunError);
        assert_eq!(Error::Store(StoreError::NotFound(9)).exit(), Exit::Usage);
        assert_eq!(Error::Usage("bad".into()).exit(), Exit::Usage);
        assert_eq!(Exit::from(Outcome::Violation) as u8, 2);
    }
}
