//! Helper runs with their output collected ([`Running`]), what a started
//! program complained about, and the CPU time of a process tree. The
//! platform's own programs are testkit's.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::procfs;
use testkit::Process;

/// Log lines at warn or error, and panics, for the report.
pub fn complaints(process: &Process) -> Vec<String> {
    process
        .lines()
        .into_iter()
        .filter(|l| {
            l.contains("\"level\":\"warn\"")
                || l.contains("\"level\":\"error\"")
                || l.contains("panicked")
        })
        .collect()
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A helper program running with its output collected.
/// Killed (by its own pid) if dropped unfinished.
pub struct Running {
    what: String,
    child: Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    pub fn spawn(mut cmd: Command, what: &str) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("{what}: {cmd:?}"))?;
        let mut out = child.stdout.take().context("stdout")?;
        let mut err = child.stderr.take().context("stderr")?;
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        Ok(Self {
            what: what.to_owned(),
            child,
            out: Some(out),
            err: Some(err),
        })
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `deadline` (then kills it); returns (status, stdout,
    /// stderr).
    pub fn finish(mut self, deadline: Instant) -> Result<(i32, String, String)> {
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{}: killed at its deadline", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let joined = |t: Option<std::thread::JoinHandle<String>>| {
            t.and_then(|t| t.join().ok()).unwrap_or_default()
        };
        let out = joined(self.out.take());
        let err = joined(self.err.take());
        Ok((status.code().unwrap_or(-1), out, err))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds of `root` and of every process under it, each with its
/// reaped children. sshd's per-connection processes live as long as their
/// sessions: while sessions are held, the master's reaped-children times
/// do not have them yet.
pub fn tree_cpu(root: u32) -> f64 {
    let mut total = 0.0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        total += procfs::cpu(pid).map(|c| c.with_children()).unwrap_or(0.0);
        todo.extend(procfs::children(pid));
    }
    total
}
