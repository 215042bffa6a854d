//! Listening sockets: one `SO_REUSEPORT` listener per core, so the kernel
//! spreads connections over the cores, and the per-core [`Acceptor`].

use std::io;
use std::net::{Shutdown, SocketAddr};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::{IoBackend, Stream};
use crate::uring_stream::UringStream;

/// Listen queue length per core.
const BACKLOG: i32 = 4096;

/// A non-blocking listener on `addr` with `SO_REUSEADDR` and
/// `SO_REUSEPORT`: every core binds its own on the same address.
///
/// With port 0 each call gets a different port: bind the first, read its
/// `local_addr`, and bind the others to that. Any other process bound to
/// the same port with `SO_REUSEPORT` (a stale instance) would silently
/// receive a share of the connections: check [`ensure_unused`] first.
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Fails with `AddrInUse` if anything listens on `addr` already, including
/// a socket with `SO_REUSEPORT` that [`reuseport_listener`] would quietly
/// join: this probe does not ask for port sharing, so the kernel refuses it.
pub fn ensure_unused(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Connections of a previous run in TIME_WAIT do not count.
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

/// A core's listener. Accepted streams have `TCP_NODELAY` set.
///
/// Dropping it stops listening at once (it shuts the socket down, which
/// takes it out of its `SO_REUSEPORT` group), even while an accept is in
/// flight: the other cores, or the next process, get the new connections.
pub enum Acceptor {
    Uring {
        listener: tokio_uring::net::TcpListener,
        /// A duplicate of the listener's fd, to shut it down on drop: a
        /// tokio-uring accept in flight keeps the socket listening otherwise.
        control: std::net::TcpListener,
    },
    Epoll(tokio::net::TcpListener),
}

impl Acceptor {
    /// Takes over `listener` (e.g. from [`reuseport_listener`]). Must be
    /// called inside [`run_core`](super::run_core) of the same `backend`.
    pub fn new(listener: std::net::TcpListener, backend: IoBackend) -> io::Result<Self> {
        match backend {
            IoBackend::Uring => {
                // io_uring waits for readiness itself; kernels before 5.11
                // fail accepts on non-blocking sockets with EAGAIN.
                listener.set_nonblocking(false)?;
                let control = listener.try_clone()?;
                Ok(Acceptor::Uring {
                    listener: tokio_uring::net::TcpListener::from_std(listener),
                    control,
                })
            }
            IoBackend::Epoll => {
                listener.set_nonblocking(true)?;
                Ok(Acceptor::Epoll(tokio::net::TcpListener::from_std(
                    listener,
                )?))
            }
        }
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Acceptor::Uring { listener, .. } => {
                let (socket, peer) = listener.accept().await?;
                socket.set_nodelay(true)?;
                let stream = UringStream::new(socket);
                let _ = stream.set_keepalive(&super::stream::keepalive());
                Ok((Stream::Uring(stream), peer))
            }
            Acceptor::Epoll(listener) => {
                let (socket, peer) = listener.accept().await?;
                super::tune(&socket);
                Ok((Stream::Epoll(socket), peer))
            }
        }
    }

    /// The address this acceptor listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Acceptor::Uring { control, .. } => control.local_addr(),
            Acceptor::Epoll(listener) => listener.local_addr(),
        }
    }

    /// The backend this acceptor runs on.
    pub fn backend(&self) -> IoBackend {
        match self {
            Acceptor::Uring { .. } => IoBackend::Uring,
            Acceptor::Epoll(_) => IoBackend::Epoll,
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        if let Acceptor::Uring { control, .. } = self {
            // On Linux, shutting down a listening socket stops it listening
            // and fails accepts in flight; the fd closes when they complete.
            let _ = SockRef::from(&*control).shutdown(Shutdown::Read);
        }
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("backend", &self.backend())
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}
