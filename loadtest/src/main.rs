//! connect-loadtest: see `connect-loadtest --help` and the README.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use loadtest::client::{self, Algorithms, Connector, HostKey, Jump};
use loadtest::logins::{self, Logins};
use loadtest::provision::{self, Api, Provision};
use loadtest::report::Recorder;
use loadtest::scenario::{Bounds, Ctx, bulk, churn, connect, idle, interactive, mixed};
use loadtest::target::{self, Sources};
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration the operator must fix.
const EXIT_CONFIG: u8 = 64;
/// Longest run accepted (a forgotten load generator must end by itself).
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Load generator for connect-proxy (or any SSH server): many concurrent
/// russh clients, latency percentiles, errors by kind, throughput.
///
/// Targets must be on loopback unless --allow-remote; every run ends after
/// --duration (and --count operations, if given).
#[derive(Parser, Debug)]
#[command(version, max_term_width = 100)]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// SSH address to load (`HOST:PORT`; port 22 if omitted).
    #[arg(long, global = true, default_value = "127.0.0.1:2222")]
    target: String,
    /// Permit targets (and control-plane URLs) outside 127.0.0.0/8 and ::1.
    #[arg(long, global = true)]
    allow_remote: bool,
    /// Log in as LOGIN (`user@session` for connect-proxy); repeatable.
    #[arg(long = "login", global = true, value_name = "LOGIN")]
    logins: Vec<String>,
    /// Private key for the --login logins (and file lines without one).
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// File of `LOGIN [KEY_PATH]` lines.
    #[arg(long = "logins", global = true, value_name = "FILE")]
    logins_file: Option<PathBuf>,
    /// Create this many users (one new ed25519 key each) through the
    /// control plane's API and log in as them.
    #[arg(long, global = true, default_value_t = 0)]
    provision_users: usize,
    /// The control plane for --provision-users (`connect-proxy --dev` prints it).
    #[arg(long, global = true, value_name = "URL")]
    control_url: Option<String>,
    /// File holding the control plane's admin token
    /// (or CONNECT_LOADTEST_ADMIN_TOKEN).
    #[arg(long, global = true, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Create this many sessions for the run, served by the Studio of the
    /// first --provision-sessions session (its endpoint and host key) and
    /// kept alive with heartbeats; the provisioned users log in to them.
    #[arg(long, global = true, default_value_t = 0)]
    provision_new_sessions: usize,
    /// Leave provisioned users, keys, memberships and sessions in place
    /// (by default they are removed when the run ends).
    #[arg(long, global = true)]
    keep_provisioned: bool,
    /// Sessions the provisioned users become members of.
    #[arg(long, global = true, value_delimiter = ',', value_name = "ID,...")]
    provision_sessions: Vec<String>,
    /// Name prefix of provisioned users.
    #[arg(long, global = true, default_value = "loadtest")]
    provision_prefix: String,
    /// Go through this SSH server first (`ssh -J`): `LOGIN@HOST:PORT`.
    #[arg(long, global = true, value_name = "LOGIN@HOST:PORT")]
    jump: Option<String>,
    /// Key for --jump (default: --key).
    #[arg(long, global = true)]
    jump_key: Option<PathBuf>,
    /// Require the target's host key to have this SHA256 fingerprint.
    #[arg(long, global = true, value_name = "SHA256:...")]
    host_key: Option<String>,
    /// Cipher, e.g. aes256-gcm@openssh.com (default: russh's preference).
    #[arg(long, global = true)]
    cipher: Option<String>,
    /// Key exchange, e.g. curve25519-sha256 (default: russh's preference).
    /// With --jump it is the jump leg's, the leg a gateway terminates; the
    /// inner leg keeps russh's order, as connect-proxy's Studio leg does.
    #[arg(long, global = true)]
    kex: Option<String>,
    /// Concurrent workers (sessions, for idle: logins in flight).
    #[arg(long, short = 'c', global = true, default_value_t = 8)]
    concurrency: usize,
    /// Operations started per second at most (churn: the arrival rate).
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// How long the run lasts at most.
    #[arg(long, short = 'd', global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many operations.
    #[arg(long, short = 'n', global = true)]
    count: Option<u64>,
    /// Start workers evenly over this time.
    #[arg(long, global = true, default_value = "0s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// One operation's time limit.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    op_timeout: Duration,
    /// Client threads (default: one per CPU).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Source addresses 127.0.0.1..127.0.0.N for a loopback target
    /// (~28,000 connections each).
    #[arg(long, global = true, default_value_t = 16)]
    sources: u32,
    /// Write the report as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Write latency.png and sessions.png into this directory.
    #[arg(long, global = true, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// TrueType font for plot labels (default: DejaVu Sans if installed).
    #[arg(long, global = true)]
    plot_font: Option<PathBuf>,
    /// Live progress: a redrawn line on a terminal, plain lines otherwise.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Measure the process `[NAME=]PID` (e.g. the proxy under test): its
    /// CPU seconds over the run (with reaped children) and per login, and
    /// for idle, its memory and descriptors per session; repeatable.
    #[arg(long, global = true, value_name = "[NAME=]PID")]
    watch: Vec<String>,
    /// Exit 0 even if up to this fraction of operations failed.
    #[arg(long, global = true, default_value_t = 0.0)]
    max_error_ratio: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProgressMode {
    Auto,
    Plain,
    Off,
}

