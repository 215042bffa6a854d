//! Data-plane benchmark driver: starts a whole platform on 127.0.0.1 from
//! the release binaries (connect-control, connect-client Studios,
//! connect-proxy on io_uring and on epoll, OpenSSH sshd as a ProxyJump
//! peer) and measures, in alternating rounds:
//!
//! 1. bulk throughput with OpenSSH's `ssh -c CIPHER` through the proxy
//!    (download: `head -c BYTES /dev/zero`; upload: `head -c BYTES >/dev/null`
//!    fed from /dev/zero), and the proxy's CPU seconds per GiB;
//! 2. new connections per second and the proxy's CPU per connection
//!    (`connect-loadtest connect`: handshake, auth, upstream, `exec true`,
//!    close);
//! 3. keystroke round trips through a pty running `cat`
//!    (`connect-loadtest interactive`), and the proxy's CPU per keystroke;
//! 4. memory per idle proxied session (`connect-loadtest idle`), at each
//!    `--idle` count, split over several proxy processes of at most
//!    `--idle-per-proxy` sessions each (the fd limit), one load generator
//!    per proxy process, all holding their sessions at once.
//!
//! CPU is read from `/proc/<pid>/stat` (utime + stime) of the process under
//! test; sshd's per-connection processes are counted through the master's
//! reaped-children times (or, while they live, by walking its process
//! tree). Everything is written to `--out` (JSON) and a markdown summary
//! next to it; each load-generator run leaves its JSON report and output in
//! the work directory. Run it through `bench/proxy-bench.sh`, which builds
//! and snapshots the binaries first.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::{median, procfs};
use clap::Parser;
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "bench-admin-token-000000";
const PROXY_TOKEN: &str = "bench-proxy-token-000000";
const USER: &str = "bench";
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const START: Duration = Duration::from_secs(30);

/// Targets from the issue.
const TARGET_CPU_S_PER_GIB_AES: f64 = 0.85;
const TARGET_US_PER_CONN: f64 = 500.0;
const TARGET_KIB_PER_SESSION: f64 = 32.0;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Where connect-proxy, connect-client, connect-control and
    /// connect-loadtest are (default: next to this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// Scratch directory (keys, logs, databases); a temporary one by default.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Rounds of the idle-session measurement (slow at 10,000).
    #[arg(long, default_value_t = 2)]
    idle_rounds: u32,
    /// Sections to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,connrate,interactive,idle"
    )]
    only: Vec<String>,
    /// `CONNECT_IO` values compared.
    #[arg(long, value_delimiter = ',', default_value = "uring,epoll")]
    io: Vec<String>,
    /// Data-plane threads of each proxy.
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// connect-proxy's `CONNECT_LOG_LEVEL` (its default is info).
    #[arg(long, default_value = "info")]
    proxy_log_level: String,
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
    )]
    ciphers: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "down,up")]
    directions: Vec<String>,
    #[arg(long, default_value_t = 1500)]
    conn_count: u64,
    #[arg(long, default_value_t = 8)]
    conn_concurrency: u64,
    /// User-leg key exchanges for the connection benchmark.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "curve25519-sha256,mlkem768x25519-sha256"
    )]
    conn_kex: Vec<String>,
    #[arg(long, default_value = "true")]
    conn_command: String,
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    idle: Vec<usize>,
    #[arg(long, default_value_t = 5000)]
    idle_per_proxy: usize,
    #[arg(long, default_value_t = 2000)]
    idle_per_studio: usize,
    /// What each idle session holds (connect-loadtest's `--request`):
    /// `channel` (a session channel with no request on it, the figure
    /// published so far), `connection` (an authenticated connection only),
    /// `shell`, `exec:COMMAND`.
    #[arg(long, default_value = "channel")]
    idle_request: String,
    #[arg(long, default_value_t = 64)]
    idle_concurrency: usize,
    #[arg(long, default_value_t = 10)]
    idle_hold: u64,
    /// Proxy environments the idle measurement is repeated with:
    /// `default`, or `VAR=VALUE[+VAR=VALUE]` (e.g. `MIMALLOC_ALLOW_THP=0`:
    /// no transparent huge pages in mimalloc's arenas).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "default,MIMALLOC_ALLOW_THP=0"
    )]
    idle_variants: Vec<String>,
    /// Interactive sessions typing at once.
    #[arg(long, default_value_t = 16)]
    interactive_concurrency: usize,
    /// Pause between keystrokes (connect-loadtest's `--think`).
    #[arg(long, default_value = "20ms")]
    interactive_think: String,
    /// Seconds each interactive run lasts; its proxy CPU is read from
    /// second 3 to one second before the end (all sessions up).
    #[arg(long, default_value_t = 10)]
    interactive_duration: u64,
    #[arg(long, default_value = "cat")]
    interactive_command: String,
    /// Spread client connections over this many 127.0.0.x addresses.
    #[arg(long, default_value_t = 1)]
    sources: u32,
    /// The OpenSSH peer (sshd as a ProxyJump host); off with --no-openssh.
    #[arg(long, default_value = "/usr/sbin/sshd")]
    sshd: PathBuf,
    #[arg(long)]
    no_openssh: bool,
    /// Upper bound on any single step (one transfer, one helper run).
    #[arg(long, default_value_t = 900)]
    step_timeout: u64,
    /// Only rewrite the summary (JSON `summary` and the .md) of an
    /// existing `--out` file, without measuring.
    #[arg(long)]
    resummarize: bool,
}

