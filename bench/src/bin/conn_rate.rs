//! New connections per second, and the CPU each one costs the process
//! under test (connect-proxy, or sshd as a ProxyJump host).
//!
//! Every connection does the whole life of a short SSH command: TCP
//! connect, key exchange, public-key authentication, a session channel
//! with `exec COMMAND`, wait for its exit status and close, disconnect.
//!
//! ```text
//! # through connect-proxy, as user@session
//! conn-rate --mode proxy --addr 127.0.0.1:2222 --login bench@0000aa01 \
//!     --key user.key --count 1500 --concurrency 8 --measure proxy=PID
//! # through OpenSSH sshd as a jump host: outer SSH to sshd, direct-tcpip
//! # to the Studio, inner SSH to the Studio over that channel
//! conn-rate --mode jump --addr 127.0.0.1:PORT --login root --key user.key \
//!     --target 127.0.0.1:STUDIO --target-login bench --target-key proxy.key \
//!     --count 1500 --concurrency 8 --measure sshd=PID
//! ```
//!
//! `--measure name=pid` reads the process's CPU time (its threads, and its
//! reaped children: sshd forks per connection) before and after, waiting
//! for children to be reaped; the JSON line on stdout has the totals and
//! the CPU per connection. `--kex` fixes the user leg's key exchange.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::client;
use bench::procfs;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// SSH to `--addr` as `--login` and run the command there.
    Proxy,
    /// SSH to `--addr`, open direct-tcpip to `--target`, SSH through it.
    Jump,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum, default_value = "proxy")]
    mode: Mode,
    #[arg(long)]
    addr: SocketAddr,
    /// User name on the first leg (`user@session` for connect-proxy).
    #[arg(long)]
    login: String,
    #[arg(long)]
    key: PathBuf,
    /// Jump mode: the Studio's SSH address, login and key.
    #[arg(long)]
    target: Option<SocketAddr>,
    #[arg(long, default_value = "bench")]
    target_login: String,
    #[arg(long)]
    target_key: Option<PathBuf>,
    #[arg(long, default_value = "true")]
    command: String,
    /// Connections measured.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Connections before measuring (not counted).
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u64,
    /// Key exchange on the first leg (e.g. curve25519-sha256); default:
    /// russh's order, mlkem768x25519-sha256 first.
    #[arg(long)]
    kex: Option<String>,
    /// Spread connections over this many source addresses 127.0.0.x.
    #[arg(long, default_value_t = 1)]
    sources: u32,
    /// `name=pid` of a process whose CPU to report.
    #[arg(long)]
    measure: Vec<String>,
    /// Give up on one connection after this long.
    #[arg(long, default_value = "30")]
    timeout_secs: u64,
}

struct Ctx {
    args: Args,
    outer: Arc<russh::client::Config>,
    inner: Arc<russh::client::Config>,
    key: Arc<russh::keys::PrivateKey>,
    target_key: Option<Arc<russh::keys::PrivateKey>>,
    sources: Vec<Option<std::net::IpAddr>>,
}

async fn one(ctx: &Ctx, n: u64) -> Result<()> {
    let a = &ctx.args;
    let source = ctx.sources[(n as usize) % ctx.sources.len()];
    let tcp = client::tcp(a.addr, source).await?;
    let outer = client::session(ctx.outer.clone(), tcp, &a.login, ctx.key.clone()).await?;
    let status = match a.mode {
        Mode::Proxy => client::exec(&outer, &a.command).await?,
        Mode::Jump => {
            let target = a.target.context("--target")?;
            let channel = outer
                .channel_open_direct_tcpip(
                    target.ip().to_string(),
                    target.port().into(),
                    "127.0.0.1",
                    0,
                )
                .await
                .context("direct-tcpip")?;
            let inner = client::session(
                ctx.inner.clone(),
                channel.into_stream(),
                &a.target_login,
                ctx.target_key.clone().context("--target-key")?,
            )
            .await?;
            let status = client::exec(&inner, &a.command).await?;
            client::close(inner).await;
            status
        }
    };
    client::close(outer).await;
    if status != 0 {
        bail!("exit status {status}");
    }
    Ok(())
}

