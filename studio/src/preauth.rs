//! Limits before authentication: a connection has
//! `CONNECT_CLIENT_HANDSHAKE_TIMEOUT` from accept to authenticated, and at
//! most `CONNECT_CLIENT_MAX_STARTUPS` connections may be unauthenticated at
//! once. Past that, the *oldest* unauthenticated connection is closed to
//! make room: a peer that opens sockets and stays silent loses them to the
//! next connection, so the proxy (which authenticates within milliseconds)
//! still gets in, and the sockets one peer can hold are bounded.
//!
//! russh runs each session in a task of its own, so closing one from
//! outside goes through its socket: [`Gated`] wraps the stream and fails
//! every read and write once its [`Ticket`] is cut, which ends the session.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;
use tracing::info;

/// The unauthenticated connections of one server.
pub struct Gate {
    max: usize,
    timeout: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Invariant: the connections admitted and neither authenticated nor
    /// ended, keyed by admission order (the first is the oldest); at most
    /// `max` of them.
    waiting: BTreeMap<u64, Arc<Cut>>,
}

/// The switch shared by a connection's [`Gated`] stream and its [`Ticket`].
#[derive(Default)]
struct Cut {
    cut: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Cut {
    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }
}

impl Gate {
    /// Invariant: `max` is at least 1.
    pub fn new(max: usize, timeout: Duration) -> Self {
        Self {
            max: max.max(1),
            timeout,
            state: Arc::default(),
        }
    }

    /// Admits a new connection, closing the oldest unauthenticated one if
    /// the limit is reached; returns the stream to hand to russh and the
    /// ticket its handler holds until authentication.
    pub fn admit<S>(&self, stream: S) -> (Gated<S>, Ticket) {
        let cut = Arc::new(Cut::default());
        let id = {
            let mut state = lock(&self.state);
            while state.waiting.len() >= self.max {
                if let Some((_, oldest)) = state.waiting.pop_first() {
                    info!(
                        limit = self.max,
                        "unauthenticated connection closed: too many unauthenticated connections (CONNECT_CLIENT_MAX_STARTUPS)"
                    );
                    oldest.cut();
                }
            }
            let id = state.next;
            state.next += 1;
            state.waiting.insert(id, cut.clone());
            id
        };
        let timer = {
            let cut = cut.clone();
            let timeout = self.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                info!(
                    timeout = %humantime::format_duration(timeout),
                    "unauthenticated connection closed: handshake timeout (CONNECT_CLIENT_HANDSHAKE_TIMEOUT)"
                );
                cut.cut();
            })
        };
        let ticket = Ticket {
            id,
            state: self.state.clone(),
            timer,
        };
        (Gated { inner: stream, cut }, ticket)
    }

    /// Connections admitted and not yet authenticated or ended.
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting.len()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Held by a connection's handler until it authenticates; dropping it
/// (authenticated, or the connection ended) frees the slot and stops the
/// handshake timer.
pub struct Ticket {
    id: u64,
    state: Arc<Mutex<State>>,
    timer: JoinHandle<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.timer.abort();
        lock(&self.state).waiting.remove(&self.id);
    }
}

/// A stream that fails once its ticket is cut.
pub struct Gated<S> {
    inner: S,
    cut: Arc<Cut>,
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "closed before authentication (handshake timeout or too many unauthenticated connections)",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Gated<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.cut.reader.register(cx.waker());
        if self.cut.is_cut() {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gated<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.cut.writer.register(cx.waker());
        if self.cut.is_cut() {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cut.writer.register(cx.waker());
        if self.cut.is_cut() {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
