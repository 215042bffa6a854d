//! Can this process use io_uring? Asked once at start-up, before any core
//! builds a runtime (tokio-uring's own start panics when io_uring is
//! refused).

use std::io;

use io_uring::{IoUring, opcode, register::Probe};

/// Why io_uring can't be used here.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "io_uring_setup is blocked by a seccomp filter (EPERM), as in Docker's and \
         containerd's default profiles; allow io_uring_setup, io_uring_enter and \
         io_uring_register in the profile to use io_uring"
    )]
    Seccomp,
    #[error("io_uring is disabled by sysctl kernel.io_uring_disabled={0} (io_uring_setup: EPERM)")]
    DisabledBySysctl(String),
    #[error(
        "io_uring_setup was refused with EPERM (no seccomp filter or \
         kernel.io_uring_disabled found; a security module?)"
    )]
    PermissionDenied,
    #[error(
        "io_uring is not available (ENOSYS): the kernel is older than 5.1 or built \
         without it, or a seccomp profile answers ENOSYS"
    )]
    NotSupported,
    #[error(
        "io_uring ring memory exceeds the locked-memory limit (ENOMEM); raise \
         RLIMIT_MEMLOCK (kernels before 5.12 charge rings to it)"
    )]
    MemLock,
    #[error("the kernel's io_uring lacks operations tokio-uring needs: {0}")]
    MissingOps(String),
    #[error("io_uring {step} failed: {source}")]
    Other {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The operations tokio-uring issues for TCP sockets.
const NEEDED: [(u8, &str); 6] = [
    (opcode::Accept::CODE, "accept"),
    (opcode::Read::CODE, "read"),
    (opcode::Write::CODE, "write"),
    (opcode::Connect::CODE, "connect"),
    (opcode::Close::CODE, "close"),
    (opcode::AsyncCancel::CODE, "async_cancel"),
];

/// Checks that io_uring works for this process: a ring can be set up
/// (`io_uring_setup`), probed for the operations we use
/// (`io_uring_register`) and entered (`io_uring_enter`).
pub fn probe() -> Result<(), ProbeError> {
    let ring = IoUring::new(8).map_err(setup_error)?;
    let mut ops = Probe::new();
    ring.submitter()
        .register_probe(&mut ops)
        .map_err(|e| step_error("io_uring_register", e))?;
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(code, _)| !ops.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(ProbeError::MissingOps(missing.join(", ")));
    }
    ring.submit().map_err(|e| step_error("io_uring_enter", e))?;
    Ok(())
}

fn setup_error(e: io::Error) -> ProbeError {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            if let Some(value) = io_uring_disabled() {
                ProbeError::DisabledBySysctl(value)
            } else if seccomp_filtered() {
                ProbeError::Seccomp
            } else {
                ProbeError::PermissionDenied
            }
        }
        Some(libc::ENOSYS) => ProbeError::NotSupported,
        Some(libc::ENOMEM) => ProbeError::MemLock,
        _ => step_error("io_uring_setup", e),
    }
}

/// A later step refused with EPERM/ENOSYS is a seccomp filter too.
fn step_error(step: &'static str, e: io::Error) -> ProbeError {
    match e.raw_os_error() {
        Some(libc::EPERM) if seccomp_filtered() => ProbeError::Seccomp,
        _ => ProbeError::Other { step, source: e },
    }
}

/// `kernel.io_uring_disabled` when it is set (1 or 2), else `None`.
fn io_uring_disabled() -> Option<String> {
    let value = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?;
    let value = value.trim();
    (value != "0").then(|| value.to_owned())
}

/// Whether this thread runs under a seccomp filter (`Seccomp: 2`).
fn seccomp_filtered() -> bool {
    std::fs::read_to_string("/proc/thread-self/status")
        .or_else(|_| std::fs::read_to_string("/proc/self/status"))
        .map(|status| {
            status
                .lines()
                .any(|l| l.starts_with("Seccomp:") && l.split_whitespace().nth(1) == Some("2"))
        })
        .unwrap_or(false)
}
