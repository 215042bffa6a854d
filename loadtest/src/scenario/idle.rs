//! `idle`: opens `sessions` SSH sessions (at most `concurrency` logins at a
//! time), holds them all for `hold` once every one has been tried, then
//! closes them. Processes given with `--watch` are measured before the
//! first login and again once all sessions are open, which gives the cost
//! of one idle session in memory and descriptors. Records `session`
//! (login plus the channel request) and, per watched process, the samples
//! `<name> rss_kib` and `<name> fds`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::Ctx;
use crate::client::Conn;
use crate::failure::Failure;
use crate::procfs;

/// What each idle session asks for after logging in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// No channel: an authenticated connection.
    Connection,
    /// A session channel and nothing on it.
    Channel,
    /// A session channel running a shell (no pty).
    Shell,
    /// A session channel running a command.
    Exec(String),
}

impl std::str::FromStr for Request {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "connection" => Ok(Self::Connection),
            "channel" => Ok(Self::Channel),
            "shell" => Ok(Self::Shell),
            _ => match s.strip_prefix("exec:") {
                Some(cmd) if !cmd.is_empty() => Ok(Self::Exec(cmd.to_owned())),
                _ => Err(format!(
                    "{s:?}: expected connection, channel, shell or exec:COMMAND"
                )),
            },
        }
    }
}

/// A process whose memory and descriptors are sampled.
#[derive(Debug, Clone)]
pub struct Watch {
    pub name: String,
    pub pid: u32,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub sessions: usize,
    pub concurrency: usize,
    pub hold: Duration,
    pub request: Request,
    pub watch: Vec<Watch>,
}

/// What the watched processes cost per session.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub name: String,
    pub pid: u32,
    pub rss_kib_before: u64,
    pub rss_kib_held: u64,
    pub fds_before: usize,
    pub fds_held: usize,
    pub sessions_held: i64,
    pub kib_per_session: Option<f64>,
    pub fds_per_session: Option<f64>,
}

