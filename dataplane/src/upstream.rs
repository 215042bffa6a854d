//! The connect-upstream phase: the proxy's own SSH client connection to a
//! Studio's connect-client, made from the same core as the user's
//! connection. The Studio's host key must have the fingerprint
//! connect-client registered; the proxy authenticates with the proxy key
//! as the platform user. What comes back is a [`Leg`] ready to relay.

use std::time::{Duration, Instant};

use model::SessionId;
use tracing::debug;

use crate::io_backend::{IoBackend, Stream};
use crate::metrics::CoreMetrics;
use crate::ssh::kex::KexError;
use crate::ssh::msg;
use crate::ssh::sig::Ed25519Signer;
use crate::ssh::transport::{Event, Leg, Role, TransportError};
use crate::ssh::wire::{Put, Reader};

/// The most a Studio leg carries each way between rekeys, whatever
/// `CONNECT_SSH_REKEY_LIMIT` says: connect-client's russh rekeys at 1 GiB
/// and fails under a busy relay when it starts the rekey itself, so the
/// proxy always starts first.
const STUDIO_REKEY_MAX: u64 = 512 << 20;

/// How long connecting, handshaking and authenticating to a Studio may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the Studio leg could not be made; the message is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("studio {0} is not running; start it from the platform")]
    NotRunning(SessionId),
    #[error("studio {0} is not reachable; try again in a moment, or restart it from the platform")]
    Unreachable(SessionId, String),
    #[error(
        "studio {0} presented a host key other than the one it registered; refusing to connect"
    )]
    HostKeyMismatch(SessionId),
    #[error(
        "studio {0} refused the proxy key; the platform's proxy key fingerprint may not match this proxy"
    )]
    AuthRefused(SessionId),
}

impl UpstreamError {
    /// What went wrong underneath, for the log (not shown to the user).
    pub fn detail(&self) -> &str {
        match self {
            Self::Unreachable(_, detail) => detail,
            _ => "",
        }
    }

    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotRunning(_) => "not_running",
            Self::Unreachable(..) => "unreachable",
            Self::HostKeyMismatch(_) => "host_key_mismatch",
            Self::AuthRefused(_) => "auth_refused",
        }
    }
}

/// What to connect to and as whom.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub session: &'a model::state::Session,
    pub user: &'a str,
    /// This core's I/O backend, for the Studio leg's socket.
    pub backend: IoBackend,
    pub rekey_bytes: u64,
}

/// Connects to the Studio of `target.session`, within [`CONNECT_TIMEOUT`].
pub async fn connect(
    target: Target<'_>,
    key: &Ed25519Signer,
    metrics: &CoreMetrics,
) -> Result<Leg<Stream>, UpstreamError> {
    let started = Instant::now();
    let id = target.session.id;
    let result = tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(target, key))
        .await
        .unwrap_or_else(|_| Err(UpstreamError::Unreachable(id, "timed out".into())));
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics
        .all
        .upstream_connect
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics
            .all
            .upstream_failures
            .with_label_values(&[e.reason()])
            .inc();
    }
    result
}

async fn connect_inner(
    target: Target<'_>,
    key: &Ed25519Signer,
) -> Result<Leg<Stream>, UpstreamError> {
    let s = target.session;
    let id = s.id;
    let endpoint = match (&s.state, &s.endpoint) {
        (model::SessionState::Running, Some(e)) => e.clone(),
        _ => return Err(UpstreamError::NotRunning(id)),
    };
    let unreachable = |e: &dyn std::fmt::Display| UpstreamError::Unreachable(id, e.to_string());
    let tcp = tokio::net::TcpStream::connect(endpoint.as_str())
        .await
        .map_err(|e| unreachable(&e))?;
    crate::io_backend::tune(&tcp);
    let stream = Stream::from_tokio(tcp, target.backend).map_err(|e| unreachable(&e))?;
    let mut leg = Leg::new(
        stream,
        Role::Client {
            expected: s.host_key_fingerprint,
        },
        target.rekey_bytes.min(STUDIO_REKEY_MAX),
    );
    leg.handshake().await.map_err(|e| match e {
        TransportError::Kex(KexError::HostKey) => UpstreamError::HostKeyMismatch(id),
        other => unreachable(&other),
    })?;
    authenticate(&mut leg, target.user, key)
        .await
        .map_err(|e| match e {
            Refused::No => UpstreamError::AuthRefused(id),
            Refused::Transport(t) => unreachable(&t),
        })?;
    debug!(session = %id, "studio leg authenticated");
    Ok(leg)
}

enum Refused {
    No,
    Transport(TransportError),
}

impl From<TransportError> for Refused {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}

impl From<crate::ssh::wire::Malformed> for Refused {
    fn from(e: crate::ssh::wire::Malformed) -> Self {
        Self::Transport(e.into())
    }
}

/// Service request, then one signed publickey request as `user`.
async fn authenticate(
    leg: &mut Leg<Stream>,
    user: &str,
    key: &Ed25519Signer,
) -> Result<(), Refused> {
    let mut p = Vec::with_capacity(32);
    p.put_u8(msg::SERVICE_REQUEST);
    p.put_str("ssh-userauth");
    leg.tx.send(&p);

    let mut request = Vec::with_capacity(256);
    request.put_u8(msg::USERAUTH_REQUEST);
    request.put_str(user);
    request.put_str("ssh-connection");
    request.put_str("publickey");
    request.put_bool(true);
    request.put_str("ssh-ed25519");
    request.put_string(key.public_blob());
    let mut signed = Vec::with_capacity(request.len() + 40);
    signed.put_string(leg.kex.session_id());
    signed.put_raw(&request);
    request.put_string(&key.sign(&signed));
    leg.tx.send(&request);
    leg.tx.flush().await?;

    loop {
        let p = leg.rx.recv().await?;
        match p[0] {
            msg::SERVICE_ACCEPT | msg::USERAUTH_BANNER => {}
            msg::USERAUTH_SUCCESS => return Ok(()),
            msg::USERAUTH_FAILURE => {
                let mut r = Reader::new(&p);
                r.u8("failure")?;
                return Err(Refused::No);
            }
            m if msg::is_transport(m) => {
                if let Event::Disconnected { code, description } = leg.on_transport(&p)? {
                    return Err(TransportError::Disconnected { code, description }.into());
                }
                leg.tx.flush().await?;
            }
            m => {
                return Err(TransportError::protocol(format!(
                    "message {m} from the Studio before authentication"
                ))
                .into());
            }
        }
    }
}
