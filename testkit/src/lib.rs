//! Test harness shared by the integration tests: everything here drives
//! real programs (`ssh-keygen`, `ssh`, the workspace's own binaries) on
//! 127.0.0.1, never mocks.
//!
//! - [`keys`]: key pairs made by `ssh-keygen`, with the fingerprint it prints;
//! - [`process`]: a started binary whose JSON log lines can be awaited;
//! - [`ssh`]: OpenSSH client command lines with isolated, pinned settings.
#![forbid(unsafe_code)]

pub mod keys;
pub mod process;
pub mod ssh;

pub use keys::{KeyPair, KeyType};
pub use process::Process;
pub use ssh::Ssh;

use std::path::Path;
use std::process::Command;

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