/// A child process we started, killed (by its own pid) when dropped.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the JSON log line with this `msg`.
    fn wait_msg(&mut self, msg: &str) -> Result<Value> {
        let deadline = Instant::now() + START;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line)
                    && v["msg"] == msg
                {
                    return Ok(v);
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before {msg:?}; log:\n{}",
                    self.name,
                    tail(&text, 20)
                );
            }
            if Instant::now() > deadline {
                bail!("{}: no {msg:?} in {START:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Log lines at warn or error, and panics, for the report.
    fn complaints(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.contains("\"level\":\"warn\"")
                    || l.contains("\"level\":\"error\"")
                    || l.contains("panicked")
            })
            .map(str::to_owned)
            .collect()
    }

    fn stop(mut self) -> Result<Option<i32>> {
        let exited = self.child.try_wait()?;
        if exited.is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.wait();
        Ok(exited.and_then(|s| s.code()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A helper program running with its output collected.
/// Killed (by its own pid) if dropped unfinished.
struct Running {
    what: String,
    child: Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn spawn(mut cmd: Command, what: &str) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("{what}: {cmd:?}"))?;
        let mut out = child.stdout.take().context("stdout")?;
        let mut err = child.stderr.take().context("stderr")?;
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        Ok(Self {
            what: what.to_owned(),
            child,
            out: Some(out),
            err: Some(err),
        })
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `deadline` (then kills it); returns (status, stdout,
    /// stderr).
    fn finish(mut self, deadline: Instant) -> Result<(i32, String, String)> {
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{}: killed at its deadline", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let joined = |t: Option<std::thread::JoinHandle<String>>| {
            t.and_then(|t| t.join().ok()).unwrap_or_default()
        };
        let out = joined(self.out.take());
        let err = joined(self.err.take());
        Ok((status.code().unwrap_or(-1), out, err))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds of `root` and of every process under it, each with its
/// reaped children. sshd's per-connection processes live as long as their
/// sessions: while sessions are held, the master's reaped-children times
/// do not have them yet.
fn tree_cpu(root: u32) -> f64 {
    let mut total = 0.0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        total += procfs::cpu(pid).map(|c| c.with_children()).unwrap_or(0.0);
        todo.extend(procfs::children(pid));
    }
    total
}

fn ssh_keygen(path: &Path) -> Result<String> {
    let status = Command::new("ssh-keygen")
        .args(["-t", "ed25519", "-N", "", "-q", "-C", "bench", "-f"])
        .arg(path)
        .status()?;
    if !status.success() {
        bail!("ssh-keygen failed");
    }
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path.with_extension("pub"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .nth(1)
        .context("fingerprint")?
        .to_owned())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn port_of(addr: &Value) -> Result<u16> {
    addr.as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .context("port")
}

/// One running connect-proxy.
struct Proxy {
    proc: Proc,
    port: u16,
    management: u16,
    backend: String,
}

/// A connect-client Studio.
struct Studio {
    proc: Proc,
    session: String,
    addr: String,
}

struct Bench {
    args: Args,
    bin: PathBuf,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    control_url: String,
    _control: Proc,
    proxy_key: PathBuf,
    user_key: PathBuf,
    known_hosts: PathBuf,
    studios: Vec<Studio>,
    sshd: Option<(Proc, u16)>,
    login: String,
    proxies_started: usize,
    /// connect-loadtest runs so far (numbers their report files).
    loadtest_runs: usize,
    /// Problems seen along the way (crashes, failed steps, log warnings).
    incidents: Vec<Value>,
}

impl Bench {
    fn api(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        self.rt.block_on(async {
            let r = self
                .http
                .request(method, format!("{}{path}", self.control_url))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await?;
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{path}: {status} {v}");
            }
            Ok(v)
        })
    }

    fn get(&self, path: &str) -> Result<Value> {
        self.rt.block_on(async {
            Ok(self
                .http
                .get(format!("{}{path}", self.control_url))
                .bearer_auth(ADMIN)
                .send()
                .await?
                .json()
                .await?)
        })
    }

    fn metrics_sum(&self, management: u16, prefix: &str, label: &str) -> f64 {
        let text = self
            .rt
            .block_on(async {
                self.http
                    .get(format!("http://127.0.0.1:{management}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await
            })
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn start(args: Args) -> Result<Self> {
        let bin = match &args.bin_dir {
            Some(b) => b.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("exe dir")?
                .to_owned(),
        };
        for b in [
            "connect-proxy",
            "connect-client",
            "connect-control",
            "connect-loadtest",
        ] {
            if !bin.join(b).exists() {
                bail!(
                    "{} missing: build with cargo build --release --workspace --bins",
                    bin.join(b).display()
                );
            }
        }
        let dir = match &args.work_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                d.clone()
            }
            None => {
                let d = std::env::temp_dir()
                    .join(format!("connect-proxy-bench-{}", std::process::id()));
                std::fs::create_dir_all(&d)?;
                d
            }
        };
        let proxy_key = dir.join("proxy_key");
        let user_key = dir.join("user_key");
        let _ = std::fs::remove_file(&proxy_key);
        let _ = std::fs::remove_file(&user_key);
        let proxy_fp = ssh_keygen(&proxy_key)?;
        ssh_keygen(&user_key)?;
        let proxy_pub = std::fs::read_to_string(proxy_key.with_extension("pub"))?;
        let user_pub = std::fs::read_to_string(user_key.with_extension("pub"))?;
        let known_hosts = dir.join("known_hosts");
        // Pinned under an alias, so any port of any proxy matches.
        std::fs::write(&known_hosts, format!("connect-proxy {}", proxy_pub.trim()))?;

        let mut cmd = Command::new(bin.join("connect-control"));
        cmd.env("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", "")
            .env("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "true")
            .env("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT", &proxy_fp)
            .env("TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS", "127.0.0.1")
            .env("CONNECT_CONTROL_ADMIN_TOKEN", ADMIN)
            .env("CONNECT_CONTROL_PROXY_TOKEN", PROXY_TOKEN)
            .env("CONNECT_CONTROL_ADDR", "127.0.0.1:0")
            .env("CONNECT_CONTROL_DB", dir.join("control.sqlite3"));
        let _ = std::fs::remove_file(dir.join("control.sqlite3"));
        // connect-control logs its listening line at info; keep info.
        cmd.env("CONNECT_CONTROL_LOG_LEVEL", "info");
        let mut control = Proc::spawn("connect-control", cmd, &dir)?;
        let line = control.wait_msg("connect-control listening")?;
        let control_url = format!("http://{}", line["addr"].as_str().context("addr")?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let login = Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| "root".into());
        let mut b = Self {
            args,
            bin,
            dir,
            rt,
            http: reqwest::Client::new(),
            control_url,
            _control: control,
            proxy_key,
            user_key,
            known_hosts,
            studios: Vec::new(),
            sshd: None,
            login,
            proxies_started: 0,
            loadtest_runs: 0,
            incidents: Vec::new(),
        };
        b.api(
            reqwest::Method::POST,
            &format!("/v1/users/{USER}/keys"),
            json!({ "key": user_pub.trim() }),
        )?;
        let max_idle = b.args.idle.iter().copied().max().unwrap_or(0);
        let wants_idle = b.args.only.iter().any(|s| s == "idle");
        let studios = if wants_idle {
            max_idle.div_ceil(b.args.idle_per_studio.max(1)).max(1)
        } else {
            1
        };
        for i in 0..studios {
            b.start_studio(i)?;
        }
        if !b.args.no_openssh && b.args.sshd.exists() {
            match b.start_sshd() {
                Ok(s) => b.sshd = Some(s),
                Err(e) => b.incident("openssh", format!("sshd not started: {e:#}")),
            }
        }
        Ok(b)
    }

    fn incident(&mut self, what: &str, detail: String) {
        eprintln!("!! {what}: {detail}");
        self.incidents
            .push(json!({ "what": what, "detail": detail }));
    }

    fn start_studio(&mut self, i: usize) -> Result<()> {
        let session = format!("be{i:06x}");
        let created = self.api(
            reqwest::Method::PUT,
            &format!("/v1/sessions/{session}?rotateToken=true"),
            json!({ "workspaceId": 1, "owner": USER, "sshEnabled": true }),
        )?;
        let token = created["registrationToken"]
            .as_str()
            .context("registrationToken")?
            .to_owned();
        let mut cmd = Command::new(self.bin.join("connect-client"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CONNECT_") || k.starts_with("TOWER_") {
                cmd.env_remove(k);
            }
        }
        // Commands run as `$SHELL -c ...` with SSH_CLIENT set; Debian's bash
        // then reads ~/.bashrc when SHLVL < 2 (as under sshd). Here that is
        // pyenv's init, ~120 ms of CPU per command. SHLVL=1 in the Studio's
        // environment makes the shells level 2: no rc files.
        cmd.env("SHLVL", "1")
            .env_remove("BASH_ENV")
            .env_remove("ENV")
            .env("CONNECT_CLIENT_SSH_ADDR", "127.0.0.1:0")
            .env("CONNECT_CLIENT_CONTROL_URL", &self.control_url)
            .env("CONNECT_CLIENT_SESSION_ID", &session)
            .env("CONNECT_CLIENT_TOKEN", token)
            .env("CONNECT_CLIENT_LOG_LEVEL", "info");
        let mut proc = Proc::spawn(&format!("studio-{session}"), cmd, &self.dir)?;
        let listening = proc.wait_msg("connect-client listening")?;
        proc.wait_msg("registered with the control plane")?;
        let addr = listening["addr"].as_str().context("addr")?.to_owned();
        let deadline = Instant::now() + START;
        loop {
            let s = self.get(&format!("/v1/sessions/{session}"))?;
            if s["state"] == "running" {
                break;
            }
            if Instant::now() > deadline {
                bail!("session {session} never running: {s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.studios.push(Studio {
            proc,
            session,
            addr,
        });
        Ok(())
    }

    fn start_sshd(&mut self) -> Result<(Proc, u16)> {
        let port = free_port()?;
        let host_key = self.dir.join("sshd_host_ed25519");
        let _ = std::fs::remove_file(&host_key);
        ssh_keygen(&host_key)?;
        let authorized = self.dir.join("authorized_keys");
        std::fs::copy(self.user_key.with_extension("pub"), &authorized)?;
        let config = self.dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\n\
                 AuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nAllowTcpForwarding yes\nX11Forwarding no\n\
                 PrintMotd no\nPrintLastLog no\nUseDNS no\nMaxStartups 200\nLogLevel ERROR\n",
                host_key.display(),
                authorized.display()
            ),
        )?;
        let check = Command::new(&self.args.sshd)
            .arg("-t")
            .arg("-f")
            .arg(&config)
            .output()?;
        if !check.status.success() {
            bail!("sshd -t: {}", String::from_utf8_lossy(&check.stderr));
        }
        let mut cmd = Command::new(&self.args.sshd);
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        let proc = Proc::spawn("sshd", cmd, &self.dir)?;
        let deadline = Instant::now() + START;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("sshd not listening on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        procfs::wait_children_reaped(proc.pid(), Duration::from_secs(5));
        // Client configurations, one per cipher: -F reaches the jump ssh too.
        for cipher in &self.args.ciphers.clone() {
            let studio = &self.studios[0];
            let (shost, sport) = studio.addr.rsplit_once(':').context("studio addr")?;
            std::fs::write(
                self.ssh_config_path(cipher),
                format!(
                    "Host jump\n  HostName 127.0.0.1\n  Port {port}\n  User {login}\n  IdentityFile {ukey}\n\
                     Host studio\n  HostName {shost}\n  Port {sport}\n  User {USER}\n  IdentityFile {pkey}\n  ProxyJump jump\n\
                     Host *\n  IdentitiesOnly yes\n  BatchMode yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  Ciphers {cipher}\n",
                    login = self.login,
                    ukey = self.user_key.display(),
                    pkey = self.proxy_key.display(),
                ),
            )?;
        }
        Ok((proc, port))
    }

    fn ssh_config_path(&self, cipher: &str) -> PathBuf {
        self.dir
            .join(format!("ssh_config_{}", cipher.replace(['@', '.'], "_")))
    }

    fn start_proxies(&mut self, io: &str, n: usize) -> Result<Vec<Proxy>> {
        self.start_proxies_with(io, n, "default")
    }

    fn start_proxies_with(&mut self, io: &str, n: usize, variant: &str) -> Result<Vec<Proxy>> {
        let mut out = Vec::new();
        for _ in 0..n {
            self.proxies_started += 1;
            let name = format!("proxy-{}-{io}", self.proxies_started);
            let mut cmd = Command::new(self.bin.join("connect-proxy"));
            cmd.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("CONNECT_SSH_ENABLED", "true")
                .env("CONNECT_SSH_ADDR", "127.0.0.1:0")
                .env("CONNECT_SSH_KEY_PATH", &self.proxy_key)
                .env("CONNECT_MANAGEMENT_PORT", "0")
                .env("CONNECT_CORES", self.args.cores.to_string())
                .env("CONNECT_IO", io)
                .env("CONNECT_CONTROL_URL", &self.control_url)
                .env("CONNECT_CONTROL_TOKEN", PROXY_TOKEN)
                .env("CONNECT_SSH_MAX_CONNECTIONS", "20000")
                .env("CONNECT_PROXY_NAME", &name)
                .env("CONNECT_LOG_LEVEL", &self.args.proxy_log_level);
            if variant != "default" {
                for kv in variant.split('+') {
                    let (k, v) = kv.split_once('=').context("variant VAR=VALUE")?;
                    cmd.env(k, v);
                }
            }
            let mut proc = Proc::spawn(&name, cmd, &self.dir)?;
            // The listening line is info; with a quieter level, wait on the port.
            let (port, management, backend) = if matches!(
                self.args.proxy_log_level.as_str(),
                "info" | "debug" | "trace"
            ) {
                let l = proc.wait_msg("connect-proxy listening")?;
                (
                    port_of(&l["addr"])?,
                    port_of(&l["management"])?,
                    l["io_backend"].as_str().unwrap_or("?").to_owned(),
                )
            } else {
                bail!(
                    "--proxy-log-level must be info or more verbose (the driver reads the listening line)"
                );
            };
            out.push(Proxy {
                proc,
                port,
                management,
                backend,
            });
        }
        Ok(out)
    }

    fn stop_proxies(&mut self, proxies: Vec<Proxy>, what: &str) {
        for p in proxies {
            let complaints = p.proc.complaints();
            let name = p.proc.name.clone();
            match p.proc.stop() {
                Ok(Some(code)) => self.incident(
                    what,
                    format!("{name} had exited by itself with code {code}"),
                ),
                Ok(None) => {}
                Err(e) => self.incident(what, format!("{name}: {e}")),
            }
            for c in complaints.into_iter().take(5) {
                self.incident(what, format!("{name} log: {c}"));
            }
        }
    }

    fn ssh_base(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-T"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args([
                "-o",
                "HostKeyAlias=connect-proxy",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "LogLevel=ERROR", "-i"])
            .arg(&self.user_key);
        cmd
    }

    /// One transfer; `proxy` is None for the OpenSSH jump host.
    fn transfer(&mut self, proxy: Option<&Proxy>, cipher: &str, direction: &str) -> Result<Value> {
        let bytes = self.args.bytes;
        // Upload: exactly BYTES then EOF from a local `head`, counted by a
        // remote `wc -c`, so the Studio's count checks the transfer. (A
        // command exiting while the user still sends used to hang the
        // proxy; fixed in 1cfa958, see docs/benchmarks.md.)
        let remote = match direction {
            "down" => format!("head -c {bytes} /dev/zero"),
            "up" => "wc -c".to_owned(),
            other => bail!("direction {other}"),
        };
        let mut cmd = match proxy {
            Some(p) => {
                let mut c = self.ssh_base();
                c.args(["-c", cipher, "-p", &p.port.to_string()])
                    .arg(format!("{USER}@{}@127.0.0.1", self.studios[0].session))
                    .arg(&remote);
                c
            }
            None => {
                let mut c = Command::new("ssh");
                c.arg("-F")
                    .arg(self.ssh_config_path(cipher))
                    .arg("-T")
                    .arg("studio")
                    .arg(&remote);
                c
            }
        };
        let mut feeder = None;
        if direction == "up" {
            let mut head = Command::new("head")
                .args(["-c", &bytes.to_string(), "/dev/zero"])
                .stdout(Stdio::piped())
                .spawn()
                .context("head")?;
            cmd.stdin(head.stdout.take().context("head stdout")?);
            cmd.stdout(Stdio::piped());
            feeder = Some(head);
        } else {
            cmd.stdin(Stdio::null());
            cmd.stdout(File::create("/dev/null")?);
        }
        cmd.stderr(Stdio::piped());
        let (pid, children_measured) = match proxy {
            Some(p) => (p.proc.pid(), false),
            None => (self.sshd.as_ref().context("sshd")?.0.pid(), true),
        };
        let studio_pid = self.studios[0].proc.pid();
        let mgmt = proxy.map(|p| p.management);
        let relayed_label = if direction == "down" {
            "direction=\"down\""
        } else {
            "direction=\"up\""
        };
        let relayed0 =
            mgmt.map(|m| self.metrics_sum(m, "connect_proxy_channel_bytes_total", relayed_label));
        let cpu0 = procfs::cpu(pid)?;
        let studio0 = procfs::cpu(studio_pid)?;
        let client0 = procfs::self_children_cpu();
        let started = Instant::now();
        let mut child = cmd.spawn().context("ssh")?;
        drop(cmd); // our copy of head's pipe: ssh must see EOF
        let mut stderr = child.stderr.take().context("stderr")?;
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let out_t = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut s);
                s
            })
        });
        let limit = Duration::from_secs(self.args.step_timeout);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(mut h) = feeder {
                    let _ = h.kill();
                    let _ = h.wait();
                }
                bail!("transfer killed after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let seconds = started.elapsed().as_secs_f64();
        if let Some(mut h) = feeder {
            let _ = h.wait();
        }
        let stderr = err_t.join().unwrap_or_default();
        let counted = out_t.map(|t| t.join().unwrap_or_default());
        std::thread::sleep(Duration::from_millis(300));
        if children_measured {
            procfs::wait_children_reaped(pid, Duration::from_secs(10));
        }
        let cpu = procfs::cpu(pid)?.minus(&cpu0);
        let studio = procfs::cpu(studio_pid)?.minus(&studio0);
        let client = procfs::self_children_cpu() - client0;
        let relayed = match (mgmt, relayed0) {
            (Some(m), Some(r0)) => {
                Some(self.metrics_sum(m, "connect_proxy_channel_bytes_total", relayed_label) - r0)
            }
            _ => None,
        };
        if !status.success() {
            bail!("ssh exited {status}: {}", stderr.trim());
        }
        if let Some(c) = &counted
            && c.trim() != bytes.to_string()
        {
            bail!("the Studio counted {:?} bytes, not {bytes}", c.trim());
        }
        if let Some(r) = relayed
            && (r as u64) < bytes
        {
            bail!("the proxy relayed {r} bytes, fewer than {bytes}");
        }
        let gib = bytes as f64 / GIB;
        let proxy_cpu = if children_measured {
            cpu.with_children()
        } else {
            cpu.own()
        };
        Ok(json!({
            "cipher": cipher,
            "direction": direction,
            "bytes": bytes,
            "seconds": seconds,
            "mib_per_s": bytes as f64 / 1048576.0 / seconds,
            "proxy_cpu_s": proxy_cpu,
            "proxy_user_s": cpu.user + if children_measured { cpu.children_user } else { 0.0 },
            "proxy_system_s": cpu.system + if children_measured { cpu.children_system } else { 0.0 },
            "proxy_cpu_s_per_gib": proxy_cpu / gib,
            "studio_cpu_s_per_gib": studio.with_children() / gib,
            "client_cpu_s_per_gib": client / gib,
            "relayed_bytes": relayed,
        }))
    }

    /// A connect-loadtest command for `scenario`; its JSON report goes to
    /// the returned path, a new file in the work directory.
    fn loadtest(&mut self, scenario: &str) -> (Command, PathBuf) {
        self.loadtest_runs += 1;
        let json = self.dir.join(format!(
            "loadtest-{:03}-{scenario}.json",
            self.loadtest_runs
        ));
        let mut cmd = Command::new(self.bin.join("connect-loadtest"));
        // Failed operations are read from the report, not the exit status.
        cmd.arg(scenario)
            .args(["--progress", "off", "--max-error-ratio", "1"])
            .args(["--sources", &self.args.sources.to_string()])
            .arg("--json")
            .arg(&json);
        (cmd, json)
    }

    /// Points a connect-loadtest command at `proxy`, as `bench@SESSION`
    /// for the first `studios` Studios (round-robin); or, with no proxy,
    /// through sshd as a jump host to the first Studio (the user key on
    /// sshd, the proxy's key on the Studio, as `ssh -J` would). Returns the
    /// pid of the process under test.
    fn aim(&self, cmd: &mut Command, proxy: Option<&Proxy>, studios: usize) -> Result<u32> {
        match proxy {
            Some(p) => {
                cmd.args(["--target", &format!("127.0.0.1:{}", p.port)]);
                for s in &self.studios[..studios.clamp(1, self.studios.len())] {
                    cmd.args(["--login", &format!("{USER}@{}", s.session)]);
                }
                cmd.arg("--key").arg(&self.user_key);
                Ok(p.proc.pid())
            }
            None => {
                let (sshd, port) = self.sshd.as_ref().context("sshd")?;
                cmd.args(["--jump", &format!("{}@127.0.0.1:{port}", self.login)])
                    .arg("--jump-key")
                    .arg(&self.user_key)
                    .args(["--target", &self.studios[0].addr, "--login", USER])
                    .arg("--key")
                    .arg(&self.proxy_key);
                Ok(sshd.pid())
            }
        }
    }

    /// The report of a finished connect-loadtest run (its output is kept
    /// next to it). No report is an error; failed operations and a
    /// non-zero exit are incidents of `section`.
    fn loadtest_report(
        &mut self,
        section: &str,
        json: &Path,
        (code, out, err): (i32, String, String),
    ) -> Result<Value> {
        std::fs::write(json.with_extension("log"), format!("{out}\n{err}"))?;
        let Ok(text) = std::fs::read_to_string(json) else {
            bail!(
                "connect-loadtest exited {code} without a report: {}",
                tail(&err, 10)
            );
        };
        let report: Value =
            serde_json::from_str(&text).with_context(|| json.display().to_string())?;
        if code != 0 {
            self.incident(
                section,
                format!("connect-loadtest exited {code}: {}", tail(&err, 5)),
            );
        }
        if report["errors"].as_object().is_some_and(|e| !e.is_empty()) {
            let detail = format!(
                "{}: {}; first of each kind: {}",
                json.display(),
                report["errors"],
                report["meta"]["error_examples"]
            );
            self.incident(section, detail);
        }
        Ok(report)
    }

    fn conn_rate(&mut self, proxy: Option<&Proxy>, kex: &str) -> Result<Value> {
        let limit = Duration::from_secs(self.args.step_timeout);
        let concurrency = self.args.conn_concurrency.to_string();
        // Warm-up, not measured: the first connections pay for one-off
        // set-up in every process.
        let (mut warm, warm_json) = self.loadtest("connect");
        self.aim(&mut warm, proxy, 1)?;
        warm.args(["-n", "20", "-c", &concurrency, "--duration", "120s"])
            .args(["--command", &self.args.conn_command, "--kex", kex]);
        let run = Running::spawn(warm, "connect-loadtest connect (warm-up)")?
            .finish(Instant::now() + Duration::from_secs(180))?;
        let warm = self.loadtest_report("connrate", &warm_json, run)?;
        if warm["ops"]["login"]["ok"].as_u64().unwrap_or(0) == 0 {
            bail!("every warm-up connection failed: {}", warm["errors"]);
        }
        std::thread::sleep(Duration::from_millis(300));

        let (mut cmd, json) = self.loadtest("connect");
        let pid = self.aim(&mut cmd, proxy, 1)?;
        let name = if proxy.is_some() { "proxy" } else { "sshd" };
        procfs::wait_children_reaped(pid, Duration::from_secs(5));
        let count = self.args.conn_count;
        cmd.args(["-n", &count.to_string(), "-c", &concurrency])
            .args(["--command", &self.args.conn_command, "--kex", kex])
            .args(["--duration", &format!("{}s", limit.as_secs())])
            .args(["--watch", &format!("{name}={pid}")])
            .args(["--watch", &format!("studio={}", self.studios[0].proc.pid())]);
        let run = Running::spawn(cmd, "connect-loadtest connect")?
            .finish(Instant::now() + limit + Duration::from_secs(60))?;
        let report = self.loadtest_report("connrate", &json, run)?;
        // A connection is whole when its command's exit status came back.
        let op = if self.args.conn_command.is_empty() {
            "login"
        } else {
            "exec"
        };
        let ok = report["ops"][op]["ok"].as_u64().unwrap_or(0);
        let seconds = report["elapsed_s"].as_f64().unwrap_or(f64::NAN);
        if ok < count {
            let detail = format!("connect-loadtest: {ok} of {count} connections completed");
            self.incident("connrate", detail);
        }
        let watched = |i: usize| {
            let w = &report["meta"]["watch_cpu"][i];
            json!({ "pid": w["pid"], "total_s": w["cpu_s"], "us_per_conn": w["cpu_us_per_login"] })
        };
        Ok(json!({
            "mode": if proxy.is_some() { "proxy" } else { "jump" },
            "kex": kex,
            "command": self.args.conn_command,
            "concurrency": self.args.conn_concurrency,
            "count": count,
            "ok": ok,
            "failed": count.saturating_sub(ok),
            "errors": report["errors"],
            "seconds": seconds,
            "conn_per_s": ok as f64 / seconds,
            "latency_ms": {
                "login": report["ops"]["login"]["latency_ms"],
                "exec": report["ops"]["exec"]["latency_ms"],
            },
            "cpu": { "proxy": watched(0), "studio": watched(1) },
            "report": json,
        }))
    }

    /// Keystroke round trips through a pty; the CPU of the process under
    /// test is read while every session is up and typing.
    fn interactive(&mut self, proxy: Option<&Proxy>) -> Result<Value> {
        let duration = self.args.interactive_duration.max(1);
        let (mut cmd, json) = self.loadtest("interactive");
        let pid = self.aim(&mut cmd, proxy, 1)?;
        let name = if proxy.is_some() { "proxy" } else { "sshd" };
        cmd.args(["-c", &self.args.interactive_concurrency.to_string()])
            .args(["--think", &self.args.interactive_think])
            .args(["--command", &self.args.interactive_command])
            .args(["--duration", &format!("{duration}s")])
            .args(["--watch", &format!("{name}={pid}")]);
        // From second 3 (the logins are done) to one second before the end
        // (none has stopped typing); the whole run if that is too short.
        let (from, to) = if duration >= 6 {
            (3, duration - 1)
        } else {
            (0, 0)
        };
        let started = Instant::now();
        let mut run = Running::spawn(cmd, "connect-loadtest interactive")?;
        let mut window = None;
        if to > from {
            let at = |s: u64| started + Duration::from_secs(s);
            std::thread::sleep(at(from).saturating_duration_since(Instant::now()));
            let cpu0 = tree_cpu(pid);
            std::thread::sleep(at(to).saturating_duration_since(Instant::now()));
            if !run.exited() {
                window = Some(tree_cpu(pid) - cpu0);
            }
        }
        let run = run.finish(started + Duration::from_secs(duration + 120))?;
        let report = self.loadtest_report("interactive", &json, run)?;
        let keystroke = &report["ops"]["keystroke"];
        let run_cpu = report["meta"]["watch_cpu"][0]["cpu_s"].as_f64();
        // Keystrokes in the window: the timeline's seconds [from, to).
        let (in_window, logins_in_window) = report["timeline"]
            .as_array()
            .map(|ticks| {
                ticks
                    .iter()
                    .filter(|t| {
                        let end = t["t"].as_f64().unwrap_or(0.0);
                        end - 1.0 >= from as f64 - 1e-9 && end <= to as f64 + 1e-9
                    })
                    .fold((0, 0), |(k, l), t| {
                        (
                            k + t["ops"]["keystroke"]["count"].as_u64().unwrap_or(0),
                            l + t["ops"]["login"]["count"].as_u64().unwrap_or(0),
                        )
                    })
            })
            .unwrap_or((0, 0));
        let (cpu_s, keystrokes) = match window {
            Some(cpu) => (Some(cpu), in_window),
            None => (run_cpu, keystroke["ok"].as_u64().unwrap_or(0)),
        };
        let per_1000 = match cpu_s {
            Some(cpu) if keystrokes > 0 => cpu * 1000.0 / keystrokes as f64,
            _ => f64::NAN,
        };
        Ok(json!({
            "concurrency": self.args.interactive_concurrency,
            "think": self.args.interactive_think,
            "command": self.args.interactive_command,
            "duration_s": duration,
            "keystrokes": keystroke["ok"],
            "keystrokes_per_s": keystroke["per_s"],
            "keystroke_ms": keystroke["latency_ms"],
            "errors": report["errors"],
            "cpu_window_s": [from, to],
            "cpu_window_keystrokes": keystrokes,
            "logins_in_window": logins_in_window,
            "proxy_cpu_s": cpu_s,
            "proxy_cpu_s_per_1000_keystrokes": per_1000,
            "proxy_cpu_s_whole_run": run_cpu,
            "report": json,
        }))
    }

    fn idle(&mut self, io: &str, count: usize, variant: &str) -> Result<Value> {
        let nproxies = count.div_ceil(self.args.idle_per_proxy.max(1)).max(1);
        let nstudios = count
            .div_ceil(self.args.idle_per_studio.max(1))
            .max(1)
            .min(self.studios.len());
        let proxies = self.start_proxies_with(io, nproxies, variant)?;
        let backend = proxies[0].backend.clone();
        let result = self.idle_on(&proxies, count, nstudios);
        let alive: Vec<bool> = proxies
            .iter()
            .map(|p| procfs::alive(p.proc.pid()))
            .collect();
        self.stop_proxies(proxies, "idle");
        let mut v = result?;
        v["proxies"] = json!(nproxies);
        v["studios"] = json!(nstudios);
        v["backend"] = json!(backend);
        v["proxies_alive_at_end"] = json!(alive);
        if v["failed"].as_u64().unwrap_or(0) > 0 {
            let detail = format!("idle {count}: {} failed: {}", v["failed"], v["errors"]);
            self.incident("idle", detail);
        }
        Ok(v)
    }

    /// `count` idle sessions over `proxies`: one connect-loadtest per proxy
    /// process (a load generator has one target), all started together so
    /// every session is held at once, each spreading its sessions over the
    /// first `studios` Studios. The load generators measure RSS and fds per
    /// session; this samples the rest from `/proc` while they run.
    fn idle_on(&mut self, proxies: &[Proxy], count: usize, studios: usize) -> Result<Value> {
        let settle = Duration::from_secs(3);
        let limit = Duration::from_secs(self.args.step_timeout);
        let request = self.args.idle_request.clone();
        let pids: Vec<u32> = proxies.iter().map(|p| p.proc.pid()).collect();
        let studio_pids: Vec<u32> = self.studios[..studios]
            .iter()
            .map(|s| s.proc.pid())
            .collect();

        // Warm-up: a few sessions per proxy opened and closed, so one-off
        // allocations are not counted.
        for p in proxies {
            let (mut cmd, json) = self.loadtest("idle");
            self.aim(&mut cmd, Some(p), studios)?;
            cmd.args(["--sessions", "4", "-c", "4", "--hold", "0s"])
                .args(["--request", &request, "--duration", "120s"]);
            let run = Running::spawn(cmd, "connect-loadtest idle (warm-up)")?
                .finish(Instant::now() + Duration::from_secs(180))?;
            let warm = self.loadtest_report("idle", &json, run)?;
            if warm["ops"]["session"]["ok"].as_u64().unwrap_or(0) == 0 {
                bail!(
                    "every warm-up session failed: {}",
                    warm["meta"]["error_examples"]
                );
            }
        }
        std::thread::sleep(settle);

        let started = Instant::now();
        let base = IdleSample::take(started, &pids, &studio_pids);
        let concurrency = self.args.idle_concurrency.div_ceil(proxies.len()).max(1);
        let mut runs = Vec::new();
        for (i, p) in proxies.iter().enumerate() {
            let n = count / proxies.len() + usize::from(i < count % proxies.len());
            let (mut cmd, json) = self.loadtest("idle");
            self.aim(&mut cmd, Some(p), studios)?;
            cmd.args(["--sessions", &n.to_string(), "-c", &concurrency.to_string()])
                .args(["--hold", &format!("{}s", self.args.idle_hold)])
                .args(["--request", &request])
                .args(["--duration", &format!("{}s", limit.as_secs())])
                .args(["--watch", &format!("proxy={}", p.proc.pid())]);
            runs.push((Running::spawn(cmd, "connect-loadtest idle")?, json));
        }
        let deadline = started + limit + Duration::from_secs(60);
        let mut samples = Vec::new();
        while runs.iter_mut().any(|(r, _)| !r.exited()) && Instant::now() < deadline {
            samples.push(IdleSample::take(started, &pids, &studio_pids));
            std::thread::sleep(Duration::from_millis(250));
        }
        let mut reports = Vec::new();
        for (run, json) in runs {
            let finished = run.finish(deadline)?;
            reports.push((self.loadtest_report("idle", &json, finished)?, json));
        }
        std::thread::sleep(settle);
        let after = IdleSample::take(started, &pids, &studio_pids);

        // What the load generators measured (before their first login, and
        // once all their sessions were open).
        let costs: Vec<&Value> = reports
            .iter()
            .map(|(r, _)| &r["meta"]["idle_cost"][0])
            .collect();
        let total = |field: &str| -> i64 { costs.iter().filter_map(|c| c[field].as_i64()).sum() };
        let held = total("sessions_held");
        let rss_delta = total("rss_kib_held") - total("rss_kib_before");
        let fds_delta = total("fds_held") - total("fds_before");
        let failed: u64 = reports
            .iter()
            .map(|(r, _)| r["ops"]["session"]["errors"].as_u64().unwrap_or(0))
            .sum();
        let per = |x: f64| if held > 0 { x / held as f64 } else { f64::NAN };

        // The moment all sessions were held: the middle of the run of
        // samples with the most proxy descriptors open.
        let fds_at = |s: &IdleSample| s.proxies.iter().map(|p| p.fds).sum::<usize>();
        let max_fds = samples.iter().map(fds_at).max().unwrap_or(0);
        let tolerance = 2 * pids.len();
        let full: Vec<&IdleSample> = samples
            .iter()
            .filter(|s| fds_at(s) + tolerance >= max_fds)
            .collect();
        let up = full.get(full.len() / 2).copied().unwrap_or(&base);
        let open_seconds = full.first().map_or(f64::NAN, |s| s.t);
        let anon_delta = up.anon_kib() as i64 - base.anon_kib() as i64;
        let studio_delta = up.studio_rss_kib as i64 - base.studio_rss_kib as i64;

        // Idle CPU of each proxy over its own plateau (its descriptors at
        // their peak), from one second in, summed over the proxies.
        let mut idle_cpu_s = 0.0;
        let mut idle_cpu_percent = 0.0;
        for j in 0..pids.len() {
            let peak = samples.iter().map(|s| s.proxies[j].fds).max().unwrap_or(0);
            let plateau: Vec<&IdleSample> = samples
                .iter()
                .filter(|s| s.proxies[j].fds + 2 >= peak)
                .collect();
            let (Some(first), Some(last)) = (plateau.first(), plateau.last()) else {
                idle_cpu_percent = f64::NAN;
                continue;
            };
            let start = plateau
                .iter()
                .find(|s| s.t >= first.t + 1.0)
                .unwrap_or(first);
            let seconds = last.t - start.t;
            let cpu = last.proxies[j].cpu_s - start.proxies[j].cpu_s;
            idle_cpu_s += cpu;
            idle_cpu_percent += if seconds > 0.5 {
                cpu * 100.0 / seconds
            } else {
                f64::NAN
            };
        }

        Ok(json!({
            "count": count,
            "open": held,
            "failed": failed,
            "errors": reports.iter().map(|(r, _)| r["errors"].clone()).collect::<Vec<_>>(),
            "request": request,
            "open_seconds": open_seconds,
            "proxy": {
                "base": base.proxies_json(),
                "up": up.proxies_json(),
                "after_close": after.proxies_json(),
                "idle_cost": costs,
                "rss_delta_kib": rss_delta,
                "kib_per_session": per(rss_delta as f64),
                "anon_kib_per_session": per(anon_delta as f64),
                "fds_delta": fds_delta,
                "rss_after_close_minus_base_kib": after.rss_kib() as i64 - base.rss_kib() as i64,
                "fds_after_close_minus_base": fds_at(&after) as i64 - fds_at(&base) as i64,
                "idle_cpu_s": idle_cpu_s,
                "idle_cpu_percent": idle_cpu_percent,
            },
            "studio": {
                "base_rss_kib": base.studio_rss_kib,
                "up_rss_kib": up.studio_rss_kib,
                "kib_per_session": per(studio_delta as f64),
            },
            "samples": samples.len(),
            "reports": reports.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        }))
    }
}

