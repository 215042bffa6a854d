//! Harness shared by the integration tests and the benchmarks: everything
//! here drives real programs (`ssh-keygen`, `ssh`, the workspace's own
//! binaries) on 127.0.0.1, never mocks.
//!
//! - [`platform`]: the whole platform (connect-control, connect-client
//!   Studios, connect-proxy) started for a test or a benchmark, and
//!   `connect-proxy --dev`;
//! - [`audit`]: ssh-audit and the pass rule both SSH servers are held to;
//! - [`keys`]: key pairs made by `ssh-keygen`, with the fingerprint it prints;
//! - [`process`]: a started binary whose JSON log lines can be awaited;
//! - [`ssh`]: OpenSSH client command lines with isolated, pinned settings;
//! - [`net`]: an echo server, free ports, waiting for listeners;
//! - [`tmux`]: a real terminal of a given size for pty tests.
#![forbid(unsafe_code)]

pub mod audit;
pub mod keys;
pub mod net;
pub mod platform;
pub mod process;
pub mod ssh;
pub mod tmux;

pub use keys::{KeyPair, KeyType};
pub use platform::{Dev, Platform, ProxyOptions};
pub use process::Process;
pub use ssh::Ssh;
pub use tmux::Tmux;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Where the workspace's binaries are built next to the running test
/// (`target/<profile>/`).
pub fn bin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/test-hash -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

/// The path of a workspace binary built next to the running test (for
/// tests that start another package's program, e.g. connect-control from
/// connect-client's tests). `cargo test --workspace` builds them all.
pub fn bin(name: &str) -> std::path::PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo nextest run --workspace` (or build it first)",
        path.display()
    );
    path
}

/// Runs a shell snippet with `sh -c` and returns its stdout; panics with
/// stderr on failure. For test set-up only.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lowercase hex SHA-256 of a file, via `sha256sum`.
pub fn sha256(path: &Path) -> String {
    let out = sh(&format!("sha256sum '{}'", path.display()));
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Runs `cmd` with stdin from /dev/null and returns its output.
pub fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run command")
}

/// [`run`], asserting success; returns stdout.
pub fn run_ok(cmd: Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic, incompressible test bytes (xorshift64 from `seed`), so a
/// transfer can be checked byte for byte without storing a copy.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
