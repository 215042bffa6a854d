//! Port forwarding inside the Studio.
//!
//! - `direct-tcpip` (`ssh -L`, `-D`, VS Code): connect to any address the
//!   container can reach, then accept the channel; a failed connect is a
//!   channel-open failure the client reports, never a hang. The failure
//!   carries RFC 4254's reason code and a text saying what happened
//!   ([`Refusal`]), which OpenSSH prints as
//!   `open failed: connect failed: 127.0.0.1:9: connection refused`.
//! - `tcpip-forward` (`ssh -R`): listen on the container's loopback (as
//!   OpenSSH's default `GatewayPorts no` does) and open a `forwarded-tcpip`
//!   channel back to the client for every connection.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelOpenFailure};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::handler::OpenGuard;
use crate::relay::relay;

/// How long a `direct-tcpip` connect may take before the open fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most `tcpip-forward` listeners one connection may hold.
const MAX_LISTENERS: usize = 64;

/// Why a channel open is refused, as the client will read it: the RFC 4254
/// reason code and a text naming the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `CONNECT_CLIENT_TCP_FORWARDING=false` (code 1).
    Prohibited,
    /// The name does not resolve in the container (code 2).
    HostNotFound { host: String },
    /// Nothing listens there (code 2).
    Refused { host: String, port: u32 },
    /// No answer within [`CONNECT_TIMEOUT`] (code 2).
    TimedOut { host: String, port: u32 },
    /// Any other connect error, with the system's words (code 2).
    Failed {
        host: String,
        port: u32,
        error: String,
    },
    /// The connection holds `CONNECT_CLIENT_MAX_CHANNELS` channels (code 4).
    TooManyChannels { limit: usize },
}

impl Refusal {
    /// The SSH_MSG_CHANNEL_OPEN_FAILURE to send.
    pub fn failure(&self) -> ChannelOpenFailure {
        let code = match self {
            Self::Prohibited => ChannelOpenFailure::AdministrativelyProhibited.code(),
            Self::TooManyChannels { .. } => ChannelOpenFailure::ResourceShortage.code(),
            _ => ChannelOpenFailure::ConnectFailed.code(),
        };
        ChannelOpenFailure::Other {
            code,
            reason: self.to_string(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Prohibited => f.write_str("port forwarding is turned off in this Studio"),
            Self::HostNotFound { host } => {
                write!(f, "{host}: host not found (the Studio cannot resolve it)")
            }
            Self::Refused { host, port } => {
                write!(
                    f,
                    "{host}:{port}: connection refused (nothing listens there)"
                )
            }
            Self::TimedOut { host, port } => write!(
                f,
                "{host}:{port}: no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
            Self::Failed { host, port, error } => write!(f, "{host}:{port}: {error}"),
            Self::TooManyChannels { limit } => {
                write!(f, "too many channels on this connection (limit {limit})")
            }
        }
    }
}

/// Connects to `host:port` in the background and relays the channel to it;
/// `guard` counts the channel as open until the relay ends.
pub fn direct_tcpip(
    channel: Channel<Msg>,
    host: String,
    port: u32,
    reply: ChannelOpenHandle,
    guard: OpenGuard,
) {
    tokio::spawn(async move {
        let _guard = guard;
        match connect(&host, port).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                reply.accept().await;
                relay(channel, stream).await;
            }
            Err(refusal) => {
                info!(%host, port, reason = %refusal, "direct-tcpip refused");
                reply.reject(refusal.failure()).await;
            }
        }
    });
}

/// Resolves, then connects to each address in turn; the refusal of the
/// last one tried if none answers.
async fn connect(host: &str, port: u32) -> Result<TcpStream, Refusal> {
    let failed = |error: std::io::Error| match error.kind() {
        ErrorKind::ConnectionRefused => Refusal::Refused {
            host: host.to_owned(),
            port,
        },
        _ => Refusal::Failed {
            host: host.to_owned(),
            port,
            error: error.to_string(),
        },
    };
    let Ok(port16) = u16::try_from(port) else {
        return Err(failed(std::io::Error::new(
            ErrorKind::InvalidInput,
            "not a TCP port",
        )));
    };
    let attempt = async {
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port16)).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                debug!(host, error = %e, "direct-tcpip: name lookup failed");
                Vec::new()
            }
        };
        let mut last = Refusal::HostNotFound {
            host: host.to_owned(),
        };
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = failed(e),
            }
        }
        Err(last)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(Refusal::TimedOut {
                host: host.to_owned(),
                port,
            })
        })
}

/// The connection's `tcpip-forward` listeners, keyed as the client named
/// them; all stop when the connection ends.
#[derive(Default)]
pub struct Forwards {
    listeners: HashMap<(String, u32), JoinHandle<()>>,
}

impl Forwards {
    /// Starts listening for `address:port`; a requested port 0 is replaced
    /// by the one the kernel picked. Returns false when refused.
    pub async fn add(&mut self, address: &str, port: &mut u32, handle: Handle) -> bool {
        if self.listeners.len() >= MAX_LISTENERS
            || self.listeners.contains_key(&(address.to_owned(), *port))
        {
            return false;
        }
        let Ok(requested) = u16::try_from(*port) else {
            return false;
        };
        let listener = match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, requested)))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                info!(address, port = requested, error = %e, "tcpip-forward refused: cannot listen");
                return false;
            }
        };
        let Ok(bound) = listener.local_addr() else {
            return false;
        };
        *port = u32::from(bound.port());
        info!(address, port = *port, "tcpip-forward listening");

        let key = (address.to_owned(), *port);
        let (address, port) = key.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let handle = handle.clone();
                let address = address.clone();
                tokio::spawn(async move {
                    let opened = handle
                        .channel_open_forwarded_tcpip(
                            address,
                            port,
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await;
                    match opened {
                        Ok(channel) => relay(channel, stream).await,
                        Err(e) => debug!(error = %e, "client refused a forwarded-tcpip channel"),
                    }
                });
            }
        });
        self.listeners.insert(key, task);
        true
    }

    /// Stops the listener for `address:port`; false if there was none.
    pub fn cancel(&mut self, address: &str, port: u32) -> bool {
        match self.listeners.remove(&(address.to_owned(), port)) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for Forwards {
    fn drop(&mut self) {
        for task in self.listeners.values() {
            task.abort();
        }
    }
}
