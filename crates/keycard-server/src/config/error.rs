//! Why a configuration was refused.

use std::path::PathBuf;

/// Why a configuration was refused. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file (or `<built-in defaults>`).
        path: String,
        /// The parser's message, with line and key.
        message: String,
    },
    /// A value that parsed but is not acceptable.
    #[error("config file {path}: `{key}`: {message}")]
    Invalid {
        /// The file (or `<built-in defaults>`).
        path: String,
        /// The key, such as `routes[1].upstream`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}