async fn batch(
    ctx: Arc<Ctx>,
    count: u64,
    hist: Option<Arc<std::sync::Mutex<Histogram<u64>>>>,
) -> (u64, Vec<String>) {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..ctx.args.concurrency.min(count.max(1)) {
        let (ctx, next, failed, errors, hist) = (
            ctx.clone(),
            next.clone(),
            failed.clone(),
            errors.clone(),
            hist.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let started = Instant::now();
                let limit = Duration::from_secs(ctx.args.timeout_secs);
                let result = tokio::time::timeout(limit, one(&ctx, n))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
                match result {
                    Ok(()) => {
                        if let Some(h) = &hist
                            && let Ok(mut h) = h.lock()
                        {
                            let _ = h.record(started.elapsed().as_micros() as u64);
                        }
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut v) = errors.lock()
                            && v.len() < 5
                        {
                            v.push(format!("{e:#}"));
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let errs = errors.lock().map(|v| v.clone()).unwrap_or_default();
    (failed.load(Ordering::Relaxed), errs)
}

fn measured(args: &Args) -> Result<Vec<(String, u32)>> {
    args.measure
        .iter()
        .map(|m| {
            let (name, pid) = m.split_once('=').context("--measure name=pid")?;
            Ok((name.to_owned(), pid.parse().context("pid")?))
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let procs = measured(&args)?;
    let ctx = Arc::new(Ctx {
        outer: client::config(args.kex.as_deref())?,
        inner: client::config(None)?,
        key: client::load_key(&args.key)?,
        target_key: args
            .target_key
            .as_deref()
            .map(client::load_key)
            .transpose()?,
        sources: client::sources(args.sources),
        args,
    });

    let (warm_failed, warm_errors) = batch(ctx.clone(), ctx.args.warmup, None).await;
    if ctx.args.warmup > 0 && warm_failed == ctx.args.warmup {
        bail!("every warm-up connection failed: {warm_errors:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, pid) in &procs {
        procfs::wait_children_reaped(*pid, Duration::from_secs(5));
    }
    let before: Vec<_> = procs
        .iter()
        .map(|(_, pid)| procfs::cpu(*pid).unwrap_or_default())
        .collect();

    let hist = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).context("histogram")?,
    ));
    let started = Instant::now();
    let (failed, errors) = batch(ctx.clone(), ctx.args.count, Some(hist.clone())).await;
    let elapsed = started.elapsed().as_secs_f64();

    // The servers finish closing after the client is done.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cpu = serde_json::Map::new();
    let ok = ctx.args.count - failed;
    for ((name, pid), b) in procs.iter().zip(&before) {
        let reaped = procfs::wait_children_reaped(*pid, Duration::from_secs(10));
        let d = procfs::cpu(*pid).unwrap_or_default().minus(b);
        cpu.insert(
            name.clone(),
            json!({
                "pid": pid,
                "own_s": d.own(),
                "children_s": d.children_user + d.children_system,
                "total_s": d.with_children(),
                "us_per_conn": if ok > 0 { d.with_children() * 1e6 / ok as f64 } else { f64::NAN },
                "children_reaped": reaped,
            }),
        );
    }
    let h = hist.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let out = json!({
        "mode": format!("{:?}", ctx.args.mode).to_lowercase(),
        "kex": ctx.args.kex.clone().unwrap_or_else(|| "default".into()),
        "command": ctx.args.command,
        "concurrency": ctx.args.concurrency,
        "count": ctx.args.count,
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "seconds": elapsed,
        "conn_per_s": ok as f64 / elapsed,
        "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": h.max() as f64 / 1000.0 },
        "cpu": cpu,
    });
    println!("{out}");
    Ok(())
}
