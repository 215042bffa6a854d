//! `connect`: whole short SSH lives, back to back on each worker: TCP,
//! key exchange, authentication, `exec COMMAND`, exit status, disconnect.
//! Records `login` and `exec`.

use std::sync::Arc;
use std::time::Instant;

use super::{Ctx, workers};
use crate::client;
use crate::failure::Failure;

#[derive(Debug, Clone)]
pub struct Params {
    pub concurrency: usize,
    /// Run on each connection; `None` logs in and out only.
    pub command: Option<String>,
}

pub async fn run(ctx: Arc<Ctx>, p: Params) {
    let n = p.concurrency;
    let p = Arc::new(p);
    workers(&ctx, n, |_| {
        let (ctx, p) = (ctx.clone(), p.clone());
        async move {
            while ctx.start_next().await {
                once(&ctx, p.command.as_deref()).await;
            }
        }
    })
    .await;
}

/// One connection's life.
pub async fn once(ctx: &Ctx, command: Option<&str>) {
    let Some(conn) = ctx.login().await else {
        // Back off a little: a refused or unreachable target must not be
        // hammered (and the report flooded) at CPU speed.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        return;
    };
    ctx.rec.opened();
    if let Some(command) = command {
        exec(ctx, &conn, command).await;
    }
    conn.close().await;
    ctx.rec.closed();
}

/// Runs `command` on `conn`; records `exec` (a non-zero exit is an error).
pub async fn exec(ctx: &Ctx, conn: &client::Conn, command: &str) {
    let t0 = Instant::now();
    match ctx.timed("exec", client::run(&conn.handle, command)).await {
        Ok(0) => ctx.rec.ok("exec", t0.elapsed()),
        Ok(status) => ctx.fail(
            "exec",
            &Failure::new(
                "exit status not 0",
                format!("{command:?} exited with {status}"),
            ),
        ),
        Err(f) => ctx.fail("exec", &f),
    }
}
