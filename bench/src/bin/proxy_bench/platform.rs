//! The platform under test, started on 127.0.0.1: connect-control, the
//! connect-client Studios, connect-proxy processes, and OpenSSH sshd with
//! its client configurations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::procfs;
use serde_json::{Value, json};

use crate::args::Args;
use crate::process::{Proc, START};

const ADMIN: &str = "bench-admin-token-000000";
const PROXY_TOKEN: &str = "bench-proxy-token-000000";
pub const USER: &str = "bench";

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
pub struct Proxy {
    pub proc: Proc,
    pub port: u16,
    pub management: u16,
    pub backend: String,
}

/// A connect-client Studio.
pub struct Studio {
    pub proc: Proc,
    pub session: String,
    pub addr: String,
}

pub struct Bench {
    pub args: Args,
    pub bin: PathBuf,
    pub dir: PathBuf,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    control_url: String,
    _control: Proc,
    pub proxy_key: PathBuf,
    pub user_key: PathBuf,
    pub known_hosts: PathBuf,
    pub studios: Vec<Studio>,
    pub sshd: Option<(Proc, u16)>,
    pub login: String,
    proxies_started: usize,
    /// connect-loadtest runs so far (numbers their report files).
    pub loadtest_runs: usize,
    /// Problems seen along the way (crashes, failed steps, log warnings).
    pub incidents: Vec<Value>,
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

    pub fn metrics_sum(&self, management: u16, prefix: &str, label: &str) -> f64 {
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

    pub fn start(args: Args) -> Result<Self> {
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

    pub fn incident(&mut self, what: &str, detail: String) {
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

    pub fn ssh_config_path(&self, cipher: &str) -> PathBuf {
        self.dir
            .join(format!("ssh_config_{}", cipher.replace(['@', '.'], "_")))
    }

    pub fn start_proxies(&mut self, io: &str, n: usize) -> Result<Vec<Proxy>> {
        self.start_proxies_with(io, n, "default")
    }

    pub fn start_proxies_with(&mut self, io: &str, n: usize, variant: &str) -> Result<Vec<Proxy>> {
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

    pub fn stop_proxies(&mut self, proxies: Vec<Proxy>, what: &str) {
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
}
