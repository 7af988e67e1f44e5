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
    /// The group transaction did not commit; nothing in it was stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The writer task has stopped (shutdown or crash).
    #[error("the outbox writer has stopped")]
    WriterGone,
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
    /// The destination is not configured (no access token).
    #[error(
        "no TikTok access token: set the environment variable {env} or tiktok.access_token_file"
    )]
    NoToken {
        /// Variable name.
        env: String,
    },
}
