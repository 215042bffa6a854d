//! How a leg's transport reads and writes its socket, on either backend.
//!
//! The transport owns its buffers: the receive buffer that packets are
//! opened in, and the buffer sealed packets are appended to. The backends
//! differ in who may touch those buffers while a read or write is pending:
//!
//! - epoll (and in-memory pipes in the tests): the kernel copies from and
//!   into the buffer during the system call, so a pending read or write
//!   holds nothing; the halves are tokio's.
//! - io_uring: the kernel writes into and reads from the buffer after the
//!   submission returns, so the buffer is *lent* to the operation until it
//!   completes ([`crate::uring_stream::UringRead`], `UringWrite`). A read
//!   lands directly in the receive buffer and a write goes straight from the
//!   sealing buffer: no copy through an intermediate buffer either way.
//!
//! Both calls are cancel-safe (the relay `select!`s over them): a read or
//! write that was submitted stays submitted when its future is dropped, and
//! the next call finishes it.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The reading half of a leg's socket.
pub trait ReadAt {
    /// Reads into `buf[at..]` and returns how many bytes came (0: the peer
    /// closed). Cancel-safe; while [`ReadAt::posted`] the buffer may be lent
    /// out (`buf` is then empty) and the caller must not change `buf` or
    /// `at` before calling again.
    fn read_at(&mut self, buf: &mut Vec<u8>, at: usize) -> impl Future<Output = io::Result<usize>>;

    /// Whether a read is submitted and holds the buffer.
    fn posted(&self) -> bool {
        false
    }
}

/// The writing half of a leg's socket.
pub trait WriteOut {
    /// Writes some of `out[*written..]` and advances `*written`, or finishes
    /// a write already submitted. A backend that lends the buffer takes
    /// `out`'s unwritten bytes (`out` then starts over, empty, and
    /// `*written` is 0) and counts them in [`WriteOut::in_flight`] until the
    /// kernel has taken them all. Cancel-safe.
    fn write_some(
        &mut self,
        out: &mut Vec<u8>,
        written: &mut usize,
    ) -> impl Future<Output = io::Result<()>>;

    /// Bytes submitted and not yet written.
    fn in_flight(&self) -> usize {
        0
    }

    /// Shuts the write direction down once everything submitted is written.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>>;
}

/// A stream a leg can be built on: split into its two halves.
pub trait Split {
    type Read: ReadAt;
    type Write: WriteOut;

    fn split(self) -> (Self::Read, Self::Write);
}

/// A tokio stream's half, read or written with plain `read`/`write` calls
/// (epoll sockets, in-memory pipes).
#[derive(Debug)]
pub struct Plain<T>(pub T);

impl<T: AsyncRead + Unpin> ReadAt for Plain<T> {
    async fn read_at(&mut self, buf: &mut Vec<u8>, at: usize) -> io::Result<usize> {
        self.0.read(&mut buf[at..]).await
    }
}

impl<T: AsyncWrite + Unpin> WriteOut for Plain<T> {
    async fn write_some(&mut self, out: &mut Vec<u8>, written: &mut usize) -> io::Result<()> {
        if *written == out.len() {
            return self.0.flush().await;
        }
        let n = self.0.write(&out[*written..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        *written += n;
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.0.shutdown().await
    }
}

impl Split for tokio::io::DuplexStream {
    type Read = Plain<tokio::io::ReadHalf<Self>>;
    type Write = Plain<tokio::io::WriteHalf<Self>>;

    fn split(self) -> (Self::Read, Self::Write) {
        let (r, w) = tokio::io::split(self);
        (Plain(r), Plain(w))
    }
}

impl Split for tokio::net::TcpStream {
    type Read = Plain<tokio::net::tcp::OwnedReadHalf>;
    type Write = Plain<tokio::net::tcp::OwnedWriteHalf>;

    fn split(self) -> (Self::Read, Self::Write) {
        let (r, w) = self.into_split();
        (Plain(r), Plain(w))
    }
}
