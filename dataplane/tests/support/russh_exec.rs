//! A minimal russh server on a data-plane core (public-key auth, `exec`
//! answers `echo ARGS` with `ARGS`), checked with the real OpenSSH client
//! and with a russh client connected through [`io_backend::connect`].

use std::sync::Arc;
use std::time::Duration;

use dataplane::io_backend::{self, IoBackend};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, Disconnect, client, server};
use testkit::{KeyPair, KeyType, Ssh};

use crate::core_server::{on_core, serve};

struct EchoExec {
    client_key: PublicKey,
    channels: Vec<Channel<Msg>>,
}

impl server::Handler for EchoExec {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if key.public_key.key_data() == self.client_key.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.push(channel);
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let mut line = command.strip_prefix(b"echo ").unwrap_or(command).to_vec();
        line.push(b'\n');
        session.data(channel, line)?;
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)
    }
}

struct Client {
    host_key: PublicKey,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(matches!(key, PublicKeyOrCertificate::PublicKey { key, .. }
            if key.key_data() == self.host_key.key_data()))
    }
}

fn load(pair: &KeyPair) -> PrivateKey {
    russh::keys::load_secret_key(&pair.private, None).expect("load key")
}

/// Serves two connections on a `server` core: OpenSSH's `ssh`, then a russh
/// client running on a `client` core; both must get their echo back.
pub fn openssh_and_russh_clients(server_backend: IoBackend, client_backend: IoBackend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = KeyPair::generate(dir.path(), "host", KeyType::Ed25519);
    let user = KeyPair::generate(dir.path(), "user", KeyType::Ed25519);
    let host_key = load(&host);
    let user_key = load(&user);

    let config = Arc::new(server::Config {
        keys: vec![host_key.clone()],
        auth_rejection_time: Duration::from_millis(10),
        inactivity_timeout: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    });
    let client_public = user_key.public_key().clone();
    let (addr, server) = serve(server_backend, 2, move |stream| {
        let handler = EchoExec {
            client_key: client_public.clone(),
            channels: Vec::new(),
        };
        let config = config.clone();
        async move {
            let session = server::run_stream(config, stream, handler).await?;
            session.await
        }
    });

    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, host.known_hosts_line(addr.port())).expect("known_hosts");
    let ssh = Ssh {
        port: addr.port(),
        user: "alice".into(),
        identity: user.private.clone(),
        known_hosts: Some(known_hosts),
    };
    let out = ssh
        .ssh()
        .arg("echo hello over ssh")
        .output()
        .expect("run ssh");
    assert!(
        out.status.success(),
        "ssh: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over ssh\n");

    let host_public = host_key.public_key().clone();
    let (output, status) = on_core(client_backend, move || async move {
        russh_exec(
            addr,
            client_backend,
            host_public,
            user_key,
            "echo hello over russh",
        )
        .await
    })
    .expect("russh client");
    assert_eq!(String::from_utf8_lossy(&output), "hello over russh\n");
    assert_eq!(status, Some(0));

    for result in server.join().expect("server core") {
        if let Err(e) = result {
            // The OpenSSH client may close the TCP connection without a
            // disconnect message; anything else is a failure.
            assert!(
                matches!(e, russh::Error::Disconnect | russh::Error::HUP),
                "server session: {e:?}"
            );
        }
    }
}

async fn russh_exec(
    addr: std::net::SocketAddr,
    backend: IoBackend,
    host_key: PublicKey,
    key: PrivateKey,
    command: &str,
) -> Result<(Vec<u8>, Option<u32>), russh::Error> {
    let stream = io_backend::connect(addr, backend).await?;
    assert_eq!(stream.backend(), backend);
    let config = Arc::new(client::Config::default());
    let mut handle = client::connect_stream(config, stream, Client { host_key }).await?;
    let auth = handle
        .authenticate_publickey("alice", PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await?;
    assert!(auth.success(), "russh client auth refused");
    let mut channel = handle.channel_open_session().await?;
    channel.exec(true, command).await?;
    let (mut output, mut status) = (Vec::new(), None);
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => output.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
        }
    }
    handle
        .disconnect(Disconnect::ByApplication, "done", "en")
        .await?;
    // Wait for the session task, so its stream is dropped on this core
    // while the runtime still runs.
    match handle.await {
        Ok(()) | Err(russh::Error::Disconnect) => Ok((output, status)),
        Err(e) => Err(e),
    }
}