pub async fn run(ctx: Arc<Ctx>, p: Params) -> Vec<Cost> {
    let before: Vec<(u64, usize)> = p.watch.iter().map(|w| measure(w.pid)).collect();
    let sampler = tokio::spawn(sample(ctx.clone(), p.watch.clone()));

    let slots = Arc::new(Semaphore::new(p.concurrency.max(1)));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(p.sessions.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..p.sessions {
        let (ctx, slots, request, opened) = (
            ctx.clone(),
            slots.clone(),
            p.request.clone(),
            opened_tx.clone(),
        );
        let n = p.sessions;
        tasks.spawn(async move {
            if !ctx.ramp_up(i, n).await || !ctx.take() {
                let _ = opened.send(()).await;
                return;
            }
            let held = {
                let Ok(_permit) = slots.acquire().await else {
                    return;
                };
                // live(), not running(): this session's budget is taken.
                if ctx.live() {
                    open(&ctx, &request).await
                } else {
                    None
                }
            };
            let _ = opened.send(()).await;
            let Some(held) = held else {
                return;
            };
            ctx.wait_end().await;
            held.conn.close().await;
            ctx.rec.closed();
        });
    }
    drop(opened_tx);

    // Every session tried (or the run over): settle, measure, hold.
    let mut tried = 0;
    while tried < p.sessions {
        tokio::select! {
            got = opened_rx.recv() => match got {
                Some(()) => tried += 1,
                None => break,
            },
            _ = ctx.wait_end() => break,
        }
    }
    let settle = Instant::now() + Duration::from_secs(1);
    tokio::select! {
        _ = tokio::time::sleep_until(settle.into()) => {}
        _ = ctx.wait_end() => {}
    }
    let held = ctx.rec.progress().open;
    let costs = p
        .watch
        .iter()
        .zip(before)
        .map(|(w, (rss_before, fds_before))| {
            let (rss_held, fds_held) = measure(w.pid);
            let per = |after: f64, before: f64| (held > 0).then(|| (after - before) / held as f64);
            Cost {
                name: w.name.clone(),
                pid: w.pid,
                rss_kib_before: rss_before,
                rss_kib_held: rss_held,
                fds_before,
                fds_held,
                sessions_held: held,
                kib_per_session: per(rss_held as f64, rss_before as f64),
                fds_per_session: per(fds_held as f64, fds_before as f64),
            }
        })
        .collect();
    if let Some(hold_end) = Instant::now().checked_add(p.hold)
        && hold_end < ctx.deadline
    {
        tokio::select! {
            _ = tokio::time::sleep_until(hold_end.into()) => {}
            _ = ctx.wait_stop() => {}
        }
        ctx.stop();
    }
    while tasks.join_next().await.is_some() {}
    sampler.abort();
    costs
}

/// A session being held.
struct Held {
    conn: Conn,
    _channel: Option<russh::Channel<russh::client::Msg>>,
}

async fn open(ctx: &Ctx, request: &Request) -> Option<Held> {
    let t0 = Instant::now();
    let result = ctx
        .timed("session", async {
            let login = ctx.logins.next().clone();
            let conn = ctx.connector.connect(&login.name, login.key).await?;
            let channel = match request {
                Request::Connection => None,
                _ => {
                    let mut ch = conn
                        .handle
                        .channel_open_session()
                        .await
                        .map_err(|e| Failure::russh("channel open", &e))?;
                    let asked = match request {
                        Request::Shell => Some(ch.request_shell(true).await),
                        Request::Exec(cmd) => Some(ch.exec(true, cmd.as_str()).await),
                        _ => None,
                    };
                    if let Some(asked) = asked {
                        asked.map_err(|e| Failure::russh("request", &e))?;
                        loop {
                            match ch.wait().await {
                                Some(ChannelMsg::Success) => break,
                                Some(ChannelMsg::Failure) => {
                                    return Err(Failure::new(
                                        "request refused",
                                        format!("{request:?} refused"),
                                    ));
                                }
                                Some(_) => {}
                                None => {
                                    return Err(Failure::new("disconnected", "the channel closed"));
                                }
                            }
                        }
                    }
                    Some(ch)
                }
            };
            Ok(Held {
                conn,
                _channel: channel,
            })
        })
        .await;
    match result {
        Ok(held) => {
            ctx.rec.ok("session", t0.elapsed());
            ctx.rec.opened();
            Some(held)
        }
        Err(f) => {
            ctx.fail("session", &f);
            None
        }
    }
}

fn measure(pid: u32) -> (u64, usize) {
    let rss = procfs::mem(pid).map(|m| m.rss_kib).unwrap_or(0);
    (rss, procfs::fds(pid))
}

/// Samples the watched processes once a second.
async fn sample(ctx: Arc<Ctx>, watch: Vec<Watch>) {
    let names: Vec<(&'static str, &'static str)> = watch
        .iter()
        .map(|w| {
            let rss: &'static str = Box::leak(format!("{} rss_kib", w.name).into_boxed_str());
            let fds: &'static str = Box::leak(format!("{} fds", w.name).into_boxed_str());
            (rss, fds)
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for (w, (rss, fds)) in watch.iter().zip(&names) {
            let (r, f) = measure(w.pid);
            ctx.rec.sample(rss, r as f64);
            ctx.rec.sample(fds, f as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!("connection".parse(), Ok(Request::Connection));
        assert!("none".parse::<Request>().is_err());
        assert_eq!("shell".parse(), Ok(Request::Shell));
        assert_eq!(
            "exec:sleep 600".parse(),
            Ok(Request::Exec("sleep 600".into()))
        );
        let e = "exec:".parse::<Request>().unwrap_err();
        assert!(
            e.contains("connection, channel, shell or exec:COMMAND"),
            "{e}"
        );
    }
}
