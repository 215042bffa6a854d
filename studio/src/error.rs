//! connect-client's errors, by who is at fault.

use std::path::PathBuf;

/// Why connect-client could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operator's configuration is unusable (exit code 64).
    #[error(transparent)]
    Config(#[from] model::env::ConfigError),

    /// The host key file given by the operator cannot be used (exit code 64).
    #[error("CONNECT_CLIENT_HOST_KEY_PATH: cannot use host key {path}: {reason}")]
    HostKey { path: PathBuf, reason: String },

    /// We could not listen where we were told to.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },

    /// Something in our own process failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The process exit code for this error: 64 for configuration the
    /// operator must fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::HostKey { .. } => model::env::EXIT_CONFIG,
            Self::Listen { .. } | Self::Internal(_) => 1,
        }
    }
}

/// What a russh handler callback can fail with. A failure here ends only the
/// one connection it belongs to.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The SSH layer failed (a client sent something malformed, or the
    /// connection dropped).
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
}
