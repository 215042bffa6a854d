//! `bulk`: each worker logs in once and then moves `bytes` per transfer on
//! a new channel each time, down (`yes loadtest | head -c BYTES`) and/or up
//! (the same stream sent into `sha256sum`), and checks every transfer's
//! SHA-256 against the one computed locally. Records `login`, `download`,
//! `upload` (time of one whole transfer) and the verified bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ring::digest;
use russh::ChannelMsg;

use super::{Ctx, workers};
use crate::client::Conn;
use crate::failure::Failure;

/// The stream both directions carry: `yes loadtest`.
const LINE: &[u8] = b"loadtest\n";
/// A whole number of lines, ~32 KiB: one SSH data message.
const CHUNK_LINES: usize = 3640;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Down,
    Up,
    Both,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub concurrency: usize,
    pub bytes: u64,
    pub direction: Direction,
}

/// The payload and its expected digest, computed once.
#[derive(Debug)]
pub struct Payload {
    chunk: Bytes,
    bytes: u64,
    sha256: String,
}

impl Payload {
    pub fn new(bytes: u64) -> Self {
        let chunk = Bytes::from(LINE.repeat(CHUNK_LINES));
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            ctx.update(&chunk[..n]);
            left -= n as u64;
        }
        Self {
            chunk,
            bytes,
            sha256: hex(ctx.finish().as_ref()),
        }
    }
}

pub async fn run(ctx: Arc<Ctx>, p: Params) {
    let n = p.concurrency;
    let payload = Arc::new(Payload::new(p.bytes));
    let direction = p.direction;
    workers(&ctx, n, |i| {
        let (ctx, payload) = (ctx.clone(), payload.clone());
        async move {
            let mut up = i % 2 == 1;
            while ctx.running() {
                let Some(conn) = ctx.login().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                ctx.rec.opened();
                while ctx.start_next().await {
                    up = match direction {
                        Direction::Down => false,
                        Direction::Up => true,
                        Direction::Both => !up,
                    };
                    let ok = transfer(&ctx, &conn, &payload, up).await;
                    if !ok {
                        break; // a fresh connection for the next one
                    }
                }
                conn.close().await;
                ctx.rec.closed();
            }
        }
    })
    .await;
}

/// One verified transfer; false if it failed.
pub async fn transfer(ctx: &Ctx, conn: &Conn, payload: &Payload, up: bool) -> bool {
    let op = if up { "upload" } else { "download" };
    let t0 = Instant::now();
    let result = ctx
        .timed(op, async {
            if up {
                upload(conn, payload).await
            } else {
                download(conn, payload).await
            }
        })
        .await;
    match result {
        Ok(()) => {
            ctx.rec.ok(op, t0.elapsed());
            ctx.rec.bytes(payload.bytes);
            true
        }
        Err(f) => {
            ctx.fail(op, &f);
            false
        }
    }
}

async fn download(conn: &Conn, payload: &Payload) -> Result<(), Failure> {
    let mut ch = conn
        .handle
        .channel_open_session()
        .await
        .map_err(|e| Failure::russh("channel open", &e))?;
    let command = format!("yes loadtest | head -c {}", payload.bytes);
    ch.exec(true, command.as_str())
        .await
        .map_err(|e| Failure::russh("exec", &e))?;
    let mut sha = digest::Context::new(&digest::SHA256);
    let mut got = 0u64;
    let mut status = None;
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                got += data.len() as u64;
                sha.update(&data);
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Failure => {
                return Err(Failure::new("exec refused", format!("{command:?} refused")));
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    check(
        status,
        got,
        payload.bytes,
        &hex(sha.finish().as_ref()),
        &payload.sha256,
    )
}

async fn upload(conn: &Conn, payload: &Payload) -> Result<(), Failure> {
    let ch = conn
        .handle
        .channel_open_session()
        .await
        .map_err(|e| Failure::russh("channel open", &e))?;
    ch.exec(true, "sha256sum")
        .await
        .map_err(|e| Failure::russh("exec", &e))?;
    let (mut rx, tx) = ch.split();
    let send = async {
        let mut left = payload.bytes;
        while left > 0 {
            let n = left.min(payload.chunk.len() as u64) as usize;
            tx.data_bytes(payload.chunk.slice(..n))
                .await
                .map_err(|e| Failure::russh("send", &e))?;
            left -= n as u64;
        }
        tx.eof().await.map_err(|e| Failure::russh("send", &e))
    };
    let receive = async {
        let mut out = Vec::new();
        let mut status = None;
        while let Some(msg) = rx.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::Failure => {
                    return Err(Failure::new("exec refused", "sha256sum refused"));
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        Ok((out, status))
    };
    let (sent, received) = tokio::join!(send, receive);
    let (out, status) = received?;
    sent?;
    let text = String::from_utf8_lossy(&out);
    let remote = text.split_whitespace().next().unwrap_or_default();
    check(
        status,
        payload.bytes,
        payload.bytes,
        remote,
        &payload.sha256,
    )
}

fn check(
    status: Option<u32>,
    got: u64,
    want: u64,
    sha: &str,
    want_sha: &str,
) -> Result<(), Failure> {
    match status {
        Some(0) => {}
        Some(s) => {
            return Err(Failure::new(
                "exit status not 0",
                format!("the command exited with {s}"),
            ));
        }
        None => {
            return Err(Failure::new(
                "no exit status",
                "the channel closed without an exit status",
            ));
        }
    }
    if got != want {
        return Err(Failure::new(
            "short transfer",
            format!("{got} of {want} bytes arrived"),
        ));
    }
    if sha != want_sha {
        return Err(Failure::new(
            "checksum mismatch",
            format!("sha256 {sha}, expected {want_sha}"),
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_digest_is_that_of_yes_piped_into_head() {
        // printf 'loadtest\n%.0s' $(seq 4) | head -c 30 | sha256sum
        let p = Payload::new(30);
        let mut d = digest::Context::new(&digest::SHA256);
        d.update(&b"loadtest\nloadtest\nloadtest\nloa"[..]);
        assert_eq!(p.sha256, hex(d.finish().as_ref()));
        // A payload longer than one chunk continues the lines across it.
        let long = Payload::new(100_000);
        let mut d = digest::Context::new(&digest::SHA256);
        d.update(&LINE.repeat(100_000 / LINE.len() + 1)[..100_000]);
        assert_eq!(long.sha256, hex(d.finish().as_ref()));
    }

    #[test]
    fn a_transfer_is_checked_for_status_length_and_digest() {
        assert!(check(Some(0), 5, 5, "ab", "ab").is_ok());
        assert_eq!(
            check(Some(1), 5, 5, "ab", "ab").unwrap_err().kind,
            "exit status not 0"
        );
        assert_eq!(
            check(None, 5, 5, "ab", "ab").unwrap_err().kind,
            "no exit status"
        );
        assert_eq!(
            check(Some(0), 4, 5, "ab", "ab").unwrap_err().kind,
            "short transfer"
        );
        assert_eq!(
            check(Some(0), 5, 5, "ab", "cd").unwrap_err().kind,
            "checksum mismatch"
        );
    }
}
