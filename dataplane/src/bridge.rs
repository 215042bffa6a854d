//! Bridging one channel between the user's leg and the Studio's leg.
//!
//! Each bridged channel has two tasks, one per direction, each the only
//! reader of its side's messages and the only writer of the other side's
//! data, so on each direction data, EOF, `exit-status` and close keep their
//! order. Payloads move as `Bytes` from one russh channel to the other; our
//! code copies nothing.
//!
//! Flow control is end to end: a task writes a chunk to the other leg only
//! within that leg's window and does not read the next message until it
//! has, so a side that stops reading stops its peer once russh's bounded
//! per-channel queue (`channel_buffer_size` messages) is full. Nothing here
//! buffers without bound.
//!
//! Channel requests with replies (`pty-req`, `exec`...) are not relayed
//! here: the user-side handler sends them upstream itself and waits for the
//! reply, which the downstream task hands back through [`Replies`] in order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::{ChannelId, ChannelMsg, ChannelWriteHalf};
use tokio::sync::oneshot;

use crate::metrics::CoreMetrics;

/// How long a relayed channel request may wait for the Studio's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Replies the Studio owes for requests sent on one channel, oldest first.
#[derive(Default)]
pub struct Replies {
    waiting: Mutex<VecDeque<oneshot::Sender<bool>>>,
}

impl Replies {
    fn complete(&self, ok: bool) {
        let next = self.waiting.lock().ok().and_then(|mut w| w.pop_front());
        if let Some(tx) = next {
            let _ = tx.send(ok);
        }
    }

    /// Registers a reply to wait for; call before sending the request.
    pub fn expect(&self) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.push_back(tx);
        }
        rx
    }

    /// Waits for a reply registered with [`Replies::expect`]; a Studio that
    /// does not answer in time, or goes away, counts as a failure.
    pub async fn wait(rx: oneshot::Receiver<bool>) -> bool {
        matches!(tokio::time::timeout(REPLY_TIMEOUT, rx).await, Ok(Ok(true)))
    }

    fn fail_all(&self) {
        if let Ok(mut w) = self.waiting.lock() {
            for tx in w.drain(..) {
                let _ = tx.send(false);
            }
        }
    }
}

/// Last time a session moved a byte, unix seconds; shared with the
/// activity reporter.
#[derive(Debug, Default)]
pub struct LastActive(AtomicI64);

