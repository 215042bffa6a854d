//! The platform under test, started on 127.0.0.1: connect-control and the
//! connect-client Studios by testkit's [`Platform`], with logs in the work
//! directory; connect-proxy processes on demand, one configuration each;
//! and OpenSSH sshd with its client configurations.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::procfs;
use serde_json::{Value, json};
use testkit::platform::Proxy;
use testkit::{KeyPair, KeyType, Platform, Process, ProxyOptions};

use crate::args::Args;
use crate::process::complaints;

pub const USER: &str = "bench";

pub struct Bench {
    pub args: Args,
    pub bin: PathBuf,
    pub platform: Platform,
    pub user_key: KeyPair,
    pub sshd: Option<(Process, u16)>,
    pub login: String,
    /// connect-loadtest runs so far (numbers their report files).
    pub loadtest_runs: usize,
    /// Problems seen along the way (crashes, failed steps, log warnings).
    pub incidents: Vec<Value>,
}

impl Bench {
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
            Some(d) => d.clone(),
            None => {
                std::env::temp_dir().join(format!("connect-proxy-bench-{}", std::process::id()))
            }
        };
        let platform = Platform::builder()
            .bin_dir(&bin)
            .dir(dir)
            .log_files()
            .heartbeat(None)
            .no_proxy()
            .start();
        let user_key = platform.user(USER);
        let login = Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| "root".into());
        let mut b = Self {
            args,
            bin,
            platform,
            user_key,
            sshd: None,
            login,
            loadtest_runs: 0,
            incidents: Vec::new(),
        };
        let max_idle = b.args.idle.iter().copied().max().unwrap_or(0);
        let wants_idle = b.args.only.iter().any(|s| s == "idle");
        let studios = if wants_idle {
            max_idle.div_ceil(b.args.idle_per_studio.max(1)).max(1)
        } else {
            1
        };
        for i in 0..studios {
            let session = format!("be{i:06x}");
            b.platform
                .studio(&session, 1, USER, &[], true)
                .with_context(|| format!("session {session} exists already"))?;
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

    fn start_sshd(&mut self) -> Result<(Process, u16)> {
        let dir = self.platform.dir().to_owned();
        let port = testkit::net::free_port();
        let host_key = KeyPair::generate(&dir, "sshd_host_ed25519", KeyType::Ed25519);
        let authorized = dir.join("authorized_keys");
        std::fs::copy(&self.user_key.public, &authorized)?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\n\
                 AuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nAllowTcpForwarding yes\nX11Forwarding no\n\
                 PrintMotd no\nPrintLastLog no\nUseDNS no\nMaxStartups 200\nLogLevel ERROR\n",
                host_key.private.display(),
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
        let proc = Process::spawn_logged(cmd, &dir.join("sshd.log"));
        let deadline = Instant::now() + testkit::platform::START;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("sshd not listening on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        procfs::wait_children_reaped(proc.pid(), Duration::from_secs(5));
        // Client configurations, one per cipher: -F reaches the jump ssh too.
        for cipher in &self.args.ciphers {
            let studio = &self.platform.studios[0];
            let (shost, sport) = studio.addr.rsplit_once(':').context("studio addr")?;
            std::fs::write(
                self.ssh_config_path(cipher),
                format!(
                    "Host jump\n  HostName 127.0.0.1\n  Port {port}\n  User {login}\n  IdentityFile {ukey}\n\
                     Host studio\n  HostName {shost}\n  Port {sport}\n  User {USER}\n  IdentityFile {pkey}\n  ProxyJump jump\n\
                     Host *\n  IdentitiesOnly yes\n  BatchMode yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  Ciphers {cipher}\n",
                    login = self.login,
                    ukey = self.user_key.private.display(),
                    pkey = self.platform.proxy_key.private.display(),
                ),
            )?;
        }
        Ok((proc, port))
    }

    pub fn ssh_config_path(&self, cipher: &str) -> PathBuf {
        self.platform
            .dir()
            .join(format!("ssh_config_{}", cipher.replace(['@', '.'], "_")))
    }

    pub fn start_proxies(&mut self, io: &str, n: usize) -> Result<Vec<Proxy>> {
        self.start_proxies_with(io, n, "default")
    }

    /// `n` proxies on `CONNECT_IO=io`, with the environment of `variant`
    /// (`default`, or `VAR=VALUE[+VAR=VALUE]`) and nothing else of ours.
    pub fn start_proxies_with(&mut self, io: &str, n: usize, variant: &str) -> Result<Vec<Proxy>> {
        let level = self.args.proxy_log_level.as_str();
        if !matches!(level, "info" | "debug" | "trace") {
            bail!(
                "--proxy-log-level must be info or more verbose (the driver reads the listening line)"
            );
        }
        let mut options = ProxyOptions::default()
            .io(io)
            .cores(self.args.cores)
            .log_level(level)
            .clean_env()
            .env("CONNECT_SSH_MAX_CONNECTIONS", "20000");
        if variant != "default" {
            for kv in variant.split('+') {
                let (k, v) = kv.split_once('=').context("variant VAR=VALUE")?;
                options = options.env(k, v);
            }
        }
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.platform.start_proxy(&options)?);
        }
        Ok(out)
    }

    pub fn stop_proxies(&mut self, proxies: Vec<Proxy>, what: &str) {
        for mut p in proxies {
            let complaints = complaints(&p.process);
            if let Some(code) = p
                .process
                .stop(Duration::from_secs(10))
                .and_then(|s| s.code())
            {
                let detail = format!("{} had exited by itself with code {code}", p.name);
                self.incident(what, detail);
            }
            for c in complaints.into_iter().take(5) {
                self.incident(what, format!("{} log: {c}", p.name));
            }
        }
    }
}