/// One reading of an idle run's proxies and Studios.
struct IdleSample {
    /// Seconds since the load generators started.
    t: f64,
    proxies: Vec<ProcSample>,
    studio_rss_kib: u64,
}

struct ProcSample {
    cpu_s: f64,
    mem: procfs::Mem,
    fds: usize,
}

impl IdleSample {
    fn take(started: Instant, proxies: &[u32], studios: &[u32]) -> Self {
        Self {
            t: started.elapsed().as_secs_f64(),
            proxies: proxies
                .iter()
                .map(|&pid| ProcSample {
                    cpu_s: procfs::cpu(pid).map(|c| c.own()).unwrap_or(0.0),
                    mem: procfs::mem(pid).unwrap_or_default(),
                    fds: procfs::fds(pid),
                })
                .collect(),
            studio_rss_kib: studios
                .iter()
                .map(|&pid| procfs::mem(pid).map(|m| m.rss_kib).unwrap_or(0))
                .sum(),
        }
    }

    fn rss_kib(&self) -> u64 {
        self.proxies.iter().map(|p| p.mem.rss_kib).sum()
    }

    fn anon_kib(&self) -> u64 {
        self.proxies.iter().map(|p| p.mem.rss_anon_kib).sum()
    }

    fn proxies_json(&self) -> Value {
        json!(
            self.proxies
                .iter()
                .map(|p| json!({
                    "rss_kib": p.mem.rss_kib,
                    "rss_anon_kib": p.mem.rss_anon_kib,
                    "fds": p.fds,
                    "cpu_s": p.cpu_s,
                }))
                .collect::<Vec<_>>()
        )
    }
}