#[derive(Subcommand, Debug, serde::Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
enum Scenario {
    /// Short SSH lives back to back: login, `exec COMMAND`, disconnect.
    Connect {
        /// Run on each connection (`--command ''`: log in and out only).
        #[arg(long, default_value = "true")]
        command: String,
    },
    /// Open N sessions and hold them; measure --watch processes.
    Idle {
        /// Sessions to open and hold.
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// How long all sessions stay open once every one was tried.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// connection (no channel), channel (a session channel, no request),
        /// shell, or exec:COMMAND.
        #[arg(long, default_value = "channel")]
        request: idle::Request,
    },
    /// Keystroke round trips through a pty.
    Interactive {
        #[arg(long, default_value = "cat")]
        command: String,
        #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
        think: Duration,
        #[arg(long, default_value_t = 40)]
        line: usize,
    },
    /// Verified downloads and uploads of --bytes each.
    Bulk {
        #[arg(long, default_value = "16MiB", value_parser = parse_bytes)]
        bytes: u64,
        #[arg(long, value_enum, default_value = "both")]
        direction: bulk::Direction,
    },
    /// Sessions opened at --rate per second, held, closed.
    Churn {
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// Sessions in flight at most; arrivals beyond are counted as errors.
        #[arg(long, default_value_t = 1000)]
        max_open: usize,
        /// Run on each session (default: none).
        #[arg(long)]
        command: Option<String>,
    },
    /// Idle sessions plus connect, interactive and bulk workers.
    Mixed {
        /// Workers per scenario, e.g. connect=1,interactive=2,bulk=1.
        #[arg(long, default_value = "connect=1,interactive=2,bulk=1")]
        mix: mixed::Mix,
        /// Idle sessions held for the whole run.
        #[arg(long, default_value_t = 0)]
        sessions: usize,
        #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
        bytes: u64,
        #[arg(long, default_value = "true")]
        command: String,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Idle { .. } => "idle",
            Self::Interactive { .. } => "interactive",
            Self::Bulk { .. } => "bulk",
            Self::Churn { .. } => "churn",
            Self::Mixed { .. } => "mixed",
        }
    }

    /// Sessions open at once at most, for the descriptor check.
    fn max_open(&self, c: &Common) -> usize {
        match self {
            Self::Idle { sessions, .. } => *sessions,
            Self::Churn { max_open, .. } => *max_open,
            Self::Mixed { sessions, .. } => sessions + c.concurrency,
            _ => c.concurrency,
        }
    }
}

