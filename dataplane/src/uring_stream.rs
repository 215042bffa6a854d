//! A tokio-uring TCP socket, and its halves for a leg's transport.
//!
//! [`UringStream`] is an accepted or connected socket on an io_uring core,
//! until the transport splits it ([`UringStream::into_native`]) into
//! [`native::UringRead`] and [`native::UringWrite`]. Those lend the
//! transport's own buffers to the kernel while an operation is in flight
//! (see [`crate::ssh::io`]): a receive lands in the buffer packets are
//! opened in, and a write leaves from the buffer packets were sealed in.
//!
//! Memory per idle connection: the one receive that is always posted holds
//! the transport's idle buffer (512 bytes); write buffers are freed once a
//! small write completes.
//!
//! Neither the socket nor its halves are `Send`: tokio-uring's sockets hold
//! an `Rc`, so they stay on the core that made them, in tasks spawned with
//! `spawn_local`, and the compiler enforces it. Dropping an operation in
//! flight does not cancel it and keeps the fd open, so when both halves are
//! gone the socket is shut down (`SHUT_RDWR`): the posted receive completes
//! and the peer sees the connection end.
//!
//! Sockets must be configured before they are split: callers set
//! `TCP_NODELAY` on the std socket (or use [`UringStream::set_nodelay`]).
#![allow(unsafe_code)] // One fd borrow, with its SAFETY comment.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use tokio_uring::net::TcpStream;

/// A TCP socket on an io_uring core, not yet split.
pub struct UringStream {
    socket: TcpStream,
}

impl UringStream {
    /// Wraps a tokio-uring stream. Must be called on the thread running the
    /// tokio-uring runtime that will drive it.
    pub fn new(socket: TcpStream) -> Self {
        Self { socket }
    }

    /// Wraps a connected std socket (e.g. from
    /// `tokio::net::TcpStream::connect(..).await?.into_std()?`). The socket
    /// is put in blocking mode: io_uring waits for readiness itself, and
    /// kernels before 5.11 fail operations on non-blocking sockets with
    /// `EAGAIN`.
    pub fn from_std(socket: std::net::TcpStream) -> io::Result<Self> {
        socket.set_nonblocking(false)?;
        Ok(Self::new(TcpStream::from_std(socket)))
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(socket2::SockRef::from(&self.borrow_fd()).peer_addr()?)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(socket2::SockRef::from(&self.borrow_fd()).local_addr()?)
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.socket.set_nodelay(nodelay)
    }

    /// Sets TCP keepalive.
    pub fn set_keepalive(&self, keepalive: &socket2::TcpKeepalive) -> io::Result<()> {
        socket2::SockRef::from(&self.borrow_fd()).set_tcp_keepalive(keepalive)
    }

    /// The socket as halves that lend their buffers to the kernel, for a
    /// leg's transport (see [`native`]).
    pub fn into_native(self) -> (native::UringRead, native::UringWrite) {
        native::split(self.socket)
    }

    fn borrow_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `self.socket` owns the fd and keeps it open while `self`
        // exists; the borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) }
    }
}

impl std::fmt::Debug for UringStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStream")
            .field("fd", &self.socket.as_raw_fd())
            .finish()
    }
}

fn socket_addr(addr: socket2::SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| io::Error::other("socket address is not an IP address"))
}

/// A tokio-uring socket split for a leg's transport, whose buffers are lent
/// to the kernel instead of copied (see [`crate::ssh::io`]). Neither half is
/// `Send`: both stay on the core's runtime, in tasks spawned with
/// `spawn_local`.
pub mod native {
    use std::future::Future;
    use std::io;
    use std::mem;
    use std::net::Shutdown;
    use std::pin::Pin;
    use std::rc::Rc;

    use tokio_uring::BufResult;
    use tokio_uring::buf::{BoundedBuf, Slice};
    use tokio_uring::net::TcpStream;

    use crate::ssh::io::{ReadAt, WriteOut};

