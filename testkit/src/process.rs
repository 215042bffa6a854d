//! A started binary under test: its stderr is collected line by line so a
//! test can wait for a JSON log line (e.g. "listening", with the bound
//! address) and assert on what was logged. Killed and reaped on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub struct Process {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Process {
    /// Starts `cmd` with stderr captured (stdout is inherited).
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn binary under test");
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
        Self { child, lines }
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().expect("lines lock").clone()
    }

    /// Stderr lines that parse as JSON objects.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a JSON log line whose `msg` is `msg`; panics after `timeout`
    /// with everything logged so far.
    pub fn wait_for_msg(&mut self, msg: &str, timeout: Duration) -> serde_json::Value {
        self.wait_for(|v| v["msg"] == msg, timeout)
            .unwrap_or_else(|| {
                panic!(
                    "no log line {msg:?} within {timeout:?}; stderr:\n{}",
                    self.lines().join("\n")
                )
            })
    }

    /// Waits for a JSON log line matching `pred`; `None` on timeout or exit.
    pub fn wait_for(
        &mut self,
        pred: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.lines;
        let mut seen = 0;
        let mut guard = lock.lock().expect("lines lock");
        loop {
            for line in &guard[seen..] {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                    && pred(&v)
                {
                    return Some(v);
                }
            }
            seen = guard.len();
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = cv
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(100)))
                .expect("lines lock")
                .0;
            if seen == guard.len() && matches!(self.child.try_wait(), Ok(Some(_))) {
                // Exited: give the reader thread a moment to flush.
                drop(guard);
                std::thread::sleep(Duration::from_millis(50));
                guard = lock.lock().expect("lines lock");
                if seen == guard.len() {
                    return None;
                }
            }
        }
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
                "process still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
