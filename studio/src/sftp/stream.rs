//! The stream under a session.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

/// Turns the first I/O error on the stream into end of stream: russh-sftp
/// logs and retries a failed read forever, and a session whose stream has
/// failed is over anyway.
pub(super) struct EndOnError<S> {
    inner: S,
    failed: bool,
}

impl<S> EndOnError<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            failed: false,
        }
    }

    fn failed(&mut self, err: &io::Error) {
        debug!(%err, "sftp stream failed");
        self.failed = true;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EndOnError<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Err(err)) => {
                this.failed(&err);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EndOnError<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Err(err)) => {
                this.failed(&err);
                Poll::Ready(Err(err))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
