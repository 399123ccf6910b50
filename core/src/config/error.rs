//! Why a configuration was rejected: every error names its key path.

/// Why a configuration file was rejected (README.md "Configuration reference").
/// Every variant but `Syntax` carries the key path, e.g. `zones.myzone.timeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not YAML (or holds more than one document).
    #[error("invalid YAML: {0}")]
    Syntax(String),
    /// A value of the wrong kind.
    #[error("{path}: expected {expected}, got {got}")]
    WrongType {
        /// Key path.
        path: String,
        /// What the key takes.
        expected: &'static str,
        /// The value found, rendered for the message.
        got: String,
    },
    /// A value of the right kind outside its allowed range or form.
    #[error("{path}: {reason}")]
    Invalid {
        /// Key path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A required key is absent.
    #[error("{path}: required {context}")]
    Missing {
        /// Key path.
        path: String,
        /// When it is required, e.g. `for the sqlite cache`.
        context: &'static str,
    },
    /// `cache.type` names no backend we have.
    #[error("{path}: unknown cache type {got:?} (expected internal, sqlite, redis, redis_sentinel or postgres)")]
    UnknownCacheType {
        /// Key path (`cache.type`).
        path: String,
        /// The type given.
        got: String,
    },
}

impl ConfigError {
    /// The key path the error is about (`None` for YAML syntax errors).
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Syntax(_) => None,
            ConfigError::WrongType { path, .. }
            | ConfigError::Invalid { path, .. }
            | ConfigError::Missing { path, .. }
            | ConfigError::UnknownCacheType { path, .. } => Some(path),
        }
    }
}
