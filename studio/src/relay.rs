//! Relaying one SSH channel to one byte stream (a TCP connection for port
//! forwarding, a Unix socket for the agent), both ways, with half-close.
//!
//! The channel's window paces the stream-to-channel direction; the
//! channel-to-stream direction writes each packet before reading the next,
//! so a stream that stops reading stops this channel (and, through russh's
//! bounded per-channel queue, eventually the connection's reader; the
//! window the client got is the most that can be buffered).

use std::sync::Arc;

use bytes::BytesMut;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const CHUNK: usize = 32 * 1024;

/// What ends a relay when the stream side reaches EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Forwarded connections: send EOF and wait for the client to close.
    AwaitClose,
    /// A subsystem (the stream is its stdio): it exited, so report
    /// `exit-status 0`, EOF and close, as sshd does for `sftp-server`.
    ExitStatus,
}

/// Relays until both directions ended or either side closed.
pub async fn relay<M, S>(channel: Channel<M>, stream: S)
where
    M: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    relay_until(channel, stream, StreamEnd::AwaitClose).await;
}

/// [`relay`], with the choice of what the stream's EOF means.
pub async fn relay_until<M, S>(channel: Channel<M>, stream: S, end: StreamEnd)
where
    M: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut rx, tx) = channel.split();
    let tx = Arc::new(tx);
    let (mut from_stream, mut to_stream) = tokio::io::split(stream);

    let upstream = stream_to_channel(&mut from_stream, &tx);
    let downstream = async {
        while let Some(msg) = rx.wait().await {
            match msg {
                ChannelMsg::Data { data } if to_stream.write_all(&data).await.is_err() => return,
                ChannelMsg::Eof => {
                    let _ = to_stream.shutdown().await;
                }
                ChannelMsg::Close => return,
                _ => {}
            }
        }
    };
    tokio::pin!(upstream, downstream);

    // The channel closing (or the stream failing on write) ends everything;
    // the stream's EOF only ends its own direction.
    tokio::select! {
        () = &mut downstream => {}
        () = &mut upstream => match end {
            StreamEnd::AwaitClose => downstream.await,
            StreamEnd::ExitStatus => {
                let _ = tx.exit_status(0).await;
            }
        },
    }
    let _ = tx.close().await;
}

/// Stream bytes into the channel until EOF, then send the channel's EOF
/// (so on the wire: data, EOF, then `exit-status` if any, then close).
async fn stream_to_channel<R, M>(from: &mut R, tx: &Arc<ChannelWriteHalf<M>>)
where
    R: AsyncRead + Unpin,
    M: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if tx.data_bytes(buf.split().freeze()).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.eof().await;
}
