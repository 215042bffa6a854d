//! Agent forwarding (`auth-agent-req@openssh.com`): a Unix socket in a
//! private directory, named by `SSH_AUTH_SOCK` in the channel's process;
//! each connection to it becomes an `auth-agent@openssh.com` channel back to
//! the client, whose agent answers.

use std::path::{Path, PathBuf};

use russh::server::Handle;
use tokio::net::UnixListener;
use tracing::debug;

use crate::relay::relay;

/// The listening socket; removed, with its directory, when dropped.
pub struct AgentSocket {
    path: PathBuf,
    accept: tokio::task::JoinHandle<()>,
    // Dropped after the accept task is aborted: removes the directory.
    _dir: tempfile::TempDir,
}

impl AgentSocket {
    /// Listens on a fresh socket; connections are relayed over `handle`.
    pub fn listen(handle: Handle) -> std::io::Result<Self> {
        // tempfile creates the directory with mode 0700: only this user
        // may reach the agent.
        let dir = tempfile::Builder::new()
            .prefix("connect-agent-")
            .tempdir()?;
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path)?;
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handle = handle.clone();
                tokio::spawn(async move {
                    match handle.channel_open_agent().await {
                        Ok(channel) => relay(channel, stream).await,
                        Err(e) => debug!(error = %e, "client refused an agent channel"),
                    }
                });
            }
        });
        Ok(Self {
            path,
            accept,
            _dir: dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