/// The systems compared, in this round's order: the backends alternate
/// which goes first, and OpenSSH moves through the positions.
fn order(round: u32, io: &[String], openssh: bool) -> Vec<Option<String>> {
    let mut v: Vec<Option<String>> = io.iter().cloned().map(Some).collect();
    if !v.is_empty() {
        let k = (round as usize) % v.len();
        v.rotate_left(k);
    }
    if openssh {
        let pos = (round as usize) % (v.len() + 1);
        v.insert(pos, None);
    }
    v
}

fn system_name(io: &Option<String>, backend: Option<&str>) -> String {
    match io {
        Some(_) => format!("connect-proxy/{}", backend.unwrap_or("?")),
        None => "openssh-jump".into(),
    }
}

fn meta(args: &Args, bin: &Path) -> Value {
    let sh = |c: &str| -> String {
        Command::new("sh")
            .args(["-c", c])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
        "git_head": sh("git rev-parse --short HEAD 2>/dev/null"),
        "git_dirty_files": sh("git status --porcelain 2>/dev/null | wc -l").parse::<u64>().unwrap_or(0),
        "git_dirty_dataplane": sh("git status --porcelain -- dataplane 2>/dev/null | awk '{print $2}' | tr '\\n' ' '"),
        "kernel": sh("uname -r"),
        "cpus": sh("nproc"),
        "cpu_model": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "mem_total": sh("grep MemTotal /proc/meminfo | awk '{print $2\" kB\"}'"),
        "loadavg_at_start": sh("cat /proc/loadavg"),
        "openssh": sh("ssh -V 2>&1"),
        "nofile_limit": sh("ulimit -n"),
        "binaries": sh(&format!("cd '{}' && sha256sum connect-proxy connect-client connect-control | cut -c1-16,65-", bin.display())),
        "args": format!("{args:?}"),
    })
}