/// `1048576`, `64KiB`, `16MiB`, `1GiB` (also `k`, `M`, `G` as powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a byte count like 16MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("{other:?}: unknown unit (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("connect-loadtest: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let c = &args.common;
    if c.duration.is_zero() || c.duration > MAX_DURATION {
        bail!("--duration must be between 1s and 24h");
    }
    if c.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if let Some(rate) = c.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        bail!("--rate must be a positive number of operations per second");
    }
    if !(0.0..=1.0).contains(&c.max_error_ratio) {
        bail!("--max-error-ratio must be between 0 and 1");
    }
    let target =
        target::resolve("--target", &c.target, c.allow_remote).map_err(anyhow::Error::msg)?;
    let jump = match &c.jump {
        None => None,
        Some(text) => {
            let (login, addr) = text
                .rsplit_once('@')
                .with_context(|| format!("--jump {text:?}: expected LOGIN@HOST:PORT"))?;
            let addr =
                target::resolve("--jump", addr, c.allow_remote).map_err(anyhow::Error::msg)?;
            let key_path = c
                .jump_key
                .as_ref()
                .or(c.key.as_ref())
                .context("--jump needs --jump-key or --key")?;
            Some(Jump {
                addr,
                login: login.to_owned(),
                key: client::load_key(key_path)?,
                config: client::client_config(&Algorithms {
                    cipher: c.cipher.clone(),
                    kex: c.kex.clone(),
                })?,
            })
        }
    };
    let watch = c
        .watch
        .iter()
        .map(|w| parse_watch(w))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let nofile = raise_nofile();
    let open = args.scenario.max_open(c);
    // One socket per session (the jump host's; the inner leg is a channel),
    // plus room for the runtime and files.
    if let Some(limit) = nofile
        && open as u64 + 64 > limit
    {
        let per = limit.saturating_sub(64).max(1) as usize;
        bail!(
            "{open} sessions need about {} file descriptors and this process may open {limit}; \
             run {} connect-loadtest processes of at most {per} sessions each",
            open + 64,
            open.div_ceil(per)
        );
    }
    let config = client::client_config(&Algorithms {
        cipher: c.cipher.clone(),
        kex: if jump.is_some() { None } else { c.kex.clone() },
    })?;

    let threads = c
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .thread_name("loadtest")
        .build()
        .context("starting the runtime")?;

    let mut list = logins::from_args(&c.logins, c.logins_file.as_deref(), c.key.as_deref())?;
    let provisioned = if c.provision_users > 0 || c.provision_new_sessions > 0 {
        let url = c
            .control_url
            .clone()
            .context("--provision-users needs --control-url")?;
        target::check_url("--control-url", &url, c.allow_remote).map_err(anyhow::Error::msg)?;
        let admin_token = match &c.admin_token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("--admin-token-file {}", path.display()))?
                .trim()
                .to_owned(),
            None => std::env::var("CONNECT_LOADTEST_ADMIN_TOKEN").context(
                "--provision-users needs --admin-token-file or CONNECT_LOADTEST_ADMIN_TOKEN",
            )?,
        };
        let api = Api::new(&url, &admin_token);
        let provision = Provision {
            url,
            admin_token,
            users: c.provision_users,
            prefix: c.provision_prefix.clone(),
            sessions: c.provision_sessions.clone(),
            new_sessions: c.provision_new_sessions,
        };
        let done = runtime.block_on(provision::provision(&api, &provision))?;
        eprintln!(
            "created through the control plane: {}; waiting for the proxy to see them",
            done.summary()
        );
        list.extend(done.logins.iter().cloned());
        // The proxy learns of changes over its watch stream (milliseconds).
        std::thread::sleep(Duration::from_millis(500));
        let heartbeats = runtime.block_on(async { provision::keep_alive(&api, &done) });
        Some((api, done, heartbeats))
    } else {
        None
    };
    let logins = Logins::new(list)?;

    let bounds = Bounds {
        duration: c.duration,
        count: c.count,
        rate: match (&args.scenario, c.rate) {
            (Scenario::Churn { .. }, None) => Some(10.0),
            (_, rate) => rate,
        },
        ramp: c.ramp,
        op_timeout: c.op_timeout,
    };
    let connector = Connector {
        config,
        target,
        jump,
        host_key: c
            .host_key
            .as_deref()
            .map_or_else(HostKey::any, HostKey::pinned),
        sources: Sources::new(target, c.sources),
    };
    let rec = Recorder::new();
    let ctx = Arc::new(Ctx::new(connector, logins, rec.clone(), &bounds));

    let meta_knobs = json!({
        "scenario": args.scenario.name(),
        "target": target.to_string(),
        "jump": c.jump,
        "concurrency": c.concurrency,
        "rate": bounds.rate,
        "duration_s": c.duration.as_secs_f64(),
        "count": c.count,
        "ramp_s": c.ramp.as_secs_f64(),
        "cipher": c.cipher,
        "kex": c.kex,
        "threads": threads,
        "sources": ctx.connector.sources.len(),
        "logins": ctx.logins.len(),
        "scenario_args": args.scenario,
    });

    let cpu_before: Vec<_> = watch
        .iter()
        .map(|w| loadtest::procfs::cpu(w.pid).unwrap_or_default())
        .collect();
    let progress = Progress::start(c.progress, rec.clone());
    let grace = c.op_timeout + Duration::from_secs(10);
    let keep_provisioned = c.keep_provisioned;
    let scenario = args.scenario;
    let concurrency = c.concurrency;
    let costs = runtime.block_on(async {
        let work = tokio::spawn(drive(ctx.clone(), scenario, concurrency, watch.clone()));
        let abort = work.abort_handle();
        let stopper = {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("\ninterrupted: stopping (Ctrl-C again to quit at once)");
                    ctx.stop();
                    let _ = tokio::signal::ctrl_c().await;
                    std::process::exit(130);
                }
            })
        };
        let hard_end = ctx.deadline + grace;
        let costs = tokio::select! {
            r = work => r.unwrap_or_default(),
            _ = tokio::time::sleep_until(hard_end.into()) => {
                ctx.stop();
                abort.abort();
                ctx.rec.error("run", "operations still running at the end were abandoned");
                Vec::new()
            }
        };
        stopper.abort();
        costs
    });
    progress.finish();
    if let Some((api, done, heartbeats)) = &provisioned {
        if let Some(h) = heartbeats {
            h.abort();
        }
        if keep_provisioned {
            eprintln!("kept what was provisioned (--keep-provisioned)");
        } else {
            runtime.block_on(provision::cleanup(api, done));
        }
    }

    let mut meta = meta_knobs;
    meta["idle_cost"] = json!(costs);
    meta["error_examples"] = json!(ctx.examples());
    meta["provisioned"] = provisioned
        .as_ref()
        .map_or(serde_json::Value::Null, |(_, done, _)| done.summary());
    let mut report = rec.finish(meta);
    // After the report: waiting for reaped children must not stretch the
    // run's elapsed time (and every rate with it).
    let cpu = watch_cpu(&watch, &cpu_before);
    let logins = report.ops.get("login").map_or(0, |o| o.ok);
    let cpu: Vec<_> = cpu
        .into_iter()
        .map(|(w, cpu_s)| {
            let per_login_us = (logins > 0).then(|| cpu_s * 1e6 / logins as f64);
            json!({ "name": w.name, "pid": w.pid, "cpu_s": cpu_s, "cpu_us_per_login": per_login_us })
        })
        .collect();
    report.meta["watch_cpu"] = json!(cpu);
    print!("{}", report.table());
    for w in &cpu {
        println!(
            "{} (pid {}): {:.2} CPU-s during the run{}",
            w["name"].as_str().unwrap_or_default(),
            w["pid"],
            w["cpu_s"].as_f64().unwrap_or(0.0),
            w["cpu_us_per_login"]
                .as_f64()
                .map_or(String::new(), |us| format!(", {us:.0} µs per login")),
        );
    }
    for cost in &costs {
        println!(
            "{} (pid {}): {} sessions held; RSS {} → {} KiB ({}), fds {} → {} ({})",
            cost.name,
            cost.pid,
            cost.sessions_held,
            cost.rss_kib_before,
            cost.rss_kib_held,
            cost.kib_per_session
                .map_or("n/a".into(), |k| format!("{k:.1} KiB per session")),
            cost.fds_before,
            cost.fds_held,
            cost.fds_per_session
                .map_or("n/a".into(), |f| format!("{f:.2} per session")),
        );
    }
    let examples = ctx.examples();
    if !examples.is_empty() {
        println!("first error of each kind:");
        for (kind, detail) in &examples {
            println!("  {kind}: {detail}");
        }
    }
    if let Some(path) = &c.json {
        report
            .write_json(path)
            .with_context(|| format!("--json {}", path.display()))?;
        eprintln!("report: {}", path.display());
    }
    if let Some(dir) = &c.plots {
        match loadtest::plot::write(&report, dir, c.plot_font.as_deref()) {
            Ok(paths) => {
                for p in paths {
                    eprintln!("plot: {}", p.display());
                }
            }
            Err(e) => eprintln!("connect-loadtest: plots not written: {e}"),
        }
    }
    drop(runtime);

    let total_ok: u64 = report.ops.values().map(|o| o.ok).sum();
    let errors = report.total_errors();
    let ratio = if total_ok + errors == 0 {
        1.0
    } else {
        errors as f64 / (total_ok + errors) as f64
    };
    if total_ok == 0 {
        eprintln!("connect-loadtest: no operation succeeded");
        return Ok(ExitCode::FAILURE);
    }
    if ratio > c.max_error_ratio {
        eprintln!(
            "connect-loadtest: {errors} errors ({:.2}% of operations; --max-error-ratio {})",
            ratio * 100.0,
            c.max_error_ratio
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn drive(
    ctx: Arc<Ctx>,
    scenario: Scenario,
    concurrency: usize,
    watch: Vec<idle::Watch>,
) -> Vec<idle::Cost> {
    let command = |c: String| (!c.is_empty()).then_some(c);
    match scenario {
        Scenario::Connect { command: cmd } => {
            connect::run(
                ctx,
                connect::Params {
                    concurrency,
                    command: command(cmd),
                },
            )
            .await;
            Vec::new()
        }
        Scenario::Idle {
            sessions,
            hold,
            request,
        } => {
            idle::run(
                ctx,
                idle::Params {
                    sessions,
                    concurrency,
                    hold,
                    request,
                    watch,
                },
            )
            .await
        }
        Scenario::Interactive {
            command: cmd,
            think,
            line,
        } => {
            interactive::run(
                ctx,
                interactive::Params {
                    concurrency,
                    command: cmd,
                    think,
                    line,
                },
            )
            .await;
            Vec::new()
        }
        Scenario::Bulk { bytes, direction } => {
            bulk::run(
                ctx,
                bulk::Params {
                    concurrency,
                    bytes,
                    direction,
                },
            )
            .await;
            Vec::new()
        }
        Scenario::Churn {
            hold,
            max_open,
            command: cmd,
        } => {
            churn::run(
                ctx,
                churn::Params {
                    max_open,
                    hold,
                    command: cmd.and_then(command),
                },
            )
            .await;
            Vec::new()
        }
        Scenario::Mixed {
            mix,
            sessions,
            bytes,
            command: cmd,
        } => {
            mixed::run(
                ctx,
                mixed::Params {
                    mix,
                    connect: connect::Params {
                        concurrency,
                        command: command(cmd),
                    },
                    interactive: interactive::Params {
                        concurrency,
                        command: "cat".into(),
                        think: Duration::from_millis(50),
                        line: 40,
                    },
                    bulk: bulk::Params {
                        concurrency,
                        bytes,
                        direction: bulk::Direction::Both,
                    },
                    idle: idle::Params {
                        sessions,
                        concurrency,
                        hold: Duration::MAX,
                        request: idle::Request::Channel,
                        watch: Vec::new(),
                    },
                },
            )
            .await
        }
    }
}

/// `[NAME=]PID` of a running process (checked at start so a typo is not a
/// silent zero in the report).
fn parse_watch(text: &str) -> Result<idle::Watch, String> {
    let (name, pid) = match text.split_once('=') {
        Some((n, p)) => (n.to_owned(), p),
        None => (format!("pid {text}"), text),
    };
    let pid: u32 = pid
        .parse()
        .map_err(|_| format!("--watch {text:?}: expected [NAME=]PID"))?;
    if !loadtest::procfs::alive(pid) {
        return Err(format!("--watch {text:?}: no process {pid} is running"));
    }
    Ok(idle::Watch { name, pid })
}

/// CPU seconds each watched process spent since `before`, its reaped
/// children included (sshd forks per connection: waits up to 5 s for them).
fn watch_cpu(watch: &[idle::Watch], before: &[loadtest::procfs::Cpu]) -> Vec<(idle::Watch, f64)> {
    watch
        .iter()
        .zip(before)
        .map(|(w, before)| {
            loadtest::procfs::wait_children_reaped(w.pid, Duration::from_secs(5));
            let after = loadtest::procfs::cpu(w.pid).unwrap_or_default();
            (w.clone(), after.minus(before).with_children())
        })
        .collect()
}

/// Raises the soft descriptor limit to the hard one; returns the limit.
fn raise_nofile() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// The live progress line.
struct Progress {
    task: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    fn start(mode: ProgressMode, rec: Recorder) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let (bar, every) = match mode {
            ProgressMode::Off => {
                return Self { task: None, stop };
            }
            ProgressMode::Auto if tty => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                (Some(bar), Duration::from_millis(250))
            }
            _ => (None, Duration::from_secs(5)),
        };
        let flag = stop.clone();
        let task = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                let line = line(&rec.progress());
                match &bar {
                    Some(bar) => {
                        bar.set_message(line);
                        bar.tick();
                    }
                    None => eprintln!("{line}"),
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Self {
            task: Some(task),
            stop,
        }
    }

    fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.task {
            let _ = t.join();
        }
    }
}

fn line(p: &loadtest::report::Progress) -> String {
    let p99 = p.recent_p99.map_or("-".to_owned(), |d| {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    });
    format!(
        "{:>6.1}s  operations {} ({:.0}/s, p99 {p99})  errors {}  open {}  {:.1} MiB",
        p.elapsed.as_secs_f64(),
        p.ok,
        p.ops_per_s,
        p.errors,
        p.open,
        p.bytes as f64 / (1 << 20) as f64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_binary_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(
            parse_bytes("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_bytes("MiB").unwrap_err().contains("byte count"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
