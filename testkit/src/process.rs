//! A started binary under test, whose JSON log lines can be awaited and
//! asserted on. Its log is kept in memory (stderr, line by line: tests) or
//! in a file (stdout and stderr: long benchmark runs, where a reader in
//! this process would compete with the programs measured). Killed and
//! reaped on drop.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Lines of log a [`NotReady`] shows, the last ones.
const TAIL: usize = 50;

pub struct Process {
    /// The program's file name (or the log file's stem), for messages.
    name: String,
    child: Child,
    log: Log,
}

enum Log {
    /// Stderr lines as they come; the condvar is notified on each.
    Memory(Arc<(Mutex<Vec<String>>, Condvar)>),
    /// Everything the program writes, read back on demand.
    File(PathBuf),
}

/// A program that did not log what was awaited: it exited first, or did
/// not say it in time.
#[derive(Debug)]
pub struct NotReady {
    pub what: String,
    /// The last lines it logged.
    pub tail: Vec<String>,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; its last lines:\n{}",
            self.what,
            self.tail.join("\n")
        )
    }
}

impl std::error::Error for NotReady {}

impl Process {
    /// Starts `cmd` with stderr kept in memory (stdout is inherited unless
    /// `cmd` says otherwise; see [`Process::take_stdout`]).
    pub fn spawn(mut cmd: Command) -> Self {
        let name = program_name(&cmd);
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stderr = child.stderr.take().expect("stderr piped");
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TESTKIT_ECHO").is_some() {
                    eprintln!("| {line}");
                }
                let (lock, cv) = &*sink;
                lock.lock().expect("lines lock").push(line);
                cv.notify_all();
            }
        });
        Self {
            name,
            child,
            log: Log::Memory(lines),
        }
    }

    /// Starts `cmd` with stdout and stderr written to `log` (replaced if
    /// it exists).
    pub fn spawn_logged(mut cmd: Command, log: &Path) -> Self {
        let name = log
            .file_stem()
            .map_or_else(|| program_name(&cmd), |s| s.to_string_lossy().into_owned());
        let file = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self {
            name,
            child,
            log: Log::File(log.to_owned()),
        }
    }

    /// Every line logged so far.
    pub fn lines(&self) -> Vec<String> {
        match &self.log {
            Log::Memory(lines) => lines.0.lock().expect("lines lock").clone(),
            Log::File(path) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Logged lines that parse as JSON objects.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a JSON log line whose `msg` is `msg`; panics after `timeout`
    /// with what was logged.
    pub fn wait_for_msg(&mut self, msg: &str, timeout: Duration) -> serde_json::Value {
        self.ready(msg, timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for a JSON log line whose `msg` is `msg`: the line, or why it
    /// did not come (for callers that carry on when a program fails).
    pub fn ready(&mut self, msg: &str, timeout: Duration) -> Result<serde_json::Value, NotReady> {
        if let Some(line) = self.wait_for(|v| v["msg"] == msg, timeout) {
            return Ok(line);
        }
        let what = match self.child.try_wait() {
            Ok(Some(status)) => format!("{} exited ({status}) before logging {msg:?}", self.name),
            _ => format!("{} logged no {msg:?} within {timeout:?}", self.name),
        };
        let lines = self.lines();
        let tail = lines[lines.len().saturating_sub(TAIL)..].to_vec();
        Err(NotReady { what, tail })
    }

    /// Waits for a JSON log line matching `pred`; `None` on timeout or exit.
    pub fn wait_for(
        &mut self,
        pred: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            let (found, total) = self.scan(seen, &pred);
            if found.is_some() {
                return found;
            }
            seen = total;
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if !self.more_lines(seen, (deadline - now).min(Duration::from_millis(100)))
                && matches!(self.child.try_wait(), Ok(Some(_)))
            {
                // Exited: give a reader thread a moment to catch up.
                std::thread::sleep(Duration::from_millis(50));
                if self.scan(seen, &pred).1 == seen {
                    return None;
                }
            }
        }
    }

    /// The first JSON line from line `from` on that matches `pred`, and
    /// how many lines there are.
    fn scan(
        &self,
        from: usize,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> (Option<serde_json::Value>, usize) {
        let matches = |line: &str| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .filter(&pred)
        };
        match &self.log {
            Log::Memory(lines) => {
                let lines = lines.0.lock().expect("lines lock");
                let found = lines.iter().skip(from).find_map(|l| matches(l));
                (found, lines.len())
            }
            Log::File(path) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let found = text.lines().skip(from).find_map(matches);
                (found, text.lines().count())
            }
        }
    }

    /// Waits up to `wait` for more than `seen` lines; whether there are.
    fn more_lines(&self, seen: usize, wait: Duration) -> bool {
        match &self.log {
            Log::Memory(lines) => {
                let (lock, cv) = &**lines;
                let guard = lock.lock().expect("lines lock");
                cv.wait_timeout_while(guard, wait, |l| l.len() == seen)
                    .expect("lines lock")
                    .0
                    .len()
                    > seen
            }
            Log::File(_) => {
                std::thread::sleep(wait.min(Duration::from_millis(50)));
                self.lines().len() > seen
            }
        }
    }

    /// The program's stdout, if `cmd` had it piped (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits for exit and returns the code (`None` if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks it to stop (SIGTERM), SIGKILLs it after `grace`, and reaps it.
    /// Returns how it had exited if it had already exited by itself.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn program_name(cmd: &Command) -> String {
    Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned()
}
