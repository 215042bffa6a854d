//! `interactive`: each worker holds one session with a pty running
//! `command` (default `cat`, so the terminal's echo is what comes back) and
//! types: one byte, wait for its echo, think, the next; Enter every
//! `line` keystrokes (the line comes back twice: echo, then cat). Records
//! `login`, and `keystroke`: byte sent until its echo arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::ChannelMsg;

use super::{Ctx, workers};
use crate::failure::Failure;

#[derive(Debug, Clone)]
pub struct Params {
    pub concurrency: usize,
    pub command: String,
    /// Pause between keystrokes (a typist's pace).
    pub think: Duration,
    /// Keystrokes per line.
    pub line: usize,
}

pub async fn run(ctx: Arc<Ctx>, p: Params) {
    let n = p.concurrency;
    let p = Arc::new(p);
    workers(&ctx, n, |_| {
        let (ctx, p) = (ctx.clone(), p.clone());
        async move {
            // A session that breaks is replaced until the run ends.
            while ctx.running() {
                if let Err(f) = session(&ctx, &p).await {
                    ctx.fail("keystroke", &f);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await;
}

async fn session(ctx: &Ctx, p: &Params) -> Result<(), Failure> {
    let Some(conn) = ctx.login().await else {
        // Counted as a login failure; pause before trying again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Ok(());
    };
    ctx.rec.opened();
    let result = typing(ctx, p, &conn).await;
    conn.close().await;
    ctx.rec.closed();
    result
}

async fn typing(ctx: &Ctx, p: &Params, conn: &crate::client::Conn) -> Result<(), Failure> {
    let mut ch = ctx
        .timed("pty", async {
            let ch = conn
                .handle
                .channel_open_session()
                .await
                .map_err(|e| Failure::russh("channel open", &e))?;
            ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
                .await
                .map_err(|e| Failure::russh("pty", &e))?;
            ch.exec(true, p.command.as_str())
                .await
                .map_err(|e| Failure::russh("exec", &e))?;
            Ok(ch)
        })
        .await?;
    let mut seen: Vec<u8> = Vec::new();
    let mut typed = 0usize;
    while ctx.start_next().await {
        let key = b'a' + (typed % 26) as u8;
        let t0 = Instant::now();
        ch.data(&[key][..])
            .await
            .map_err(|e| Failure::russh("send", &e))?;
        ctx.timed(
            "echo",
            read_until(&mut ch, &mut seen, |buf| buf.contains(&key)),
        )
        .await?;
        ctx.rec.ok("keystroke", t0.elapsed());
        seen.clear();
        typed += 1;
        if typed.is_multiple_of(p.line.max(1)) {
            // Enter: the echoed newline, then the command's copy of the line.
            ch.data(&b"\r"[..])
                .await
                .map_err(|e| Failure::russh("send", &e))?;
            ctx.timed(
                "echo",
                read_until(&mut ch, &mut seen, |buf| {
                    buf.iter().filter(|b| **b == b'\n').count() >= 2
                }),
            )
            .await?;
            seen.clear();
        }
        if !p.think.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(p.think) => {}
                _ = ctx.wait_stop() => break,
            }
        }
    }
    Ok(())
}

/// Reads output into `seen` until `done(seen)`.
async fn read_until(
    ch: &mut russh::Channel<russh::client::Msg>,
    seen: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> Result<(), Failure> {
    while !done(seen) {
        match ch.wait().await {
            Some(ChannelMsg::Data { data }) => seen.extend_from_slice(&data),
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                return Err(Failure::new(
                    "command ended",
                    format!("the command exited with {exit_status}"),
                ));
            }
            Some(ChannelMsg::Failure) => {
                return Err(Failure::new(
                    "pty refused",
                    "the pty or command was refused",
                ));
            }
            Some(_) => {}
            None => return Err(Failure::new("disconnected", "the channel closed")),
        }
    }
    Ok(())
}
