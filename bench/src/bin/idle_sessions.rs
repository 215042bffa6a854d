//! Idle proxied sessions: opens `--count` SSH connections through
//! connect-proxy, each with one session channel, holds them, and samples
//! the proxies' (and Studios') memory and descriptors from `/proc`.
//!
//! ```text
//! idle-sessions --addr 127.0.0.1:2222 --login bench@0000aa01 --key user.key \
//!     --count 1000 --pid PROXY_PID --studio-pid STUDIO_PID
//! ```
//!
//! Connection `i` goes to `--addr[i % addrs]` as `--login[i % logins]`
//! (several proxies, several Studios), from source address
//! `127.0.0.(1 + i % sources)`.
//!
//! What each connection holds: by default (`--request none`) a session
//! channel with no request on it. The proxy has then done everything it
//! does for an idle shell: user leg authenticated, its own SSH connection
//! to the Studio, the channel opened on both legs and bridged (two tasks);
//! the Studio runs no process for it. `--request exec:CMD` starts a
//! command instead (e.g. `exec:sleep 1000000`: one process per session on
//! the Studio side); `--request shell` a login shell (which reads the
//! account's rc files: expensive on this machine).
//!
//! Steps, with a JSON line on stdout at the end: warm-up connections
//! opened and closed (so one-off allocations are not counted), baseline
//! sample, open all (`--concurrency` at a time), settle, sample, measure
//! CPU while idle for `--hold` seconds, close all, settle, sample again
//! (what is left over after close).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::{client, procfs};
use clap::Parser;
use russh::ChannelMsg;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, required = true)]
    addr: Vec<SocketAddr>,
    /// `user@session`; several spread the connections over Studios.
    #[arg(long, required = true)]
    login: Vec<String>,
    #[arg(long)]
    key: PathBuf,
    #[arg(long, default_value_t = 1000)]
    count: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// `none`, `shell` or `exec:COMMAND`.
    #[arg(long, default_value = "none")]
    request: String,
    /// Proxy processes to sample.
    #[arg(long)]
    pid: Vec<u32>,
    /// Studio (connect-client) processes to sample.
    #[arg(long)]
    studio_pid: Vec<u32>,
    #[arg(long, default_value_t = 1)]
    sources: u32,
    #[arg(long, default_value_t = 4)]
    warmup: usize,
    /// Seconds to wait after opening / closing before sampling.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Seconds to hold the sessions open while measuring idle CPU.
    #[arg(long, default_value_t = 10)]
    hold: u64,
    /// Give up on opening one session after this long.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

struct Held {
    handle: russh::client::Handle<client::AnyHostKey>,
    _channel: russh::Channel<russh::client::Msg>,
}

async fn open(
    args: &Args,
    config: Arc<russh::client::Config>,
    key: Arc<russh::keys::PrivateKey>,
    sources: &[Option<std::net::IpAddr>],
    i: usize,
) -> Result<Held> {
    let addr = args.addr[i % args.addr.len()];
    let login = &args.login[i % args.login.len()];
    let tcp = client::tcp(addr, sources[i % sources.len()]).await?;
    let handle = client::session(config, tcp, login, key).await?;
    let mut channel = handle
        .channel_open_session()
        .await
        .context("open session")?;
    let request = args.request.as_str();
    if request != "none" {
        if request == "shell" {
            channel.request_shell(true).await?;
        } else if let Some(cmd) = request.strip_prefix("exec:") {
            channel.exec(true, cmd).await?;
        } else {
            bail!("--request: none, shell or exec:COMMAND");
        }
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => bail!("request refused"),
                Some(_) => continue,
                None => bail!("channel closed before the reply"),
            }
        }
    }
    Ok(Held {
        handle,
        _channel: channel,
    })
}

