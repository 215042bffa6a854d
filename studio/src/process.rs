//! A shell or command running for one session channel: spawning it (with a
//! real pty or with three pipes) and pumping its bytes, signals, size and
//! exit status over the channel until both sides are done.
//!
//! Order on the wire is always: all output, `exit-status` (or
//! `exit-signal`), `eof`, `close`. When the client closes first, the
//! process group gets SIGHUP, then SIGKILL after a grace period, and is
//! reaped either way.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use russh::server::{Handle, Msg};
use russh::{ChannelMsg, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tracing::{debug, info};

use crate::account::Account;
use crate::agent::AgentSocket;

/// How long a process may keep running after its channel closed before
/// SIGHUP becomes SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// How long pty output may keep draining after the shell exits (background
/// jobs can hold the terminal open forever; OpenSSH does not wait for them).
const PTY_DRAIN: Duration = Duration::from_millis(500);
/// Read size for process output; one SSH packet is at most 32 KiB of data.
const CHUNK: usize = 32 * 1024;

/// A `pty-req`: terminal type and size.
#[derive(Debug, Clone)]
pub struct PtyRequest {
    pub term: String,
    size: pty_process::Size,
    /// The client's terminal modes, applied to the new pty.
    modes: Vec<(russh::Pty, u32)>,
}

impl PtyRequest {
    pub fn new(term: &str, cols: u32, rows: u32, modes: &[(russh::Pty, u32)]) -> Self {
        Self {
            term: term.to_owned(),
            size: size(cols, rows),
            modes: modes.to_vec(),
        }
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        self.size = size(cols, rows);
    }
}

fn size(cols: u32, rows: u32) -> pty_process::Size {
    // A zero size is what clients send when they do not know; 80x24 is what
    // terminals assume then.
    let clamp = |v: u32, default: u16| {
        if v == 0 {
            default
        } else {
            v.min(u16::MAX.into()) as u16
        }
    };
    pty_process::Size::new(clamp(rows, 24), clamp(cols, 80))
}

/// The program to run and how.
#[derive(Debug)]
pub struct Spawn {
    program: PathBuf,
    arg0: OsString,
    args: Vec<OsString>,
}

impl Spawn {
    /// The account's login shell, as a login shell (`-bash`).
    pub fn login_shell(account: &Account) -> Self {
        let name = account.shell.file_name().unwrap_or(OsStr::new("sh"));
        let mut arg0 = OsString::from("-");
        arg0.push(name);
        Self {
            program: account.shell.clone(),
            arg0,
            args: Vec::new(),
        }
    }

    /// `shell -c command`, as sshd runs an `exec` request.
    pub fn command(account: &Account, command: &[u8]) -> Self {
        Self {
            program: account.shell.clone(),
            arg0: account
                .shell
                .file_name()
                .unwrap_or(OsStr::new("sh"))
                .to_owned(),
            args: vec!["-c".into(), OsStr::from_bytes(command).to_owned()],
        }
    }
}

/// A started process and the ends of its stdio that we hold.
pub struct RunningProcess {
    child: Child,
    io: Io,
    /// Agent socket whose lifetime is this process's channel.
    pub agent: Option<AgentSocket>,
}

enum Io {
    Pipes {
        stdin: tokio::process::ChildStdin,
        stdout: tokio::process::ChildStdout,
        stderr: tokio::process::ChildStderr,
    },
    Pty(pty_process::Pty),
}

/// Starts `spawn` in `home` with exactly `env`, on a new pty or on pipes.
pub fn spawn(
    spawn: Spawn,
    env: Vec<(OsString, OsString)>,
    home: &Path,
    pty: Option<PtyRequest>,
) -> std::io::Result<RunningProcess> {
    let mut cmd = Command::new(&spawn.program);
    cmd.arg0(&spawn.arg0)
        .args(&spawn.args)
        .env_clear()
        .envs(env)
        .current_dir(home)
        .kill_on_drop(true);

    match pty {
        None => {
            // Its own process group, so signals and hang-up reach the
            // whole pipeline the command starts.
            cmd.process_group(0)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn()?;
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(std::io::Error::other("child stdio was not captured"));
            };
            Ok(RunningProcess {
                child,
                io: Io::Pipes {
                    stdin,
                    stdout,
                    stderr,
                },
                agent: None,
            })
        }
        Some(req) => {
            cmd.env("TERM", &req.term);
            let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
            pty.resize(req.size).map_err(std::io::Error::other)?;
            if let Err(e) = crate::termios::apply(&pty, &req.modes) {
                debug!(error = %e, "could not apply the client's terminal modes");
            }
            // pty-process makes the child a session leader with the pty as
            // its controlling terminal; the slave end is closed here after
            // the spawn, so EOF arrives when the last user of it exits.
            let child = pty_process::Command::from(cmd)
                .spawn(pts)
                .map_err(std::io::Error::other)?;
            Ok(RunningProcess {
                child,
                io: Io::Pty(pty),
                agent: None,
            })
        }
    }
}