fn group_median(
    rows: &[Value],
    key: impl Fn(&Value) -> String,
    field: &str,
) -> BTreeMap<String, (f64, usize)> {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in rows {
        if let Some(x) = pointer_f64(r, field) {
            groups.entry(key(r)).or_default().push(x);
        }
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, (median(&v).unwrap_or(f64::NAN), v.len())))
        .collect()
}

fn pointer_f64(v: &Value, field: &str) -> Option<f64> {
    v.pointer(field).and_then(Value::as_f64)
}

fn summarize(results: &Value) -> (Value, String) {
    let mut md = String::new();
    let mut summary = serde_json::Map::new();
    let empty = Vec::new();

    // Throughput.
    let rows = results["throughput"].as_array().unwrap_or(&empty);
    if !rows.is_empty() {
        let key = |r: &Value| {
            format!(
                "{}|{}|{}",
                r["cipher"].as_str().unwrap_or(""),
                r["direction"].as_str().unwrap_or(""),
                r["system"].as_str().unwrap_or("")
            )
        };
        let fields = [
            "/mib_per_s",
            "/proxy_cpu_s_per_gib",
            "/studio_cpu_s_per_gib",
            "/client_cpu_s_per_gib",
        ];
        let meds: Vec<_> = fields.iter().map(|f| group_median(rows, key, f)).collect();
        md.push_str("### Bulk throughput (1 stream, OpenSSH client; medians)\n\n");
        md.push_str("| cipher (user leg) | direction | system | MiB/s | proxy CPU-s/GiB | target | Studio CPU-s/GiB | client CPU-s/GiB | runs |\n|---|---|---|---|---|---|---|---|---|\n");
        let mut out = Vec::new();
        for (k, (mib, n)) in &meds[0] {
            let parts: Vec<&str> = k.split('|').collect();
            let cpu = meds[1].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let studio = meds[2].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let client = meds[3].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let target =
                if parts[0].starts_with("aes256-gcm") && parts[2].starts_with("connect-proxy") {
                    format!(
                        "≤ {TARGET_CPU_S_PER_GIB_AES} {}",
                        if cpu <= TARGET_CPU_S_PER_GIB_AES {
                            "met"
                        } else {
                            "**missed**"
                        }
                    )
                } else {
                    "–".into()
                };
            md.push_str(&format!(
                "| {} | {} | {} | {mib:.0} | {cpu:.2} | {target} | {studio:.2} | {client:.2} | {n} |\n",
                parts[0], parts[1], parts[2]
            ));
            out.push(json!({ "cipher": parts[0], "direction": parts[1], "system": parts[2], "mib_per_s": mib, "proxy_cpu_s_per_gib": cpu, "studio_cpu_s_per_gib": studio, "client_cpu_s_per_gib": client, "runs": n }));
        }
        md.push('\n');
        summary.insert("throughput".into(), Value::Array(out));
    }

    // Connection rate.
    let rows = results["connrate"].as_array().unwrap_or(&empty);
    if !rows.is_empty() {
        let key = |r: &Value| {
            format!(
                "{}|{}",
                r["kex"].as_str().unwrap_or(""),
                r["system"].as_str().unwrap_or("")
            )
        };
        let fields = [
            "/conn_per_s",
            "/cpu/proxy/us_per_conn",
            "/cpu/studio/us_per_conn",
            "/latency_ms/login/p50",
            "/latency_ms/login/p99",
            "/latency_ms/exec/p50",
            "/latency_ms/exec/p99",
        ];
        let meds: Vec<_> = fields.iter().map(|f| group_median(rows, key, f)).collect();
        md.push_str(
            "### New connections (handshake + auth + upstream + `exec true` + close; medians)\n\n",
        );
        md.push_str("| user-leg kex | system | conn/s (whole platform on 2 vCPU) | proxy CPU µs/conn | target | capacity at 100% of 2 cores | Studio CPU µs/conn | login p50 / p99 ms | exec p50 / p99 ms | runs |\n|---|---|---|---|---|---|---|---|---|---|\n");
        let mut out = Vec::new();
        for (k, (rate, n)) in &meds[0] {
            let parts: Vec<&str> = k.split('|').collect();
            let us = meds[1].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let studio = meds[2].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let get = |i: usize| meds[i].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let (login50, login99, exec50, exec99) = (get(3), get(4), get(5), get(6));
            let target = if parts[1].starts_with("connect-proxy") {
                format!(
                    "≤ {TARGET_US_PER_CONN} {}",
                    if us <= TARGET_US_PER_CONN {
                        "met"
                    } else {
                        "**missed**"
                    }
                )
            } else {
                "–".into()
            };
            let capacity = 2.0e6 / us;
            md.push_str(&format!(
                "| {} | {} | {rate:.0} | {us:.0} | {target} | {capacity:.0}/s | {studio:.0} | {login50:.1} / {login99:.1} | {exec50:.1} / {exec99:.1} | {n} |\n",
                parts[0], parts[1]
            ));
            out.push(json!({ "kex": parts[0], "system": parts[1], "conn_per_s": rate, "proxy_us_per_conn": us, "studio_us_per_conn": studio, "login_p50_ms": login50, "login_p99_ms": login99, "exec_p50_ms": exec50, "exec_p99_ms": exec99, "runs": n }));
        }
        md.push('\n');
        summary.insert("connrate".into(), Value::Array(out));
    }

    // Keystrokes.
    let rows = results["interactive"].as_array().unwrap_or(&empty);
    if !rows.is_empty() {
        let key = |r: &Value| r["system"].as_str().unwrap_or("").to_owned();
        let fields = [
            "/keystroke_ms/p50",
            "/keystroke_ms/p99",
            "/keystrokes_per_s",
            "/proxy_cpu_s_per_1000_keystrokes",
        ];
        let meds: Vec<_> = fields.iter().map(|f| group_median(rows, key, f)).collect();
        let first = &rows[0];
        md.push_str(&format!(
            "### Keystroke round trips ({} sessions typing into `{}` through a pty, {} between keystrokes; medians)\n\n",
            first["concurrency"],
            first["command"].as_str().unwrap_or(""),
            first["think"].as_str().unwrap_or("")
        ));
        md.push_str("| system | p50 ms | p99 ms | keystrokes/s | proxy CPU-s per 1,000 keystrokes | runs |\n|---|---|---|---|---|---|\n");
        let mut out = Vec::new();
        for (k, (p50, n)) in &meds[0] {
            let get = |i: usize| meds[i].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let (p99, rate, cpu) = (get(1), get(2), get(3));
            md.push_str(&format!(
                "| {k} | {p50:.2} | {p99:.2} | {rate:.0} | {cpu:.3} | {n} |\n"
            ));
            out.push(json!({ "system": k, "p50_ms": p50, "p99_ms": p99, "keystrokes_per_s": rate, "proxy_cpu_s_per_1000_keystrokes": cpu, "runs": n }));
        }
        md.push('\n');
        summary.insert("interactive".into(), Value::Array(out));
    }

    // Idle sessions.
    let rows = results["idle"].as_array().unwrap_or(&empty);
    if !rows.is_empty() {
        let key = |r: &Value| {
            format!(
                "{:>6}|{}",
                r["count"].as_u64().unwrap_or(0),
                r["system"].as_str().unwrap_or("")
            )
        };
        let fields = [
            "/proxy/kib_per_session",
            "/proxy/anon_kib_per_session",
            "/proxy/fds_delta",
            "/open_seconds",
            "/proxy/idle_cpu_percent",
            "/proxy/rss_after_close_minus_base_kib",
            "/studio/kib_per_session",
            "/proxies",
        ];
        let meds: Vec<_> = fields.iter().map(|f| group_median(rows, key, f)).collect();
        md.push_str("### Idle proxied sessions (RSS delta / sessions; medians)\n\n");
        md.push_str("| sessions | system | proxy processes | KiB/session (RSS) | target | KiB/session (anon) | fds/session | time to open all | idle CPU (of one core) | RSS still held after all closed | runs |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        let mut out = Vec::new();
        for (k, (kib, n)) in &meds[0] {
            let parts: Vec<&str> = k.split('|').collect();
            let count: f64 = parts[0].trim().parse().unwrap_or(f64::NAN);
            let get = |i: usize| meds[i].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let target = format!(
                "≤ {TARGET_KIB_PER_SESSION} {}",
                if *kib <= TARGET_KIB_PER_SESSION {
                    "met"
                } else {
                    "**missed**"
                }
            );
            md.push_str(&format!(
                "| {} | {} | {:.0} | {kib:.1} | {target} | {:.1} | {:.2} | {:.1} s | {:.1}% | {:.0} KiB | {n} |\n",
                parts[0].trim(), parts[1], get(7), get(1), get(2) / count, get(3), get(4), get(5)
            ));
            out.push(json!({ "count": count, "system": parts[1], "kib_per_session": kib, "anon_kib_per_session": get(1), "fds_per_session": get(2) / count, "open_seconds": get(3), "idle_cpu_percent": get(4), "rss_left_after_close_kib": get(5), "studio_kib_per_session": get(6), "runs": n }));
        }
        md.push('\n');
        summary.insert("idle".into(), Value::Array(out));
    }
    (Value::Object(summary), md)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.resummarize {
        let mut r: Value = serde_json::from_str(&std::fs::read_to_string(&args.out)?)?;
        let (summary, md) = summarize(&r);
        r["summary"] = summary;
        std::fs::write(&args.out, serde_json::to_string_pretty(&r)?)?;
        std::fs::write(args.out.with_extension("md"), &md)?;
        println!("{md}");
        return Ok(());
    }
    let mut bench = Bench::start(args.clone())?;
    let mut results = json!({
        "meta": meta(&args, &bench.bin),
        "throughput": [],
        "connrate": [],
        "interactive": [],
        "idle": [],
    });
    let openssh = bench.sshd.is_some();
    results["meta"]["openssh_peer"] = json!(openssh);
    results["meta"]["studios"] = json!(
        bench
            .studios
            .iter()
            .map(|s| json!({"session": s.session, "addr": s.addr, "pid": s.proc.pid()}))
            .collect::<Vec<_>>()
    );
    let wants = |s: &str| args.only.iter().any(|o| o == s);
    let save = |results: &Value, bench: &Bench| -> Result<()> {
        let mut r = results.clone();
        r["incidents"] = json!(bench.incidents);
        let (summary, md) = summarize(&r);
        r["summary"] = summary;
        if let Some(d) = args.out.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&args.out, serde_json::to_string_pretty(&r)?)?;
        let mut f = File::create(args.out.with_extension("md"))?;
        f.write_all(md.as_bytes())?;
        Ok(())
    };

    // Which backends start at all (io_uring may be forbidden here).
    let mut usable = Vec::new();
    for io in &args.io {
        match bench.start_proxies(io, 1) {
            Ok(p) => {
                eprintln!("CONNECT_IO={io}: backend {}", p[0].backend);
                results["meta"]["backends"][io] = json!(p[0].backend);
                bench.stop_proxies(p, "probe");
                usable.push(io.clone());
            }
            Err(e) => {
                bench.incident("backend", format!("CONNECT_IO={io} does not start: {e:#}"));
                results["meta"]["backends"][io] = json!(format!("unavailable: {e:#}"));
            }
        }
    }

    if wants("throughput") || wants("connrate") || wants("interactive") {
        for round in 0..args.rounds {
            for sys in order(round, &usable, openssh) {
                let proxies = match &sys {
                    Some(io) => Some(bench.start_proxies(io, 1)?),
                    None => None,
                };
                let proxy = proxies.as_ref().map(|p| &p[0]);
                let name = system_name(&sys, proxy.map(|p| p.backend.as_str()));
                if wants("throughput") {
                    for cipher in &args.ciphers {
                        for dir in &args.directions {
                            eprintln!("round {round}: {name} {cipher} {dir}");
                            match bench.transfer(proxy, cipher, dir) {
                                Ok(mut v) => {
                                    v["round"] = json!(round);
                                    v["system"] = json!(name);
                                    eprintln!(
                                        "   {:.0} MiB/s, {:.2} CPU-s/GiB",
                                        v["mib_per_s"].as_f64().unwrap_or(0.0),
                                        v["proxy_cpu_s_per_gib"].as_f64().unwrap_or(0.0)
                                    );
                                    results["throughput"]
                                        .as_array_mut()
                                        .context("array")?
                                        .push(v);
                                }
                                Err(e) => bench.incident(
                                    "throughput",
                                    format!("{name} {cipher} {dir}: {e:#}"),
                                ),
                            }
                        }
                    }
                }
                if wants("connrate") {
                    for kex in &args.conn_kex {
                        if sys.is_none() && kex.starts_with("mlkem") {
                            // OpenSSH < 9.9 has no ML-KEM: not comparable.
                            let q = Command::new("ssh").args(["-Q", "kex"]).output()?;
                            if !String::from_utf8_lossy(&q.stdout).contains(kex.as_str()) {
                                continue;
                            }
                        }
                        eprintln!("round {round}: {name} connections, kex {kex}");
                        match bench.conn_rate(proxy, kex) {
                            Ok(mut v) => {
                                v["round"] = json!(round);
                                v["system"] = json!(name);
                                eprintln!(
                                    "   {:.0} conn/s, proxy {:.0} µs/conn",
                                    v["conn_per_s"].as_f64().unwrap_or(0.0),
                                    v.pointer("/cpu/proxy/us_per_conn")
                                        .and_then(Value::as_f64)
                                        .unwrap_or(0.0)
                                );
                                results["connrate"].as_array_mut().context("array")?.push(v);
                            }
                            Err(e) => bench.incident("connrate", format!("{name} {kex}: {e:#}")),
                        }
                    }
                }
                if wants("interactive") {
                    eprintln!("round {round}: {name} keystrokes");
                    match bench.interactive(proxy) {
                        Ok(mut v) => {
                            v["round"] = json!(round);
                            v["system"] = json!(name);
                            eprintln!(
                                "   p50 {:.2} ms, p99 {:.2} ms, {:.3} CPU-s per 1,000 keystrokes",
                                pointer_f64(&v, "/keystroke_ms/p50").unwrap_or(f64::NAN),
                                pointer_f64(&v, "/keystroke_ms/p99").unwrap_or(f64::NAN),
                                pointer_f64(&v, "/proxy_cpu_s_per_1000_keystrokes")
                                    .unwrap_or(f64::NAN)
                            );
                            results["interactive"]
                                .as_array_mut()
                                .context("array")?
                                .push(v);
                        }
                        Err(e) => bench.incident("interactive", format!("{name}: {e:#}")),
                    }
                }
                if let Some(p) = proxies {
                    let alive = procfs::alive(p[0].proc.pid());
                    if !alive {
                        bench.incident("proxy", format!("{name} died during the round"));
                    }
                    bench.stop_proxies(p, "rounds");
                }
                save(&results, &bench)?;
            }
        }
    }

    if wants("idle") {
        for round in 0..args.idle_rounds {
            for &count in &args.idle {
                for variant in &args.idle_variants {
                    for sys in order(round, &usable, false) {
                        let io = sys.clone().context("io")?;
                        eprintln!("round {round}: idle {count} on CONNECT_IO={io} ({variant})");
                        match bench.idle(&io, count, variant) {
                            Ok(mut v) => {
                                v["round"] = json!(round);
                                let backend = v["backend"].as_str().map(str::to_owned);
                                let mut name = system_name(&sys, backend.as_deref());
                                if variant != "default" {
                                    name = format!("{name} {variant}");
                                }
                                v["variant"] = json!(variant);
                                v["system"] = json!(name);
                                eprintln!(
                                    "   {} open, {:.1} KiB/session",
                                    v["open"],
                                    v.pointer("/proxy/kib_per_session")
                                        .and_then(Value::as_f64)
                                        .unwrap_or(0.0)
                                );
                                results["idle"].as_array_mut().context("array")?.push(v);
                            }
                            Err(e) => bench
                                .incident("idle", format!("{count} on {io} ({variant}): {e:#}")),
                        }
                        save(&results, &bench)?;
                    }
                }
            }
        }
    }

    // Whatever the Studios and control plane complained about.
    let mut studio_complaints = Vec::new();
    for s in &bench.studios {
        if !procfs::alive(s.proc.pid()) {
            studio_complaints.push(format!("{} died", s.proc.name));
        }
        studio_complaints.extend(s.proc.complaints().into_iter().take(5));
    }
    for c in studio_complaints {
        bench.incident("studio", c);
    }
    if let Some((sshd, _)) = bench.sshd.take() {
        let _ = sshd.stop();
    }
    results["meta"]["loadavg_at_end"] = json!(
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    save(&results, &bench)?;
    let (_, md) = summarize(&{
        let mut r = results.clone();
        r["incidents"] = json!(bench.incidents);
        r
    });
    println!("{md}");
    if !bench.incidents.is_empty() {
        println!("incidents: {}", bench.incidents.len());
        for i in &bench.incidents {
            println!(
                "- {}: {}",
                i["what"].as_str().unwrap_or(""),
                i["detail"].as_str().unwrap_or("")
            );
        }
    }
    println!("results: {} (and .md)", args.out.display());
    Ok(())
}
