//! `connect-proxy --dev`: the embedded control plane, a proxy and a demo
//! Studio in one process, in a `TMPDIR` of its own, and the addresses it
//! printed for a person to use.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::hermetic;
use crate::Process;

/// How long `--dev` may take to print its ssh line.
const PRINTED: Duration = Duration::from_secs(60);

/// A running `connect-proxy --dev`, killed on drop.
pub struct Dev {
    pub process: Process,
    /// Its `TMPDIR`.
    tmp: tempfile::TempDir,
    /// Where it keeps its keys, `known_hosts` and admin token
    /// (`$TMPDIR/connect-dev-<uid>`).
    pub dir: PathBuf,
    /// The proxy's SSH address as printed, `127.0.0.1:PORT`.
    pub ssh_addr: String,
    /// The management URL as printed.
    pub management: String,
    /// The control plane's URL as printed.
    pub control_url: String,
    /// The `ssh ...` line it prints to be pasted.
    pub ssh_line: String,
}

impl Dev {
    /// Starts it and waits for what it prints (its last line is the ssh
    /// line); panics with its stderr if that does not come.
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cmd = command_in(tmp.path());
        cmd.stdout(Stdio::piped());
        let mut process = Process::spawn(cmd);
        let stdout = process.take_stdout().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut printed = Vec::new();
        let ssh_line = loop {
            let line = rx.recv_timeout(PRINTED).unwrap_or_else(|_| {
                panic!(
                    "connect-proxy --dev printed no ssh line within {PRINTED:?}; stdout:\n{}\nstderr:\n{}",
                    printed.join("\n"),
                    process.lines().join("\n")
                )
            });
            if line.starts_with("ssh ") {
                break line;
            }
            printed.push(line);
        };
        // "  proxy          ADDR (management URL)", "  control plane  URL (...)",
        // "  demo Studio    session S, user U, key PATH".
        let words = |prefix: &str| -> Vec<String> {
            printed
                .iter()
                .find_map(|l| l.trim_start().strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} line in {printed:?}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let proxy = words("proxy ");
        let management = match proxy.get(1..3) {
            Some([label, url]) if label == "(management" => url.trim_end_matches(')').to_owned(),
            _ => panic!("the management address is not printed: {proxy:?}"),
        };
        let demo_key = words("demo Studio ").pop().expect("the demo key");
        Self {
            process,
            dir: Path::new(&demo_key).parent().expect("key dir").to_owned(),
            tmp,
            ssh_addr: proxy[0].clone(),
            management,
            control_url: words("control plane ")[0].clone(),
            ssh_line,
        }
    }

    /// Another `connect-proxy --dev` in the same `TMPDIR`, not started.
    pub fn command(&self) -> Command {
        command_in(self.tmp.path())
    }

    /// The demo user's key.
    pub fn demo_key(&self) -> PathBuf {
        self.dir.join("demo_key")
    }

    /// The file holding the admin token.
    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.join("admin_token")
    }
}

/// `connect-proxy --dev` with `TMPDIR` and any free ports.
fn command_in(tmp: &Path) -> Command {
    let mut cmd = hermetic(Command::new(crate::bin("connect-proxy")));
    cmd.arg("--dev")
        .env("TMPDIR", tmp)
        .env("CONNECT_SSH_ADDR", "127.0.0.1:0")
        .env("CONNECT_MANAGEMENT_PORT", "0");
    cmd
}
