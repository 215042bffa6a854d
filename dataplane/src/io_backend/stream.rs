//! One stream type for both backends, so session code above is the same.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::IoBackend;
use crate::uring_stream::UringStream;

/// A TCP connection on either backend: `AsyncRead + AsyncWrite + Unpin +
/// Send`, as russh's `run_stream` and `connect_stream` require. A
/// [`Stream::Uring`] must stay on the core that made it (see
/// [`UringStream`]).
#[derive(Debug)]
pub enum Stream {
    Uring(UringStream),
    Epoll(tokio::net::TcpStream),
}

impl Stream {
    /// Wraps a connected tokio socket for `backend` (for io_uring the fd is
    /// handed over to tokio-uring). Call it on the core that will use it.
    pub fn from_tokio(stream: tokio::net::TcpStream, backend: IoBackend) -> io::Result<Self> {
        match backend {
            IoBackend::Epoll => Ok(Stream::Epoll(stream)),
            IoBackend::Uring => Ok(Stream::Uring(UringStream::from_std(stream.into_std()?)?)),
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Uring(s) => s.peer_addr(),
            Stream::Epoll(s) => s.peer_addr(),
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Uring(s) => s.local_addr(),
            Stream::Epoll(s) => s.local_addr(),
        }
    }

    /// The backend this stream runs on.
    pub fn backend(&self) -> IoBackend {
        match self {
            Stream::Uring(_) => IoBackend::Uring,
            Stream::Epoll(_) => IoBackend::Epoll,
        }
    }
}

/// Connects to `addr` with `TCP_NODELAY` and wraps the socket for
/// `backend`. The future is `Send` (it connects through tokio's reactor,
/// which also runs inside a tokio-uring runtime), so russh handlers can
/// await it; tokio-uring's own connect future is not `Send`.
pub async fn connect(addr: SocketAddr, backend: IoBackend) -> io::Result<Stream> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Stream::from_tokio(stream, backend)
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Uring(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Epoll(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Uring(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Epoll(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Uring(s) => Pin::new(s).poll_flush(cx),
            Stream::Epoll(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Uring(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Epoll(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Uring(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Epoll(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Uring(s) => s.is_write_vectored(),
            Stream::Epoll(s) => s.is_write_vectored(),
        }
    }
}
