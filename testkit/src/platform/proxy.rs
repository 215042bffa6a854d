//! connect-proxy processes of a [`Platform`]: how each runs
//! ([`ProxyOptions`]), and a started one ([`Proxy`]) with its ports and
//! metrics.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{PROXY_TOKEN, Platform, START, hermetic};
use crate::Process;
use crate::process::NotReady;

/// The database of a proxy's embedded control plane, in the platform's
/// directory.
pub(super) const EMBEDDED_DB: &str = "embedded.sqlite3";

/// Chooses the tests' default `CONNECT_IO`: `.ci/run` runs the proxy's
/// end-to-end suite once per backend, setting it to `epoll`, then `uring`.
/// Read by the test process (programs under test never see it).
pub const TEST_IO_ENV: &str = "CONNECT_TEST_IO";

/// How one connect-proxy runs. The defaults are the tests': `CONNECT_IO`
/// from [`TEST_IO_ENV`] (`auto` when unset), two cores, debug logs,
/// following the platform's control plane.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    io: String,
    cores: usize,
    log_level: String,
    embed_control: bool,
    clean_env: bool,
    env: Vec<(String, String)>,
    launcher: Option<fn(&Path) -> Command>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            io: test_io(),
            cores: 2,
            log_level: "debug".into(),
            embed_control: false,
            clean_env: false,
            env: Vec::new(),
            launcher: None,
        }
    }
}

impl ProxyOptions {
    /// `CONNECT_IO`: `auto`, `uring` or `epoll`.
    pub fn io(mut self, io: &str) -> Self {
        self.io = io.into();
        self
    }

    /// `CONNECT_CORES`.
    pub fn cores(mut self, cores: usize) -> Self {
        self.cores = cores;
        self
    }

    /// `CONNECT_LOG_LEVEL`; info or more verbose, since the platform waits
    /// for the proxy's `connect-proxy listening` line.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }

    /// Runs its own control plane in-process (with the platform's control
    /// plane settings and a database in the platform's directory) instead
    /// of following the platform's.
    pub fn embed_control(mut self) -> Self {
        self.embed_control = true;
        self
    }

    /// Nothing of this process's environment but `PATH` (a benchmark's
    /// proxy: no allocator or runtime settings leak in).
    pub fn clean_env(mut self) -> Self {
        self.clean_env = true;
        self
    }

    /// One more variable, set last (so it overrides the platform's).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs the program through `launcher` (given its path; e.g. under a
    /// seccomp filter) instead of directly.
    pub fn launcher(mut self, launcher: fn(&Path) -> Command) -> Self {
        self.launcher = Some(launcher);
        self
    }
}

/// [`TEST_IO_ENV`], checked: a typo must not quietly test `auto`.
pub fn test_io() -> String {
    match std::env::var(TEST_IO_ENV) {
        Err(_) => "auto".into(),
        Ok(io) if ["auto", "uring", "epoll"].contains(&io.as_str()) => io,
        Ok(io) => panic!("{TEST_IO_ENV}={io:?}: expected auto, uring or epoll"),
    }
}

/// A started connect-proxy.
pub struct Proxy {
    /// `proxy-N-IO`: its `CONNECT_PROXY_NAME` and log file name.
    pub name: String,
    pub process: Process,
    /// Its SSH port on 127.0.0.1.
    pub port: u16,
    /// Its management listener, `127.0.0.1:PORT`.
    pub management: String,
    /// The I/O backend it chose (`io_uring` or `epoll`).
    pub backend: String,
}

impl Proxy {
    /// Its Prometheus text.
    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://{}/metrics", self.management)])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of one series (exact name and labels); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// The state revision every core routes with (the least of their
    /// `connect_proxy_core_state_revision`); 0 before any is installed.
    pub fn served_revision(&self) -> u64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("connect_proxy_core_state_revision{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .min()
            .unwrap_or(0)
    }
}

impl Platform {
    /// The command line of the next proxy, not started (for proxies that
    /// are expected to refuse to start).
    pub fn proxy_command(&self, options: &ProxyOptions) -> Command {
        let program = self.program("connect-proxy");
        let mut cmd = hermetic(match options.launcher {
            Some(launch) => launch(&program),
            None => Command::new(program),
        });
        if options.clean_env {
            let own: Vec<_> = cmd
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                .collect();
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .envs(own);
        }
        cmd.env("CONNECT_SSH_ENABLED", "true")
            .env("CONNECT_SSH_ADDR", "127.0.0.1:0")
            .env("CONNECT_SSH_KEY_PATH", &self.proxy_key.private)
            .env("CONNECT_MANAGEMENT_PORT", "0")
            .env("CONNECT_CORES", options.cores.to_string())
            .env("CONNECT_IO", &options.io)
            .env("CONNECT_LOG_LEVEL", &options.log_level)
            .env("CONNECT_PROXY_NAME", self.next_proxy_name(options));
        if options.embed_control {
            self.control_plane_env(&mut cmd);
            cmd.env("CONNECT_CONTROL_ADDR", "127.0.0.1:0")
                .env("CONNECT_CONTROL_DB", self.dir.join(EMBEDDED_DB));
        } else {
            cmd.env("CONNECT_CONTROL_URL", &self.control_url)
                .env("CONNECT_CONTROL_TOKEN", PROXY_TOKEN);
        }
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts a proxy and waits until it listens; pins its port in
    /// [`Platform::known_hosts`]. An error, with its log, if it exits or
    /// says nothing in time (a backend that is not allowed here, a bad
    /// setting).
    pub fn start_proxy(&mut self, options: &ProxyOptions) -> Result<Proxy, NotReady> {
        let cmd = self.proxy_command(options);
        let name = self.next_proxy_name(options);
        self.proxies_started += 1;
        let mut process = self.spawn(&name, cmd);
        let listening = process.ready("connect-proxy listening", START)?;
        let port = port_of(&listening["addr"]);
        let management = format!("127.0.0.1:{}", port_of(&listening["management"]));
        let backend = listening["io_backend"].as_str().unwrap_or("?").to_owned();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.known_hosts)
            .and_then(|mut f| f.write_all(self.proxy_key.known_hosts_line(port).as_bytes()))
            .expect("known_hosts");
        Ok(Proxy {
            name,
            process,
            port,
            management,
            backend,
        })
    }

    fn next_proxy_name(&self, options: &ProxyOptions) -> String {
        format!("proxy-{}-{}", self.proxies_started + 1, options.io)
    }
}

/// The port of a logged `HOST:PORT` address.
fn port_of(addr: &Value) -> u16 {
    addr.as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}
