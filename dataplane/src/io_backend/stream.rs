//! One stream type for both backends, so session code above is the same.

use std::io;
use std::net::SocketAddr;

use super::IoBackend;
use crate::ssh::io::{Plain, ReadAt, Split, WriteOut};
use crate::uring_stream::UringStream;
use crate::uring_stream::native::{UringRead, UringWrite};

/// A TCP connection on either backend, which the transport's `Leg` splits
/// into halves ([`Split`]). A [`Stream::Uring`] stays on the core that
/// made it (see [`UringStream`]).
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
/// `backend`. It connects through tokio's reactor (which also runs inside a
/// tokio-uring runtime), then hands the fd to tokio-uring.
pub async fn connect(addr: SocketAddr, backend: IoBackend) -> io::Result<Stream> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    tune(&stream);
    Stream::from_tokio(stream, backend)
}

/// How long a silent peer may go before the kernel probes it, and how many
/// unanswered probes (every [`KEEPALIVE_INTERVAL`]) end the connection: a
/// dead peer on either leg is found within about 45 s.
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// Every proxied socket: no Nagle delay (keystrokes), and TCP keepalive so
/// a peer that vanished without a FIN is found without SSH-level pings
/// (which the relay could not inject without confusing reply order).
pub fn tune(stream: &tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive());
}

/// The keepalive settings of every proxied socket (see [`tune`]).
pub fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES)
}

/// The reading half of a [`Stream`] split for a leg's transport.
pub enum StreamRead {
    Uring(UringRead),
    Epoll(Plain<tokio::net::tcp::OwnedReadHalf>),
}

/// The writing half of a [`Stream`] split for a leg's transport.
pub enum StreamWrite {
    Uring(UringWrite),
    Epoll(Plain<tokio::net::tcp::OwnedWriteHalf>),
}

impl Split for Stream {
    type Read = StreamRead;
    type Write = StreamWrite;

    fn split(self) -> (StreamRead, StreamWrite) {
        match self {
            Stream::Uring(s) => {
                let (r, w) = s.into_native();
                (StreamRead::Uring(r), StreamWrite::Uring(w))
            }
            Stream::Epoll(s) => {
                let (r, w) = s.into_split();
                (StreamRead::Epoll(Plain(r)), StreamWrite::Epoll(Plain(w)))
            }
        }
    }
}

impl ReadAt for StreamRead {
    async fn read_at(&mut self, buf: &mut Vec<u8>, at: usize) -> io::Result<usize> {
        match self {
            StreamRead::Uring(r) => r.read_at(buf, at).await,
            StreamRead::Epoll(r) => r.read_at(buf, at).await,
        }
    }

    fn posted(&self) -> bool {
        match self {
            StreamRead::Uring(r) => r.posted(),
            StreamRead::Epoll(r) => r.posted(),
        }
    }
}

impl WriteOut for StreamWrite {
    async fn write_some(&mut self, out: &mut Vec<u8>, written: &mut usize) -> io::Result<()> {
        match self {
            StreamWrite::Uring(w) => w.write_some(out, written).await,
            StreamWrite::Epoll(w) => w.write_some(out, written).await,
        }
    }

    fn in_flight(&self) -> usize {
        match self {
            StreamWrite::Uring(w) => w.in_flight(),
            StreamWrite::Epoll(w) => w.in_flight(),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            StreamWrite::Uring(w) => w.shutdown().await,
            StreamWrite::Epoll(w) => w.shutdown().await,
        }
    }
}
