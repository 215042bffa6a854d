//! Session channels: what happens between `channel-open session` and the
//! moment a shell, command or subsystem starts, and who owns what.
//!
//! russh delivers each channel request twice: as a `Handler` callback and as
//! a `ChannelMsg` on the channel. The split here keeps one owner per job:
//!
//! - the handler side ([`SessionSetup`]) decides every request and sends the
//!   one reply, in order; it collects `pty-req`, `env` and
//!   `auth-agent-req@openssh.com` and spawns the process on `shell`/`exec`;
//! - the channel task ([`run`]) owns the channel's bytes and lifetime. It
//!   drains the channel from the moment it opens (so early requests can never
//!   fill russh's bounded queue and stall the connection), and when it sees a
//!   start request it waits for the handler's verdict on `starts` before
//!   reading further. Data the client sends right after `exec` therefore
//!   reaches the process, never a void (scp and rsync send immediately).

use std::ffi::OsString;
use std::sync::Arc;

use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::agent::AgentSocket;
use crate::handler::OpenGuard;
use crate::process::{self, PtyRequest, RunningProcess, Spawn};
use crate::server::Shared;

/// Most `env` requests one channel may make; OpenSSH sends a handful.
const MAX_ENV: usize = 256;
/// Longest `env` name plus value we accept.
const MAX_ENV_BYTES: usize = 64 * 1024;

/// The handler's verdict on a start request, for the channel task.
pub enum Start {
    Process(Box<RunningProcess>),
    Sftp,
    Refused,
}

/// What the client asked to start.
#[derive(Debug)]
pub enum StartRequest<'a> {
    Shell,
    Exec(&'a [u8]),
    Subsystem(&'a str),
}

/// Handler-side state of one session channel.
pub struct SessionSetup {
    starts: mpsc::UnboundedSender<Start>,
    pty: Option<PtyRequest>,
    env: Vec<(OsString, OsString)>,
    agent: bool,
    /// Invariant: once true, no further start request is accepted and no
    /// further verdict is sent (the channel task stops listening for them).
    started: bool,
}

impl SessionSetup {
    /// Spawns the channel task (which holds `guard` until it ends) and
    /// returns the handler's half.
    pub fn open(
        channel: Channel<Msg>,
        shared: Arc<Shared>,
        handle: Handle,
        guard: OpenGuard,
    ) -> Self {
        let (starts, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            run(channel, rx, shared, handle).await;
            drop(guard);
        });
        Self {
            starts,
            pty: None,
            env: Vec::new(),
            agent: false,
            started: false,
        }
    }

    pub fn pty(&mut self, req: PtyRequest) -> bool {
        if self.started || self.pty.is_some() {
            return false;
        }
        self.pty = Some(req);
        true
    }

    pub fn env(&mut self, name: &str, value: &str) -> bool {
        let valid = !name.is_empty()
            && !name.contains(['=', '\0'])
            && !value.contains('\0')
            && name.len() + value.len() <= MAX_ENV_BYTES;
        if self.started || !valid || self.env.len() >= MAX_ENV {
            return false;
        }
        self.env.push((name.into(), value.into()));
        true
    }

    pub fn agent(&mut self) -> bool {
        if self.started {
            return false;
        }
        self.agent = true;
        true
    }

    /// `window-change` before the process exists updates the size it will get.
    pub fn window_change(&mut self, cols: u32, rows: u32) {
        if let (false, Some(pty)) = (self.started, self.pty.as_mut()) {
            pty.resize(cols, rows);
        }
    }

    /// Decides a start request. Returns whether it succeeded; the channel
    /// task always gets the matching verdict.
    pub fn start(
        &mut self,
        req: StartRequest<'_>,
        shared: &Shared,
        connection_env: &[(OsString, OsString)],
        handle: &Handle,
    ) -> bool {
        if self.started {
            return false;
        }
        let verdict = self.verdict(req, shared, connection_env, handle);
        let ok = !matches!(verdict, Start::Refused);
        self.started = ok;
        // The channel task may already be gone (connection dropping); then
        // the verdict has no one to act on it.
        let _ = self.starts.send(verdict);
        ok
    }

    fn verdict(
        &mut self,
        req: StartRequest<'_>,
        shared: &Shared,
        connection_env: &[(OsString, OsString)],
        handle: &Handle,
    ) -> Start {
        let account = &shared.account;
        let spawn = match req {
            StartRequest::Subsystem("sftp") => {
                info!(subsystem = "sftp", "starting subsystem");
                return Start::Sftp;
            }
            StartRequest::Subsystem(other) => {
                info!(subsystem = other, "refused unknown subsystem");
                return Start::Refused;
            }
            StartRequest::Shell => Spawn::login_shell(account),
            StartRequest::Exec(command) => Spawn::command(account, command),
        };

        let agent = if self.agent {
            match AgentSocket::listen(handle.clone()) {
                Ok(sock) => Some(sock),
                Err(e) => {
                    info!(error = %e, "agent forwarding unavailable for this channel");
                    None
                }
            }
        } else {
            None
        };
        let mut env = account.base_env.clone();
        if let Some(sock) = &agent {
            env.push(("SSH_AUTH_SOCK".into(), sock.path().into()));
        }
        env.extend(connection_env.iter().cloned());
        env.append(&mut self.env);

        match process::spawn(spawn, env, &account.home, self.pty.take()) {
            Ok(mut running) => {
                running.agent = agent;
                Start::Process(Box::new(running))
            }
            Err(e) => {
                info!(error = %e, "could not start process");
                Start::Refused
            }
        }
    }
}

/// Buffer between the channel and the SFTP server, each way.
const SFTP_PIPE: usize = 256 * 1024;

/// Runs the built-in SFTP server on the channel, through an in-memory pipe
/// so the channel stays ours: when the server ends, the client gets
/// `exit-status 0` before the close, which scp and sftp check.
async fn run_sftp(channel: Channel<Msg>, shared: &Shared) {
    let (ours, theirs) = tokio::io::duplex(SFTP_PIPE);
    let server = tokio::spawn(crate::sftp::serve(theirs, shared.account.home.clone()));
    crate::relay::relay_until(channel, ours, crate::relay::StreamEnd::ExitStatus).await;
    server.abort();
}

/// The channel task: drains requests until something starts, then runs it.
async fn run(
    mut channel: Channel<Msg>,
    mut starts: mpsc::UnboundedReceiver<Start>,
    shared: Arc<Shared>,
    handle: Handle,
) {
    loop {
        match channel.wait().await {
            None | Some(ChannelMsg::Close) => return,
            Some(
                ChannelMsg::Exec { .. }
                | ChannelMsg::RequestShell { .. }
                | ChannelMsg::RequestSubsystem { .. },
            ) => match starts.recv().await {
                Some(Start::Process(running)) => {
                    return process::run(channel, *running, handle).await;
                }
                Some(Start::Sftp) => return run_sftp(channel, &shared).await,
                Some(Start::Refused) => {}
                None => return,
            },
            // Data sent before anything started has nowhere to go.
            Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. }) => {
                debug!("data before start discarded");
            }
            // Requests the handler has already answered.
            Some(_) => {}
        }
    }
}