/// Pumps a running process over `channel` until it is done; see the module docs.
pub async fn run(channel: russh::Channel<Msg>, running: RunningProcess, handle: Handle) {
    let RunningProcess {
        mut child,
        io,
        agent,
    } = running;
    let id = channel.id();
    let pid = child.id().map(|p| Pid::from_raw(p as i32));
    let (mut rx, tx) = channel.split();
    let tx = Arc::new(tx);

    let is_pty = matches!(io, Io::Pty(_));
    let (mut stdin, outputs): (Option<Stdin>, _) = match io {
        Io::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            let out = tokio::spawn(pump(stdout, tx.clone(), None));
            let err = tokio::spawn(pump(stderr, tx.clone(), Some(1)));
            (Some(Stdin::Pipe(stdin)), Outputs(vec![out, err]))
        }
        Io::Pty(pty) => {
            let (read, write) = pty.into_split();
            let out = tokio::spawn(pump(read, tx.clone(), None));
            (Some(Stdin::Pty(write)), Outputs(vec![out]))
        }
    };
    let pumps: Vec<_> = outputs.0.iter().map(|h| h.abort_handle()).collect();
    let outputs_done = outputs.wait();
    tokio::pin!(outputs_done);

    let mut exit: Option<ExitStatus> = None;
    let mut drained = false;
    let mut client_gone = false;
    // Armed once the process has exited on a pty: do not wait for
    // background jobs holding the terminal.
    let drain_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain_deadline);

    while !(exit.is_some() && drained) {
        tokio::select! {
            msg = rx.wait(), if !client_gone => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    // A pipe closes; a terminal has no half-close (OpenSSH
                    // ignores EOF on a pty too).
                    if !is_pty {
                        stdin = None;
                    }
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    if let Some(Stdin::Pty(w)) = &stdin {
                        let _ = w.resize(size(col_width, row_height));
                    }
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let (Some(pid), Some(sig)) = (pid, to_signal(&signal)) {
                        debug!(?sig, "delivering signal");
                        let _ = killpg(pid, sig);
                    }
                }
                Some(ChannelMsg::Close) | None => client_gone = true,
                Some(_) => {}
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(status.unwrap_or_else(|_| ExitStatus::from_raw(255 << 8)));
                if is_pty {
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + PTY_DRAIN);
                }
            },
            _ = &mut outputs_done, if !drained => drained = true,
            _ = &mut drain_deadline, if !drained => drained = true,
        }
        if client_gone {
            break;
        }
    }

    if client_gone && exit.is_none() {
        hang_up(&mut child, pid).await;
    }
    drop(stdin);
    drop(agent);
    // A pump still running here is stuck on a terminal a background job
    // holds open; it has nothing more to deliver.
    pumps.iter().for_each(|p| p.abort());

    if let (false, Some(status)) = (client_gone, exit) {
        report_exit(&tx, &handle, id, status).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    }
}

