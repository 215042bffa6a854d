//! Port forwarding inside the Studio.
//!
//! - `direct-tcpip` (`ssh -L`, `-D`, VS Code): connect to any address the
//!   container can reach, then accept the channel; a failed connect is a
//!   channel-open failure the client reports, never a hang.
//! - `tcpip-forward` (`ssh -R`): listen on the container's loopback (as
//!   OpenSSH's default `GatewayPorts no` does) and open a `forwarded-tcpip`
//!   channel back to the client for every connection.

use std::collections::HashMap;
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
        let Ok(port) = u16::try_from(port) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port))).await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                reply.accept().await;
                relay(channel, stream).await;
            }
            Ok(Err(e)) => {
                debug!(%host, port, error = %e, "direct-tcpip connect failed");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
            Err(_) => {
                debug!(%host, port, "direct-tcpip connect timed out");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
    });
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