    type ReadOp = Pin<Box<dyn Future<Output = BufResult<usize, Slice<Vec<u8>>>>>>;
    type WriteOp = Pin<Box<dyn Future<Output = BufResult<(), Slice<Vec<u8>>>>>>;

    /// Shuts the socket down when both halves are gone, so that a read
    /// still posted (which keeps the fd open) completes and the peer sees
    /// the connection end.
    struct Closer(Rc<TcpStream>);

    impl Drop for Closer {
        fn drop(&mut self) {
            // ENOTCONN (the peer left first) needs no handling.
            let _ = self.0.shutdown(Shutdown::Both);
        }
    }

    /// Splits a tokio-uring socket into halves that lend buffers to the
    /// kernel.
    pub fn split(socket: TcpStream) -> (UringRead, UringWrite) {
        let closer = Rc::new(Closer(Rc::new(socket)));
        (
            UringRead {
                closer: Rc::clone(&closer),
                op: None,
            },
            UringWrite {
                closer,
                op: None,
                in_flight: 0,
                spare: Vec::new(),
            },
        )
    }

    /// The receiving half: one receive posted at a time, straight into the
    /// transport's receive buffer.
    pub struct UringRead {
        closer: Rc<Closer>,
        /// The posted receive; it owns the caller's buffer until it completes.
        op: Option<ReadOp>,
    }

    impl ReadAt for UringRead {
        async fn read_at(&mut self, buf: &mut Vec<u8>, at: usize) -> io::Result<usize> {
            if self.op.is_none() {
                if at >= buf.len() {
                    return Err(io::Error::other("no room to read into"));
                }
                let len = buf.len();
                let lent = mem::take(buf).slice(at..len);
                let socket = Rc::clone(&self.closer.0);
                self.op = Some(Box::pin(async move { socket.read(lent).await }));
            }
            let op = self.op.as_mut().expect("posted just above");
            let (result, lent) = op.await;
            self.op = None;
            *buf = lent.into_inner();
            result
        }

        fn posted(&self) -> bool {
            self.op.is_some()
        }
    }

    /// The sending half: the sealed bytes are handed to the kernel as they
    /// are (one write in flight, all of it written before it completes);
    /// the transport seals the next packets into a second buffer meanwhile.
    pub struct UringWrite {
        closer: Rc<Closer>,
        op: Option<WriteOp>,
        /// Bytes of the write in flight.
        in_flight: usize,
        /// A bulk transfer's previous buffer, handed back for the next batch.
        spare: Vec<u8>,
    }

    /// Written buffers at least this large are kept for the next batch; a
    /// small write (a keystroke, a keepalive) frees its buffer and, if
    /// nothing was sealed meanwhile, the empty one waiting, so idle
    /// connections hold none.
    const KEEP: usize = 4096;

    impl WriteOut for UringWrite {
        async fn write_some(&mut self, out: &mut Vec<u8>, written: &mut usize) -> io::Result<()> {
            if self.op.is_none() {
                if *written == out.len() {
                    return Ok(());
                }
                let len = out.len();
                let lent = mem::replace(out, mem::take(&mut self.spare)).slice(*written..len);
                self.in_flight = len - *written;
                *written = 0;
                let socket = Rc::clone(&self.closer.0);
                self.op = Some(Box::pin(async move { socket.write_all(lent).await }));
            }
            let op = self.op.as_mut().expect("submitted just above");
            let (result, lent) = op.await;
            self.op = None;
            // `spare` went out as `out` when this write was submitted.
            let mut buf = lent.into_inner();
            if buf.len() >= KEEP {
                buf.clear();
                self.spare = buf;
            } else if out.is_empty() {
                // The transfer has gone quiet: hold no buffer while idle.
                *out = Vec::new();
            }
            self.in_flight = 0;
            result
        }

        fn in_flight(&self) -> usize {
            self.in_flight
        }

        async fn shutdown(&mut self) -> io::Result<()> {
            if self.op.is_some() {
                let mut none = Vec::new();
                self.write_some(&mut none, &mut 0).await?;
            }
            self.closer.0.shutdown(Shutdown::Write)
        }
    }
}
