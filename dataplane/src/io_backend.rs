//! Which I/O backend a core runs on, and running a core's runtime.
//!
//! Each core thread runs one single-threaded runtime: tokio-uring where the
//! kernel allows io_uring, otherwise a tokio current-thread runtime (epoll).
//! Container runtimes often forbid io_uring (Docker's and containerd's
//! default seccomp profiles answer `io_uring_setup` with `EPERM`), so the
//! choice is made once at start-up by [`choose`], from `CONNECT_IO`
//! ([`IoChoice`]) and a [`probe`] of the kernel.
//!
//! Code above this module is the same for both backends: it accepts with an
//! [`Acceptor`], connects upstream with [`connect`], and gets a [`Stream`]
//! either way, which the transport splits into halves
//! ([`crate::ssh::io::Split`]).
//!
//! - [`probe`]: can this process use io_uring, and if not, why;
//! - [`listener`]: `SO_REUSEPORT` listeners and the per-core [`Acceptor`];
//! - [`stream`]: the [`Stream`] enum and upstream [`connect`].
//!
//! # Shutting a core down
//!
//! [`run_core`] returns when the future returned by its closure completes.
//! To drain, that future stops accepting (drops its [`Acceptor`], which
//! also takes the socket out of the `SO_REUSEPORT` group) and then waits
//! for the session tasks it spawned (keep their `JoinHandle`s or a
//! counter). Tasks still alive when it returns are dropped with the
//! runtime: their connections are cut without a goodbye (peers see EOF),
//! which is safe but abrupt. What must never happen on io_uring is a
//! [`Stream`] outliving its core's runtime (sent out through a channel,
//! kept in a `static` or `thread_local`): dropping it then panics inside
//! tokio-uring ("Not in runtime context") if a read is in flight.

mod listener;
mod probe;
mod stream;

pub use listener::{Acceptor, ensure_unused, reuseport_listener};
pub use probe::{ProbeError, probe};
pub use stream::{Stream, connect, tune};

use std::fmt;
use std::future::Future;
use std::io;
use std::str::FromStr;

/// The I/O backend a core runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoBackend {
    /// tokio-uring: io_uring completions, owned buffers.
    Uring,
    /// tokio current-thread runtime: epoll readiness.
    Epoll,
}

impl IoBackend {
    /// The name used in logs and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            IoBackend::Uring => "io_uring",
            IoBackend::Epoll => "epoll",
        }
    }
}

impl fmt::Display for IoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `CONNECT_IO` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoChoice {
    /// io_uring if the kernel allows it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring or fail to start.
    Uring,
    /// epoll even where io_uring works.
    Epoll,
}

/// A `CONNECT_IO` value that is not `auto`, `uring` or `epoll`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown I/O backend {0:?}: expected auto, uring or epoll")]
pub struct UnknownIoChoice(pub String);

impl FromStr for IoChoice {
    type Err = UnknownIoChoice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(IoChoice::Auto),
            "uring" => Ok(IoChoice::Uring),
            "epoll" => Ok(IoChoice::Epoll),
            other => Err(UnknownIoChoice(other.to_owned())),
        }
    }
}

/// Picks the backend for `choice`. With [`IoChoice::Auto`], falls back to
/// epoll when io_uring is unavailable and returns the reason (to be
/// logged); a forced [`IoChoice::Uring`] that is unavailable is an error
/// carrying the reason.
pub fn choose(choice: IoChoice) -> Result<(IoBackend, Option<String>), String> {
    match choice {
        IoChoice::Epoll => Ok((IoBackend::Epoll, None)),
        IoChoice::Uring => match probe() {
            Ok(()) => Ok((IoBackend::Uring, None)),
            Err(e) => Err(format!(
                "CONNECT_IO=uring, but io_uring is unavailable: {e}"
            )),
        },
        IoChoice::Auto => match probe() {
            Ok(()) => Ok((IoBackend::Uring, None)),
            Err(e) => Ok((IoBackend::Epoll, Some(e.to_string()))),
        },
    }
}

/// Runs one core: builds a single-threaded runtime of `backend` on the
/// calling thread and runs `f()` to completion on it.
///
/// Inside, `tokio::spawn` and `tokio::task::spawn_local` both run tasks on
/// this thread (connections are spawned locally: io_uring sockets are not
/// `Send`). Returns an
/// error if the runtime can't be built (e.g. io_uring refused). See the
/// module docs for how `f`'s future must end.
pub fn run_core<F, Fut>(backend: IoBackend, f: F) -> io::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    match backend {
        IoBackend::Uring => {
            let runtime = tokio_uring::Runtime::new(&tokio_uring::builder())?;
            runtime.block_on(async move { f().await });
        }
        IoBackend::Epoll => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move { f().await });
        }
    }
    Ok(())
}
