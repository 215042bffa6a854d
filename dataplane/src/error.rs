//! Why a connection ended, by whose fault. The label goes to logs
//! (`reason=`) and to `connect_proxy_connections_closed_total{reason}`.

use crate::authorize::Denied;
use crate::ssh::transport::TransportError;
use crate::ssh::wire::Malformed;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The user's client broke the protocol.
    #[error("client: {0}")]
    Client(String),
    /// The user's client went away (EOF, reset, DISCONNECT).
    #[error("client left")]
    ClientLeft,
    /// The user's leg failed at the transport (I/O, MAC, key exchange).
    #[error("client transport: {0}")]
    UserLeg(TransportError),
    /// The Studio leg could not be made.
    #[error("studio: {0}")]
    Studio(#[from] UpstreamError),
    /// The Studio leg failed after it was made.
    #[error("studio transport: {0}")]
    StudioLeg(TransportError),
    /// Not authenticated within CONNECT_SSH_HANDSHAKE_TIMEOUT.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Dropped unauthenticated to make room (CONNECT_SSH_MAX_STARTUPS).
    #[error("dropped before authentication to make room for new connections")]
    Evicted,
    /// A state change took the login's right away.
    #[error("access revoked: {}", .0.label())]
    Revoked(Denied),
}

impl ConnError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Client(_) => "client_protocol",
            Self::ClientLeft => "client_closed",
            Self::UserLeg(TransportError::Closed) => "client_closed",
            Self::UserLeg(TransportError::Disconnected { .. }) => "client_closed",
            Self::UserLeg(_) => "client_transport",
            Self::Studio(e) => e.reason(),
            Self::StudioLeg(TransportError::Closed | TransportError::Disconnected { .. }) => {
                "studio_closed"
            }
            Self::StudioLeg(_) => "studio_transport",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Evicted => "max_startups",
            Self::Revoked(_) => "revoked",
        }
    }
}

impl From<TransportError> for ConnError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Closed | TransportError::Disconnected { .. } => Self::ClientLeft,
            other => Self::UserLeg(other),
        }
    }
}

impl From<Malformed> for ConnError {
    fn from(m: Malformed) -> Self {
        Self::Client(m.to_string())
    }
}
