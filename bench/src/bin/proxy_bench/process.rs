//! Child processes the driver starts: long-running ones with a log file
//! ([`Proc`]) and helper runs with their output collected ([`Running`]),
//! and the CPU time of a process tree.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::procfs;
use serde_json::Value;

/// How long a started process may take to log that it is ready.
pub const START: Duration = Duration::from_secs(30);

/// A child process we started, killed (by its own pid) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the JSON log line with this `msg`.
    pub fn wait_msg(&mut self, msg: &str) -> Result<Value> {
        let deadline = Instant::now() + START;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line)
                    && v["msg"] == msg
                {
                    return Ok(v);
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before {msg:?}; log:\n{}",
                    self.name,
                    tail(&text, 20)
                );
            }
            if Instant::now() > deadline {
                bail!("{}: no {msg:?} in {START:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Log lines at warn or error, and panics, for the report.
    pub fn complaints(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.contains("\"level\":\"warn\"")
                    || l.contains("\"level\":\"error\"")
                    || l.contains("panicked")
            })
            .map(str::to_owned)
            .collect()
    }

    pub fn stop(mut self) -> Result<Option<i32>> {
        let exited = self.child.try_wait()?;
        if exited.is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.wait();
        Ok(exited.and_then(|s| s.code()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