impl LastActive {
    pub fn touch(&self) {
        self.0.store(crate::activity::now_secs(), Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the downstream direction needs to reach the user besides the
/// channel itself: `exit-signal` is only sent through the session handle.
pub trait ExitSignal: Send + Sync + 'static {
    fn exit_signal(
        &self,
        id: ChannelId,
        signal: russh::Sig,
        core_dumped: bool,
        message: String,
    ) -> impl std::future::Future<Output = ()> + Send;
}

impl ExitSignal for russh::server::Handle {
    async fn exit_signal(
        &self,
        id: ChannelId,
        signal: russh::Sig,
        core_dumped: bool,
        message: String,
    ) {
        let _ = self
            .exit_signal_request(id, signal, core_dumped, message, String::new())
            .await;
    }
}

/// Handles for the user-side handler to one bridged channel.
pub struct Link {
    /// The Studio side, for relaying requests.
    pub upstream: Arc<ChannelWriteHalf<russh::client::Msg>>,
    pub replies: Arc<Replies>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Link {
    /// Whether both directions have ended.
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(tokio::task::AbortHandle::is_finished)
    }
}

impl Link {
    /// Stops both directions at once (the connection is gone; nothing is
    /// left to deliver to).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts both directions of a channel bridged between `user` (the proxy's
/// server side) and `studio` (its client side). `lost` is written to the
/// user's stderr if the Studio's connection disappears under the channel.
pub fn start(
    user: russh::Channel<russh::server::Msg>,
    studio: russh::Channel<russh::client::Msg>,
    user_handle: russh::server::Handle,
    metrics: CoreMetrics,
    active: Arc<LastActive>,
    lost: Option<bytes::Bytes>,
) -> Link {
    let user_id = user.id();
    let (user_rx, user_tx) = user.split();
    let (studio_rx, studio_tx) = studio.split();
    let user_tx = Arc::new(user_tx);
    let studio_tx = Arc::new(studio_tx);
    let replies = Arc::new(Replies::default());

    metrics.channels.inc();
    let guard = ChannelGauge(metrics.channels.clone());
    let up = tokio::spawn(up(
        user_rx,
        studio_tx.clone(),
        metrics.bytes_up.clone(),
        active.clone(),
    ));
    let ends = Ends {
        user_id,
        user_handle,
        replies: replies.clone(),
        lost,
        up: up.abort_handle(),
        _gauge: guard,
    };
    let down = tokio::spawn(down(studio_rx, user_tx, ends, metrics, active));
    Link {
        upstream: studio_tx,
        replies,
        tasks: [up.abort_handle(), down.abort_handle()],
    }
}

/// The bridge's own work per data message besides forwarding it: count
/// the bytes and stamp the session's activity.
pub fn account(bytes: &prometheus::IntCounter, active: &LastActive, len: usize) {
    bytes.inc_by(len as u64);
    active.touch();
}

/// Decrements the open-channel gauge when the bridge ends.
struct ChannelGauge(prometheus::IntGauge);

impl Drop for ChannelGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// User to Studio: data, EOF, close. Requests are the handler's.
async fn up(
    mut rx: russh::ChannelReadHalf,
    tx: Arc<ChannelWriteHalf<russh::client::Msg>>,
    bytes: prometheus::IntCounter,
    active: Arc<LastActive>,
) {
    while let Some(msg) = rx.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                account(&bytes, &active, data.len());
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                bytes.inc_by(data.len() as u64);
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
}

/// What the downstream direction needs besides the channels.
struct Ends<H> {
    user_id: ChannelId,
    user_handle: H,
    replies: Arc<Replies>,
    lost: Option<bytes::Bytes>,
    /// The other direction: stopped once the Studio side has closed.
    up: tokio::task::AbortHandle,
    _gauge: ChannelGauge,
}

/// Studio to user: data, stderr, EOF, exit status or signal, replies, close.
async fn down<H: ExitSignal>(
    mut rx: russh::ChannelReadHalf,
    tx: Arc<ChannelWriteHalf<russh::server::Msg>>,
    ends: Ends<H>,
    metrics: CoreMetrics,
    active: Arc<LastActive>,
) {
    let Ends {
        user_id,
        user_handle,
        replies,
        lost,
        up,
        _gauge,
    } = ends;
    let mut closed = false;
    while let Some(msg) = rx.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                account(&metrics.bytes_down, &active, data.len());
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                metrics.bytes_down.inc_by(data.len() as u64);
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::ExitStatus { exit_status } => tx.exit_status(exit_status).await,
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                ..
            } => {
                user_handle
                    .exit_signal(user_id, signal_name, core_dumped, error_message)
                    .await;
                Ok(())
            }
            ChannelMsg::Success => {
                replies.complete(true);
                Ok(())
            }
            ChannelMsg::Failure => {
                replies.complete(false);
                Ok(())
            }
            ChannelMsg::Close => {
                closed = true;
                break;
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    replies.fail_all();
    // The Studio side is gone: data the user still sends has nowhere to go.
    // The upstream task may be parked waiting for Studio window that will
    // never come; if it stayed, it would stop draining the user's channel,
    // russh's bounded queue would fill, and the whole user connection would
    // freeze before the exit status and close below could be delivered.
    up.abort();
    if let (false, Some(message)) = (closed, lost) {
        let _ = tx.extended_data_bytes(1, message).await;
        let _ = tx.exit_status(255).await;
    }
    let _ = tx.close().await;
}
