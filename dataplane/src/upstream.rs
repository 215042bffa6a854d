//! The Studio leg: the proxy's own SSH connection to a Studio's
//! connect-client, made from the same core as the user's connection.
//!
//! The Studio's host key must have the fingerprint connect-client
//! registered; the proxy authenticates with the proxy key. Channels the
//! Studio opens towards the user (`forwarded-tcpip` for `ssh -R`, agent
//! channels for `ssh -A`) are opened on the user's leg and bridged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::{Fingerprint, SessionId};
use russh::client::{self, ChannelOpenHandle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure};
use tracing::{debug, warn};

use crate::bridge::{self, LastActive, Link};
use crate::metrics::CoreMetrics;

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

/// The Studio leg's handler: checks the host key, bridges channels the
/// Studio opens.
pub struct StudioHandler {
    session: SessionId,
    expected: Option<Fingerprint>,
    user: russh::server::Handle,
    metrics: CoreMetrics,
    active: Arc<LastActive>,
    /// Bridges of Studio-opened channels, dropped with the connection.
    links: Arc<Mutex<Vec<Link>>>,
}

impl client::Handler for StudioHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let offered = key.to_bytes().map(|b| Fingerprint::of_key_blob(&b)).ok();
        let ok = offered.is_some() && offered == self.expected;
        if !ok {
            warn!(
                session = %self.session,
                registered = ?self.expected.map(|f| f.to_string()),
                offered = ?offered.map(|f| f.to_string()),
                "studio host key does not match its registration"
            );
        }
        Ok(ok)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let user = self.user.clone();
        let (addr, orig) = (connected_address.to_owned(), originator_address.to_owned());
        let opening = async move {
            user.channel_open_forwarded_tcpip(addr, connected_port, orig, originator_port)
                .await
                .ok()
        };
        self.bridge_opened(channel, reply, opening);
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<client::Msg>,
        reply: ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let user = self.user.clone();
        self.bridge_opened(channel, reply, async move {
            user.channel_open_agent().await.ok()
        });
        Ok(())
    }
}

impl StudioHandler {
    /// Opens the user's side of a Studio-opened channel, then accepts and
    /// bridges it. The Studio's early data waits in its channel meanwhile.
    fn bridge_opened<F>(&self, studio: Channel<client::Msg>, reply: ChannelOpenHandle, open_user: F)
    where
        F: std::future::Future<Output = Option<Channel<russh::server::Msg>>> + Send + 'static,
    {
        let (user, metrics, active, links) = (
            self.user.clone(),
            self.metrics.clone(),
            self.active.clone(),
            self.links.clone(),
        );
        tokio::spawn(async move {
            match open_user.await {
                Some(user_channel) => {
                    reply.accept().await;
                    let link = bridge::start(user_channel, studio, user, metrics, active, None);
                    if let Ok(mut l) = links.lock() {
                        l.retain(|link| !link.is_finished());
                        l.push(link);
                    }
                }
                None => {
                    debug!("the user refused a channel the studio opened");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
    }
}

/// A connected, authenticated Studio leg.
pub struct Upstream {
    pub handle: client::Handle<StudioHandler>,
    links: Arc<Mutex<Vec<Link>>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Ok(links) = self.links.lock() {
            links.iter().for_each(Link::abort);
        }
    }
}

/// What to connect to and as whom.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub session: &'a model::state::Session,
    pub user: &'a str,
    /// This core's I/O backend, for the Studio leg's socket.
    pub backend: crate::io_backend::IoBackend,
}

/// Connects to the Studio of `target.session`.
pub async fn connect(
    target: Target<'_>,
    key: Arc<PrivateKey>,
    config: Arc<client::Config>,
    user: russh::server::Handle,
    metrics: CoreMetrics,
    active: Arc<LastActive>,
) -> Result<Upstream, UpstreamError> {
    let started = Instant::now();
    let result = tokio::time::timeout(
        CONNECT_TIMEOUT,
        connect_inner(target, key, config, user, metrics.clone(), active),
    )
    .await
    .unwrap_or_else(|_| {
        Err(UpstreamError::Unreachable(
            target.session.id,
            "timed out".into(),
        ))
    });
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
    key: Arc<PrivateKey>,
    config: Arc<client::Config>,
    user: russh::server::Handle,
    metrics: CoreMetrics,
    active: Arc<LastActive>,
) -> Result<Upstream, UpstreamError> {
    let s = target.session;
    let id = s.id;
    let endpoint = match (&s.state, &s.endpoint) {
        (model::SessionState::Running, Some(e)) => e.clone(),
        _ => return Err(UpstreamError::NotRunning(id)),
    };
    let tcp = tokio::net::TcpStream::connect(endpoint.as_str())
        .await
        .map_err(|e| UpstreamError::Unreachable(id, e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let stream = crate::io_backend::Stream::from_tokio(tcp, target.backend)
        .map_err(|e| UpstreamError::Unreachable(id, e.to_string()))?;

    let links = Arc::new(Mutex::new(Vec::new()));
    let handler = StudioHandler {
        session: id,
        expected: s.host_key_fingerprint,
        user,
        metrics,
        active,
        links: links.clone(),
    };
    let mut handle = client::connect_stream(config, stream, handler)
        .await
        .map_err(|e| match e {
            russh::Error::UnknownKey => UpstreamError::HostKeyMismatch(id),
            other => UpstreamError::Unreachable(id, other.to_string()),
        })?;
    let auth = handle
        .authenticate_publickey(target.user, PrivateKeyWithHashAlg::new(key, None))
        .await
        .map_err(|e| UpstreamError::Unreachable(id, e.to_string()))?;
    if !auth.success() {
        return Err(UpstreamError::AuthRefused(id));
    }
    Ok(Upstream { handle, links })
}
