//! The russh client every scenario drives: TCP from a chosen source
//! address, SSH with an optional fixed cipher and key exchange, public-key
//! authentication, and optionally a jump host in front (outer SSH to the
//! jump host, `direct-tcpip` to the target, inner SSH over that channel:
//! what `ssh -J` does).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Preferred, cipher, client, kex};

use crate::failure::Failure;
use crate::target::Sources;

/// Checks the server's host key against a pinned SHA256 fingerprint, or
/// accepts any key (the default: targets are on loopback).
#[derive(Debug, Clone, Default)]
pub struct HostKey {
    pin: Option<Arc<str>>,
}

impl HostKey {
    pub fn any() -> Self {
        Self::default()
    }

    /// `SHA256:...` as `ssh-keygen -lf` prints it.
    pub fn pinned(fingerprint: &str) -> Self {
        Self {
            pin: Some(fingerprint.into()),
        }
    }
}

impl client::Handler for HostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let Some(pin) = &self.pin else {
            return Ok(true);
        };
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        Ok(key.fingerprint(HashAlg::Sha256).to_string() == **pin)
    }
}

/// Algorithm choices of the client.
#[derive(Debug, Clone, Default)]
pub struct Algorithms {
    /// One cipher by its SSH name (`aes256-gcm@openssh.com`), or russh's
    /// order.
    pub cipher: Option<String>,
    /// One key exchange by its SSH name (`curve25519-sha256`), or russh's
    /// order (mlkem768x25519-sha256 first, as OpenSSH 10 clients).
    pub kex: Option<String>,
}

/// A client configuration for `algorithms`; unknown names are errors that
/// list the known ones.
pub fn client_config(algorithms: &Algorithms) -> Result<Arc<client::Config>> {
    let mut preferred = Preferred::default();
    if let Some(name) = &algorithms.kex {
        let chosen = kex::ALL_KEX_ALGORITHMS
            .iter()
            .find(|n| n.as_ref() == name)
            .copied()
            .copied()
            .with_context(|| {
                let known: Vec<&str> = kex::ALL_KEX_ALGORITHMS.iter().map(|n| n.as_ref()).collect();
                format!("unknown key exchange {name:?}; known: {}", known.join(", "))
            })?;
        let mut list = vec![chosen];
        // Keep the extension pseudo-algorithms (ext-info, strict kex).
        list.extend(
            Preferred::default()
                .kex
                .iter()
                .filter(|n| {
                    n.as_ref().starts_with("ext-info") || n.as_ref().starts_with("kex-strict")
                })
                .copied(),
        );
        preferred.kex = Cow::Owned(list);
    }
    if let Some(name) = &algorithms.cipher {
        let chosen = cipher::ALL_CIPHERS
            .iter()
            .find(|n| n.as_ref() == name && n.as_ref() != "clear")
            .copied()
            .copied()
            .with_context(|| {
                let known: Vec<String> = Preferred::default()
                    .cipher
                    .iter()
                    .map(|n| n.as_ref().to_owned())
                    .collect();
                format!("unknown cipher {name:?}; known: {}", known.join(", "))
            })?;
        preferred.cipher = Cow::Owned(vec![chosen]);
    }
    Ok(Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: None,
        nodelay: true,
        preferred,
        ..client::Config::default()
    }))
}

/// A private key from `path`; a `.pub` given by mistake says so.
pub fn load_key(path: &std::path::Path) -> Result<Arc<PrivateKey>> {
    let key = russh::keys::load_secret_key(path, None).map_err(|e| {
        let hint = if path.extension().is_some_and(|x| x == "pub") {
            " (this is the public half; pass the private key, without .pub)"
        } else {
            ""
        };
        anyhow::anyhow!("{}: {e}{hint}", path.display())
    })?;
    Ok(Arc::new(key))
}

