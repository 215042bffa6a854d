//! Agent forwarding (`auth-agent-req@openssh.com`): a Unix socket in a
//! private directory, named by `SSH_AUTH_SOCK` in the channel's process;
//! each connection to it becomes an `auth-agent@openssh.com` channel back to
//! the client, whose agent answers.
//!
//! One socket per session channel that asked for it, in a directory of its
//! own (mode 0700), the socket itself mode 0600: only the Studio's user can
//! reach it (a container has no narrower principal: every member of a
//! shared session runs as that user, which is why agent forwarding can be
//! turned off with `CONNECT_CLIENT_AGENT_FORWARDING=false`). Socket and
//! directory are removed when the channel's process ends.

use std::os::unix::fs::PermissionsExt;
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
        // Directory 0700 and socket 0600: only this user may reach the
        // agent.
        let dir = tempfile::Builder::new()
            .prefix("connect-agent-")
            .tempdir()?;
        // Explicitly: tempfile's default mode is not 0700 on every version.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
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