fn sample(pids: &[u32]) -> Vec<Value> {
    pids.iter()
        .map(|&pid| {
            let m = procfs::mem(pid).unwrap_or_default();
            json!({
                "pid": pid,
                "alive": procfs::alive(pid),
                "rss_kib": m.rss_kib,
                "rss_anon_kib": m.rss_anon_kib,
                "fds": procfs::fds(pid),
                "threads": procfs::threads(pid),
            })
        })
        .collect()
}

fn sum(samples: &[Value], field: &str) -> i64 {
    samples.iter().map(|s| s[field].as_i64().unwrap_or(0)).sum()
}

fn cpu_total(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|&p| procfs::cpu(p).map(|c| c.own()).unwrap_or(0.0))
        .sum()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    let config = client::config(None)?;
    let key = client::load_key(&args.key)?;
    let sources = Arc::new(client::sources(args.sources));

    // Warm-up: first connections pay for one-off allocations.
    for i in 0..args.warmup {
        let held = open(&args, config.clone(), key.clone(), &sources, i).await?;
        client::close(held.handle).await;
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let base = sample(&args.pid);
    let base_studio = sample(&args.studio_pid);

    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let permit = limit.clone().acquire_owned().await?;
        let (args, config, key, sources) =
            (args.clone(), config.clone(), key.clone(), sources.clone());
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(args.timeout_secs),
                open(&args, config, key, &sources, i),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
            drop(permit);
            r
        }));
    }
    let mut held = Vec::with_capacity(args.count);
    let mut errors = Vec::new();
    let mut failed = 0usize;
    for t in tasks {
        match t.await? {
            Ok(h) => held.push(h),
            Err(e) => {
                failed += 1;
                if errors.len() < 5 {
                    errors.push(format!("{e:#}"));
                }
            }
        }
    }
    let open_s = started.elapsed().as_secs_f64();
    eprintln!(
        "idle-sessions: {} up, {failed} failed, in {open_s:.1} s",
        held.len()
    );

    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let up = sample(&args.pid);
    let up_studio = sample(&args.studio_pid);
    let cpu0 = cpu_total(&args.pid);
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let idle_cpu = cpu_total(&args.pid) - cpu0;
    let still = sample(&args.pid);
    let alive_connections = held.iter().filter(|h| !h.handle.is_closed()).count();

    let n = held.len();
    let closing = Instant::now();
    let mut closers = Vec::new();
    for h in held {
        closers.push(tokio::spawn(client::close(h.handle)));
    }
    for c in closers {
        let _ = c.await;
    }
    let close_s = closing.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let after = sample(&args.pid);
    let after_studio = sample(&args.studio_pid);

    let delta = sum(&up, "rss_kib") - sum(&base, "rss_kib");
    let delta_anon = sum(&up, "rss_anon_kib") - sum(&base, "rss_anon_kib");
    let per = |kib: i64| {
        if n > 0 {
            kib as f64 / n as f64
        } else {
            f64::NAN
        }
    };
    let out = json!({
        "count": args.count,
        "open": n,
        "failed": failed,
        "errors": errors,
        "request": args.request,
        "open_seconds": open_s,
        "alive_after_hold": alive_connections,
        "proxy": {
            "base": base, "up": up, "after_hold": still, "after_close": after,
            "rss_delta_kib": delta,
            "rss_anon_delta_kib": delta_anon,
            "kib_per_session": per(delta),
            "anon_kib_per_session": per(delta_anon),
            "fds_delta": sum(&up, "fds") - sum(&base, "fds"),
            "rss_after_close_minus_base_kib": sum(&after, "rss_kib") - sum(&base, "rss_kib"),
            "fds_after_close_minus_base": sum(&after, "fds") - sum(&base, "fds"),
            "idle_cpu_s": idle_cpu,
            "idle_cpu_percent": idle_cpu * 100.0 / args.hold as f64,
        },
        "studio": {
            "base": base_studio, "up": up_studio, "after_close": after_studio,
            "kib_per_session": per(sum(&up_studio, "rss_kib") - sum(&base_studio, "rss_kib")),
        },
        "close_seconds": close_s,
    });
    println!("{out}");
    Ok(())
}
