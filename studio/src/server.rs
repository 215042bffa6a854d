//! The SSH listener: accepts TCP connections and runs one russh session per
//! connection, each with its own [`Connection`] handler.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use model::Fingerprint;
use russh::keys::PrivateKey;
use russh::server::Config as SshConfig;
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info};

use crate::accept_env::AcceptEnv;
use crate::account::Account;
use crate::config::Config;
use crate::error::Error;
use crate::handler::Connection;
use crate::preauth::Gate;

/// What every connection of this server shares.
pub struct Shared {
    /// The accepted proxy key; replaced when registration says so. `None`:
    /// no key is accepted (registration pending).
    pub proxy_fingerprint: RwLock<Option<Fingerprint>>,
    pub account: Account,
    pub max_channels: usize,
    /// The `env` requests sessions may apply.
    pub accept_env: AcceptEnv,
    /// Whether agent forwarding is granted.
    pub agent_forwarding: bool,
    /// Whether `direct-tcpip` and `tcpip-forward` are served.
    pub tcp_forwarding: bool,
}

impl Shared {
    /// The proxy key fingerprint currently accepted.
    pub fn accepted(&self) -> Option<Fingerprint> {
        *self
            .proxy_fingerprint
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_accepted(&self, fingerprint: Fingerprint) {
        *self
            .proxy_fingerprint
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fingerprint);
    }
}

/// A bound, ready server.
pub struct Server {
    listener: TcpListener,
    ssh: Arc<SshConfig>,
    shared: Arc<Shared>,
    host_key_fingerprint: Fingerprint,
    gate: Gate,
}

impl Server {
    /// Binds the listener and prepares the SSH configuration.
    pub async fn bind(config: &Config, host_key: PrivateKey) -> Result<Self, Error> {
        let host_key_fingerprint = crate::hostkey::fingerprint(&host_key)?;
        let listener =
            TcpListener::bind(config.ssh_addr)
                .await
                .map_err(|source| Error::Listen {
                    addr: config.ssh_addr,
                    source,
                })?;
        let ssh = SshConfig {
            server_id: SshId::Standard(
                format!("SSH-2.0-connect-client_{}", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            keys: vec![host_key],
            preferred: crate::algorithms::preferred(),
            // Only the proxy connects here, and it offers the one right key;
            // a short delay on refusal is enough.
            auth_rejection_time: Duration::from_millis(100),
            auth_rejection_time_initial: Some(Duration::ZERO),
            max_auth_attempts: 6,
            inactivity_timeout: config.idle_timeout,
            keepalive_interval: config.keepalive_interval,
            keepalive_max: config.keepalive_max,
            nodelay: true,
            // The proxy rekeys this leg (at most every 512 MiB each way,
            // and hourly). A rekey russh starts itself refuses more than
            // twice its window of data already in flight from the proxy
            // before the proxy's KEXINIT arrives ("Pending buffer limit
            // reached"), which a relay carrying many busy channels can
            // exceed: so russh's own limits (1 GiB at most) are never
            // reached first.
            limits: russh::Limits::new(1 << 30, 1 << 30, Duration::from_secs(10 * 365 * 24 * 3600)),
            ..SshConfig::default()
        };
        Ok(Self {
            listener,
            ssh: Arc::new(ssh),
            shared: Arc::new(Shared {
                proxy_fingerprint: RwLock::new(config.proxy_fingerprint),
                account: Account::current(),
                max_channels: config.max_channels,
                accept_env: config.accept_env.clone(),
                agent_forwarding: config.agent_forwarding,
                tcp_forwarding: config.tcp_forwarding,
            }),
            host_key_fingerprint,
            gate: Gate::new(config.max_startups, config.handshake_timeout),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn host_key_fingerprint(&self) -> Fingerprint {
        self.host_key_fingerprint
    }

    /// The state shared with registration, which updates the accepted key.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until the listener fails.
    pub async fn run(self) -> Result<(), Error> {
        let local = self
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        info!(
            addr = %local,
            host_key_fingerprint = %self.host_key_fingerprint,
            accepted_fingerprint = %self.shared.accepted().map(|f| f.to_string()).unwrap_or_else(|| "none until registered".into()),
            user = %self.shared.account.name,
            shell = %self.shared.account.shell.display(),
            "connect-client listening"
        );
        loop {
            let (socket, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let env: Vec<(OsString, OsString)> = vec![
                (
                    "SSH_CONNECTION".into(),
                    format!(
                        "{} {} {} {}",
                        peer.ip(),
                        peer.port(),
                        local.ip(),
                        local.port()
                    )
                    .into(),
                ),
                (
                    "SSH_CLIENT".into(),
                    format!("{} {} {}", peer.ip(), peer.port(), local.port()).into(),
                ),
            ];
            let (socket, ticket) = self.gate.admit(socket);
            let handler = Connection::new(self.shared.clone(), peer, env, ticket);
            let ssh = self.ssh.clone();
            let span = tracing::info_span!("conn", peer = %peer);
            tokio::spawn(
                async move {
                    match russh::server::run_stream(ssh, socket, handler).await {
                        Ok(session) => match session.await {
                            Ok(()) => debug!("connection closed"),
                            Err(e) => debug!(error = %e, "connection ended"),
                        },
                        // Load-balancer health checks connect and close
                        // without a byte: not worth more than debug.
                        Err(e) => debug!(error = %e, "handshake failed"),
                    }
                }
                .instrument(span),
            );
        }
    }
}
