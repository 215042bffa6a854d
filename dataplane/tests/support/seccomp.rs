//! Running code as if under Docker's default seccomp profile: a filter that
//! answers `io_uring_setup`, `io_uring_enter` and `io_uring_register` with
//! `EPERM` and allows everything else.
//!
//! Two ways to use it:
//!
//! - in-process: [`deny_io_uring`] installs the filter on every thread of
//!   the calling process (irreversibly: call it in a child process);
//! - another program: [`command_without_io_uring`] builds a `Command` that
//!   re-executes the running test binary, which installs the filter and
//!   `exec`s the program (the filter survives `exec`). The test binary must
//!   contain the entry test:
//!
//!   ```ignore
//!   #[path = "support/seccomp.rs"]
//!   mod seccomp;
//!
//!   #[test]
//!   fn deny_io_uring_exec() {
//!       seccomp::exec_if_requested();
//!   }
//!   ```
//!
//!   The program inherits stdin/stderr/env as usual; its stdout starts with
//!   the test harness's "running 1 test" line, printed before the `exec`.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::process::Command;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The name of the entry test that [`command_without_io_uring`] runs.
pub const EXEC_TEST: &str = "deny_io_uring_exec";
/// Carries the program and its arguments, as a JSON array, to the entry test.
pub const EXEC_ENV: &str = "CONNECT_TEST_DENY_IO_URING_EXEC";

/// Installs the filter on all threads of this process (and on whatever it
/// `exec`s): io_uring syscalls fail with `EPERM`, like in a container.
pub fn deny_io_uring() -> Result<(), String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("{e:?}"))?;
    let rules = [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ]
    .into_iter()
    .map(|nr| (nr, vec![]))
    .collect::<BTreeMap<_, _>>();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e| format!("seccomp compile: {e:?}"))?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("seccomp install: {e}"))
}

/// `program args...` run under the filter, through the running test
/// binary's [`EXEC_TEST`] entry (see the module docs).
pub fn command_without_io_uring<S: AsRef<OsStr>>(program: S, args: &[S]) -> Command {
    let argv: Vec<String> = std::iter::once(&program)
        .chain(args)
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        EXEC_TEST,
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ])
    .env(
        EXEC_ENV,
        serde_json::to_string(&argv).expect("argv as JSON"),
    );
    cmd
}

/// The body of the [`EXEC_TEST`] entry: does nothing unless [`EXEC_ENV`]
/// is set; then installs the filter and `exec`s the program (on success it
/// never returns).
pub fn exec_if_requested() {
    let Ok(json) = std::env::var(EXEC_ENV) else {
        return;
    };
    let argv: Vec<String> = serde_json::from_str(&json).expect("EXEC_ENV is a JSON array");
    let (program, args) = argv.split_first().expect("EXEC_ENV names a program");
    deny_io_uring().expect("install seccomp filter");
    let err = Command::new(program).args(args).env_remove(EXEC_ENV).exec();
    panic!("exec {program}: {err}");
}