/// The writable end of the process's input.
enum Stdin {
    Pipe(tokio::process::ChildStdin),
    Pty(pty_process::OwnedWritePty),
}

impl Stdin {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Pipe(w) => w.write_all(data).await,
            Self::Pty(w) => w.write_all(data).await,
        }
    }
}

/// The output pumps; finished when every one of them reached EOF.
struct Outputs(Vec<tokio::task::JoinHandle<()>>);

impl Outputs {
    async fn wait(self) {
        for h in self.0 {
            let _ = h.await;
        }
    }
}

/// Copies `from` into the channel (stdout, or extended data `ext`) until
/// EOF. The channel's window paces the reads, so a slow client slows the
/// process rather than growing memory here.
async fn pump<R>(mut from: R, tx: Arc<ChannelWriteHalf<Msg>>, ext: Option<u32>)
where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        // A pty reports EIO once the last slave holder exits: that is EOF.
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let chunk = buf.split().freeze();
        let sent = match ext {
            None => tx.data_bytes(chunk).await,
            Some(code) => tx.extended_data_bytes(code, chunk).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn report_exit(
    tx: &ChannelWriteHalf<Msg>,
    handle: &Handle,
    id: russh::ChannelId,
    status: ExitStatus,
) {
    if let Some(code) = status.code() {
        debug!(code, "process exited");
        let _ = tx.exit_status(code as u32).await;
    } else if let Some(signo) = status.signal() {
        debug!(signo, "process killed by signal");
        let _ = handle
            .exit_signal_request(
                id,
                from_signal(signo),
                status.core_dumped(),
                String::new(),
                String::new(),
            )
            .await;
    }
}

/// SIGHUP to the process group, then SIGKILL if it lingers; always reaps.
async fn hang_up(child: &mut Child, pid: Option<Pid>) {
    if let Some(pid) = pid {
        let _ = killpg(pid, Signal::SIGHUP);
        let _ = killpg(pid, Signal::SIGCONT);
    }
    if tokio::time::timeout(HANGUP_GRACE, child.wait())
        .await
        .is_err()
    {
        info!("process ignored SIGHUP after its channel closed; killing it");
        if let Some(pid) = pid {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
}

fn to_signal(sig: &Sig) -> Option<Signal> {
    Some(match sig {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => format!("SIG{name}").parse().ok()?,
    })
}

fn from_signal(signo: i32) -> Sig {
    match Signal::try_from(signo) {
        Ok(Signal::SIGABRT) => Sig::ABRT,
        Ok(Signal::SIGALRM) => Sig::ALRM,
        Ok(Signal::SIGFPE) => Sig::FPE,
        Ok(Signal::SIGHUP) => Sig::HUP,
        Ok(Signal::SIGILL) => Sig::ILL,
        Ok(Signal::SIGINT) => Sig::INT,
        Ok(Signal::SIGKILL) => Sig::KILL,
        Ok(Signal::SIGPIPE) => Sig::PIPE,
        Ok(Signal::SIGQUIT) => Sig::QUIT,
        Ok(Signal::SIGSEGV) => Sig::SEGV,
        Ok(Signal::SIGTERM) => Sig::TERM,
        Ok(Signal::SIGUSR1) => Sig::USR1,
        Ok(other) => Sig::Custom(other.as_str().trim_start_matches("SIG").to_owned()),
        Err(_) => Sig::Custom(signo.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_round_trip() {
        for signo in [1, 2, 3, 9, 15, 10, 12, 28] {
            let sig = from_signal(signo);
            assert_eq!(to_signal(&sig).map(|s| s as i32), Some(signo), "{sig:?}");
        }
    }

    #[test]
    fn zero_pty_size_means_80x24() {
        let s = size(0, 0);
        assert_eq!(
            format!("{s:?}"),
            format!("{:?}", pty_process::Size::new(24, 80))
        );
    }
}
