//! `churn`: sessions arrive at a fixed rate whatever the server does (an
//! open loop: a slow server gets a backlog, not a pause), each held for a
//! while and closed. Records `login`, and `exec` when a command is given.
//! At most `max_open` sessions are in flight; an arrival beyond that is
//! counted as a `login: backlog full` error instead of queueing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::Ctx;
use super::connect::exec;

#[derive(Debug, Clone)]
pub struct Params {
    pub max_open: usize,
    pub hold: Duration,
    pub command: Option<String>,
}

pub async fn run(ctx: Arc<Ctx>, p: Params) {
    let slots = Arc::new(Semaphore::new(p.max_open.max(1)));
    let p = Arc::new(p);
    let mut tasks = tokio::task::JoinSet::new();
    while ctx.start_next().await {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            ctx.rec.error("login", "backlog full");
            continue;
        };
        let (ctx, p) = (ctx.clone(), p.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let Some(conn) = ctx.login().await else {
                return;
            };
            ctx.rec.opened();
            if let Some(command) = &p.command {
                exec(&ctx, &conn, command).await;
            }
            // Held for `hold`, but not past the end of the run.
            tokio::select! {
                _ = tokio::time::sleep(p.hold) => {}
                _ = ctx.wait_end() => {}
            }
            conn.close().await;
            ctx.rec.closed();
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
