//! Typed errors of the relay library.

/// Configuration could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read '{path}': {source}")]
    Read {
        /// File path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or has unknown keys or wrong types.
    #[error("cannot parse config '{path}': {message}")]
    Parse {
        /// File path.
        path: String,
        /// Parser message with line and column.
        message: String,
    },
    /// The values are inconsistent.
    #[error("invalid config '{path}': {message}")]
    Invalid {
        /// File path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database '{path}': {source}")]
    Sqlite {
        /// Database path.
        path: String,
        /// SQLite error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer relay.
    #[error("database '{path}' has schema version {found}, newer than this relay ({supported})")]
    TooNew {
        /// Database path.
        path: String,
        /// Version found.
        found: i64,
        /// Newest version known.
        supported: i64,
    },
    /// Applying the schema failed (the message names the database and the migration file).
    #[error("{0}")]
    Migration(String),
    /// Another relay serves from this database (the outbox's writer is one per database).
    #[error(
        "database '{path}' is in use by another pixelwatch-relay (it holds '{lock}'); run one relay per database"
    )]
    InUse {
        /// Database path.
        path: String,
        /// The lock file.
        lock: String,
    },
    /// The lock file next to the database could not be opened.
    #[error("cannot open the lock file '{lock}' of database '{path}': {source}")]
    Lock {
        /// Database path.
        path: String,
        /// The lock file.
        lock: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// The group transaction did not commit; nothing in it was stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The writer task has stopped (shutdown or crash).
    #[error("the outbox writer has stopped")]
    WriterGone,
}

/// Errors of the operator commands (`audit`, `dead-letters`, `replay`).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `replay --id` named rows that are not dead letters; nothing was changed.
    #[error("not dead letters: {} (see `dead-letters`); nothing was replayed", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "))]
    NotDeadLetters {
        /// The ids that are unknown or not dead-lettered.
        ids: Vec<i64>,
    },
}

/// Errors that stop the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Socket failure.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// Server failure.
    #[error("server error: {0}")]
    Serve(std::io::Error),
    /// A destination has no access token.
    #[error(
        "no access token for destination '{destination}': set the environment variable {env} or its access_token_file"
    )]
    NoToken {
        /// Destination name.
        destination: String,
        /// Variable name (validated to be a variable name, never a value).
        env: String,
    },
}