/// A TCP connection from `source` (port chosen by the kernel) to `addr`.
async fn tcp_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<tokio::net::TcpStream, Failure> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| Failure::io("connect", &e))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| Failure::io("bind", &e))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| Failure::io("connect", &e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn login_over<S>(
    config: Arc<client::Config>,
    stream: S,
    host_key: HostKey,
    login: &str,
    key: Arc<PrivateKey>,
) -> Result<client::Handle<HostKey>, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let pinned = host_key.pin.is_some();
    let mut handle = client::connect_stream(config, stream, host_key)
        .await
        .map_err(|e| match e {
            russh::Error::UnknownKey if pinned => Failure::new("host key mismatch", e.to_string()),
            e => Failure::russh("handshake", &e),
        })?;
    let auth = handle
        .authenticate_publickey(login, PrivateKeyWithHashAlg::new(key, None))
        .await
        .map_err(|e| Failure::russh("authentication", &e))?;
    if !auth.success() {
        // The commonest slip against connect-proxy: a plain user name.
        let hint = if login.contains('@') {
            ""
        } else {
            " (connect-proxy logins are USER@SESSION, e.g. demo@01ac8894)"
        };
        return Err(Failure::new(
            "authentication refused",
            format!("the server refused the key for {login}{hint}"),
        ));
    }
    Ok(handle)
}

/// Where a [`Connector`] sends connections through first.
#[derive(Debug, Clone)]
pub struct Jump {
    pub addr: SocketAddr,
    pub login: String,
    pub key: Arc<PrivateKey>,
    /// The jump leg's algorithms (the inner leg uses the connector's).
    pub config: Arc<client::Config>,
}

/// Opens authenticated connections to one target.
#[derive(Debug)]
pub struct Connector {
    pub config: Arc<client::Config>,
    pub target: SocketAddr,
    pub jump: Option<Jump>,
    pub host_key: HostKey,
    pub sources: Sources,
}

/// One open connection (and its jump-host connection, if any, which must
/// outlive it).
pub struct Conn {
    pub handle: client::Handle<HostKey>,
    outer: Option<client::Handle<HostKey>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("jump", &self.outer.is_some())
            .finish()
    }
}

impl Connector {
    /// TCP, key exchange and authentication as `login` (through the jump
    /// host, if any).
    pub async fn connect(&self, login: &str, key: Arc<PrivateKey>) -> Result<Conn, Failure> {
        match &self.jump {
            None => {
                let tcp = tcp_from(self.target, self.sources.next()).await?;
                let handle =
                    login_over(self.config.clone(), tcp, self.host_key.clone(), login, key).await?;
                Ok(Conn {
                    handle,
                    outer: None,
                })
            }
            Some(jump) => {
                let tcp = tcp_from(jump.addr, self.sources.next()).await?;
                let outer = login_over(
                    self.config.clone(),
                    tcp,
                    HostKey::any(),
                    &jump.login,
                    jump.key.clone(),
                )
                .await?;
                let channel = outer
                    .channel_open_direct_tcpip(
                        self.target.ip().to_string(),
                        u32::from(self.target.port()),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| Failure::russh("jump direct-tcpip", &e))?;
                let handle = login_over(
                    self.config.clone(),
                    channel.into_stream(),
                    self.host_key.clone(),
                    login,
                    key,
                )
                .await?;
                Ok(Conn {
                    handle,
                    outer: Some(outer),
                })
            }
        }
    }
}

impl Conn {
    /// Says goodbye (bounded in time) and drops the connection.
    pub async fn close(self) {
        close(self.handle).await;
        if let Some(outer) = self.outer {
            close(outer).await;
        }
    }
}

/// Runs `command` on a new session channel; its exit status once the
/// channel is closed, or a classified failure.
pub async fn run(handle: &client::Handle<HostKey>, command: &str) -> Result<u32, Failure> {
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|e| Failure::russh("channel open", &e))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| Failure::russh("exec", &e))?;
    let mut status = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Failure => {
                return Err(Failure::new("exec refused", format!("{command:?} refused")));
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    status.ok_or_else(|| {
        Failure::new(
            "no exit status",
            format!("{command:?} ended without an exit status"),
        )
    })
}

/// Says goodbye and lets the connection's task end.
pub async fn close(handle: client::Handle<HostKey>) {
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        handle.disconnect(Disconnect::ByApplication, "", "en"),
    )
    .await;
    drop(handle);
}
