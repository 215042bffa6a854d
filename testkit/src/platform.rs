//! A whole platform on 127.0.0.1, started the way production runs it:
//! connect-control with a SQLite database and an admin token (or the
//! control plane embedded in a proxy), users whose keys `ssh-keygen` made,
//! sessions created through the admin API, connect-client Studios
//! registered with their tokens, and connect-proxy processes following the
//! control plane. Everything is killed when the [`Platform`] is dropped.
//!
//! ```ignore
//! let mut p = Platform::start();
//! let key = p.user("alice");
//! p.studio("01ac8894", 1, "alice", &[], true);
//! let mut cmd = p.ssh(&key, "alice", "01ac8894").ssh();
//! ```
//!
//! [`Builder`] says what to start (for a benchmark: binaries from a given
//! directory, logs to files, no proxy until asked for one);
//! [`ProxyOptions`] how each proxy runs; [`Dev`] is `connect-proxy --dev`,
//! a platform in one process.
//!
//! Every program started here sees only the `CONNECT_*` and `TOWER_*`
//! variables the platform gives it: a developer's own settings cannot
//! change what a test or a benchmark measures.

mod dev;
mod proxy;

pub use dev::Dev;
pub use proxy::{Proxy, ProxyOptions, TEST_IO_ENV, test_io};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{KeyPair, KeyType, Process, Ssh};

/// The admin token of every platform's control plane.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0001";
/// The token proxies present to the control plane.
pub const PROXY_TOKEN: &str = "proxy-token-for-tests-0001";
/// How long a program may take to say it is ready.
pub const START: Duration = Duration::from_secs(30);

/// What a [`Platform`] starts with; [`Builder::start`] starts it. The
/// defaults are the tests': binaries next to the running test, a temporary
/// directory, logs in memory, SSH allowed in every workspace, 1 s
/// heartbeats, and one proxy with the control plane embedded.
#[derive(Debug, Clone)]
pub struct Builder {
    bin_dir: PathBuf,
    dir: Option<PathBuf>,
    log_files: bool,
    allowed: Option<String>,
    separate_control: bool,
    heartbeat: Option<String>,
    control_env: Vec<(String, String)>,
    studio_env: Vec<(String, String)>,
    proxy: Option<ProxyOptions>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            bin_dir: crate::bin_dir(),
            dir: None,
            log_files: false,
            allowed: Some(String::new()),
            separate_control: false,
            heartbeat: Some("1s".into()),
            control_env: Vec::new(),
            studio_env: Vec::new(),
            proxy: Some(ProxyOptions::default()),
        }
    }
}

impl Builder {
    /// Where connect-control, connect-client and connect-proxy are.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = dir.into();
        self
    }

    /// Keys, databases and logs go to `dir` (created, and kept afterwards)
    /// instead of a temporary directory.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Each program logs to `<dir>/<name>.log` (stdout and stderr) instead
    /// of into memory.
    pub fn log_files(mut self) -> Self {
        self.log_files = true;
        self
    }

    /// `TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES`; `None` leaves it unset
    /// (the feature off).
    pub fn allowed(mut self, workspaces: Option<&str>) -> Self {
        self.allowed = workspaces.map(str::to_owned);
        self
    }

    /// Runs connect-control as its own process, which the proxy follows.
    /// (Always so without a proxy.)
    pub fn separate_control(mut self) -> Self {
        self.separate_control = true;
        self
    }

    /// `CONNECT_CONTROL_HEARTBEAT_INTERVAL`; `None`: the control plane's
    /// default.
    pub fn heartbeat(mut self, interval: Option<&str>) -> Self {
        self.heartbeat = interval.map(str::to_owned);
        self
    }

    /// More environment for the control plane (separate or embedded).
    pub fn control_env(mut self, name: &str, value: &str) -> Self {
        self.control_env.push((name.into(), value.into()));
        self
    }

    /// More environment for every Studio.
    pub fn studio_env(mut self, name: &str, value: &str) -> Self {
        self.studio_env.push((name.into(), value.into()));
        self
    }

    /// How the platform's proxy runs.
    pub fn proxy(mut self, options: ProxyOptions) -> Self {
        self.proxy = Some(options);
        self
    }

    /// No proxy: the control plane and Studios only (proxies can still be
    /// started with [`Platform::start_proxy`]).
    pub fn no_proxy(mut self) -> Self {
        self.proxy = None;
        self
    }

    /// Starts the control plane and, unless told not to, the proxy; panics
    /// with the program's log if one does not start.
    pub fn start(self) -> Platform {
        let (dir, temp) = match &self.dir {
            Some(d) => {
                std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
                (d.clone(), None)
            }
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                (t.path().to_owned(), Some(t))
            }
        };
        // A fresh platform, also in a directory used before.
        for db in [proxy::EMBEDDED_DB, CONTROL_DB] {
            let _ = std::fs::remove_file(dir.join(db));
        }
        let proxy_key = KeyPair::generate(&dir, "proxy", KeyType::Ed25519);
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, "").expect("known_hosts");
        let proxy = self.proxy.clone();
        let embedded = proxy.is_some() && !self.separate_control;
        let mut p = Platform {
            builder: self,
            dir,
            proxy_key,
            known_hosts,
            control_url: String::new(),
            proxy: None,
            studios: Vec::new(),
            control: None,
            proxies_started: 0,
            _temp: temp,
        };
        if !embedded {
            p.start_control();
        }
        if let Some(mut options) = proxy {
            if embedded {
                options = options.embed_control();
            }
            let mut proxy = p.start_proxy(&options).unwrap_or_else(|e| panic!("{e}"));
            if embedded {
                let line = proxy
                    .process
                    .wait_for_msg("embedded control plane listening", START);
                p.control_url = format!("http://{}", line["addr"].as_str().expect("addr"));
            }
            p.proxy = Some(proxy);
        }
        p
    }
}

/// connect-control's database file in the platform's directory.
const CONTROL_DB: &str = "control.sqlite3";

/// A running platform; see the module docs.
pub struct Platform {
    builder: Builder,
    dir: PathBuf,
    /// The host key of every proxy.
    pub proxy_key: KeyPair,
    /// Pins [`Platform::proxy_key`] for every proxy the platform started
    /// (`[127.0.0.1]:PORT` lines), for `ssh -o UserKnownHostsFile=`.
    pub known_hosts: PathBuf,
    /// The admin API, `http://127.0.0.1:PORT`.
    pub control_url: String,
    proxy: Option<Proxy>,
    /// The Studios started so far, in order.
    pub studios: Vec<Studio>,
    /// connect-control when it runs as its own process.
    control: Option<Process>,
    proxies_started: usize,
    /// Removed last, after every program is gone.
    _temp: Option<tempfile::TempDir>,
}

/// A connect-client Studio registered with the control plane.
pub struct Studio {
    pub session: String,
    pub process: Process,
    /// Where it listens for the proxy, `127.0.0.1:PORT`.
    pub addr: String,
    /// Its `connect-client listening` log line (address, host key).
    pub listening: Value,
    /// Its `registered with the control plane` log line (the proxy key it
    /// adopted).
    pub registered: Value,
}

impl Platform {
    /// The tests' platform: [`Builder::default`], started.
    pub fn start() -> Self {
        Self::builder().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Keys, databases, logs; also a scratch directory for the caller.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (Re)starts the separate connect-control, on the address it had
    /// before (so Studios and proxies find it again) and its database.
    pub fn start_control(&mut self) {
        assert!(
            self.builder.proxy.is_none() || self.builder.separate_control,
            "this platform's control plane is embedded in its proxy"
        );
        self.stop_control();
        let addr = match self.control_url.strip_prefix("http://") {
            Some(addr) => addr.to_owned(),
            None => "127.0.0.1:0".to_owned(),
        };
        let mut cmd = hermetic(Command::new(self.program("connect-control")));
        self.control_plane_env(&mut cmd);
        cmd.env("CONNECT_CONTROL_ADDR", addr)
            .env("CONNECT_CONTROL_DB", self.dir.join(CONTROL_DB));
        let mut control = self.spawn("connect-control", cmd);
        let line = control.wait_for_msg("connect-control listening", START);
        self.control_url = format!("http://{}", line["addr"].as_str().expect("addr"));
        self.control = Some(control);
    }

    /// Kills the separate connect-control (live sessions and proxies carry
    /// on without it).
    pub fn stop_control(&mut self) {
        if let Some(mut control) = self.control.take() {
            control.kill();
        }
    }

    /// `TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES` of the control planes
    /// started from now on.
    pub fn set_allowed(&mut self, workspaces: Option<&str>) {
        self.builder.allowed = workspaces.map(str::to_owned);
    }

    /// The control plane's settings, for connect-control or a proxy that
    /// embeds it.
    fn control_plane_env(&self, cmd: &mut Command) {
        cmd.env("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "true")
            .env(
                "TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT",
                &self.proxy_key.fingerprint,
            )
            .env("TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS", "127.0.0.1")
            .env("CONNECT_CONTROL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CONNECT_CONTROL_PROXY_TOKEN", PROXY_TOKEN)
            .env("CONNECT_CONTROL_LOG_LEVEL", "info");
        if let Some(allowed) = &self.builder.allowed {
            cmd.env("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", allowed);
        }
        if let Some(interval) = &self.builder.heartbeat {
            cmd.env("CONNECT_CONTROL_HEARTBEAT_INTERVAL", interval);
        }
        cmd.envs(self.builder.control_env.iter().map(|(k, v)| (k, v)));
    }

    /// An admin API call; returns (status, JSON body).
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H"])
            .arg(format!("Authorization: Bearer {ADMIN_TOKEN}"))
            .arg(format!("{}{path}", self.control_url));
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "-d"])
                .arg(b.to_string());
        }
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    /// A user with a new key, registered through the API.
    pub fn user(&self, name: &str) -> KeyPair {
        let key = KeyPair::generate(&self.dir, &format!("user-{name}"), KeyType::Ed25519);
        let (status, body) = self.api(
            "POST",
            &format!("/v1/users/{name}/keys"),
            Some(json!({ "key": key.public_line })),
        );
        assert_eq!(status, 201, "{body}");
        key
    }

    /// Creates (or updates) session `id`; its registration token when
    /// created.
    pub fn session(
        &self,
        id: &str,
        workspace: u64,
        owner: &str,
        members: &[&str],
        ssh: bool,
    ) -> Option<String> {
        let (status, body) = self.api(
            "PUT",
            &format!("/v1/sessions/{id}"),
            Some(json!({ "workspaceId": workspace, "owner": owner, "members": members, "sshEnabled": ssh })),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
        body["registrationToken"].as_str().map(str::to_owned)
    }

    /// Creates session `id` and, if it is new, starts its Studio and waits
    /// until the proxy routes to it; the Studio's index in
    /// [`Platform::studios`].
    pub fn studio(
        &mut self,
        id: &str,
        workspace: u64,
        owner: &str,
        members: &[&str],
        ssh: bool,
    ) -> Option<usize> {
        let token = self.session(id, workspace, owner, members, ssh)?;
        self.start_studio(id, &token);
        self.wait_routed(id, "running");
        Some(self.studios.len() - 1)
    }

    /// Starts a connect-client for session `id` with its registration
    /// token and waits until it has registered (not until it is routed).
    pub fn start_studio(&mut self, id: &str, token: &str) -> &mut Studio {
        let mut cmd = hermetic(Command::new(self.program("connect-client")));
        // Commands run as `$SHELL -c ...` with SSH_CLIENT set; Debian's bash
        // then reads ~/.bashrc when SHLVL < 2 (as under sshd): the user's
        // shell set-up (~120 ms of pyenv init per command, or output) would
        // be measured and seen. SHLVL=1 makes the shells level 2: no rc
        // files.
        cmd.env("SHLVL", "1")
            .env_remove("BASH_ENV")
            .env_remove("ENV")
            .env("CONNECT_CLIENT_SSH_ADDR", "127.0.0.1:0")
            .env("CONNECT_CLIENT_CONTROL_URL", &self.control_url)
            .env("CONNECT_CLIENT_SESSION_ID", id)
            .env("CONNECT_CLIENT_TOKEN", token)
            .env("CONNECT_CLIENT_LOG_LEVEL", "info")
            .envs(self.builder.studio_env.iter().map(|(k, v)| (k, v)));
        let mut process = self.spawn(&format!("studio-{id}"), cmd);
        let listening = process.wait_for_msg("connect-client listening", START);
        let registered = process.wait_for_msg("registered with the control plane", START);
        self.studios.push(Studio {
            session: id.to_owned(),
            addr: listening["addr"].as_str().expect("addr").to_owned(),
            process,
            listening,
            registered,
        });
        self.studios.last_mut().expect("just pushed")
    }

    /// Waits until the control plane has the session in `state`, then
    /// until every core of the platform's proxy routes with a state at
    /// least as new (its `connect_proxy_core_state_revision`).
    pub fn wait_routed(&self, id: &str, state: &str) {
        let deadline = Instant::now() + START;
        loop {
            let (_, s) = self.api("GET", &format!("/v1/sessions/{id}"), None);
            if s["state"] == state {
                break;
            }
            assert!(Instant::now() < deadline, "session {id} never {state}: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The control plane publishes a change before its API shows it, so
        // this revision includes the change just seen.
        let revision = self.control_revision();
        if let Some(proxy) = &self.proxy {
            loop {
                let served = proxy.served_revision();
                if served >= revision {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} serves revision {served}, never {revision}",
                    proxy.name
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The revision the control plane publishes to watchers (`/readyz`:
    /// `ready at revision N`).
    pub fn control_revision(&self) -> u64 {
        let out = Command::new("curl")
            .args(["-sS", &format!("{}/readyz", self.control_url)])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .strip_prefix("ready at revision ")
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("/readyz answered {text:?}"))
    }

    /// The proxy started with the platform.
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("the platform was started without a proxy")
    }

    pub fn proxy_mut(&mut self) -> &mut Proxy {
        self.proxy
            .as_mut()
            .expect("the platform was started without a proxy")
    }

    /// The SSH port of the platform's proxy.
    pub fn ssh_port(&self) -> u16 {
        self.proxy().port
    }

    /// OpenSSH as `user@session` through the platform's proxy, host key
    /// pinned.
    pub fn ssh(&self, key: &KeyPair, user: &str, session: &str) -> Ssh {
        Ssh {
            port: self.ssh_port(),
            user: format!("{user}@{session}"),
            identity: key.private.clone(),
            known_hosts: Some(self.known_hosts.clone()),
        }
    }

    /// The platform proxy's Prometheus text.
    pub fn metrics(&self) -> String {
        self.proxy().metrics()
    }

    /// One series of the platform's proxy (exact name and labels); 0 when
    /// absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.proxy().metric(series)
    }

    /// The path of a workspace program in the binaries directory.
    fn program(&self, name: &str) -> PathBuf {
        let path = self.builder.bin_dir.join(name);
        assert!(
            path.exists(),
            "{} is not built; build the workspace's binaries first (cargo build --workspace --bins)",
            path.display()
        );
        path
    }

    /// Starts `cmd`, logging where the builder said.
    fn spawn(&self, name: &str, cmd: Command) -> Process {
        if self.builder.log_files {
            Process::spawn_logged(cmd, &self.dir.join(format!("{name}.log")))
        } else {
            Process::spawn(cmd)
        }
    }
}

/// `cmd` without the `CONNECT_*` and `TOWER_*` variables of this process
/// (those set on `cmd` itself stay).
fn hermetic(mut cmd: Command) -> Command {
    let own: Vec<_> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if (text.starts_with("CONNECT_") || text.starts_with("TOWER_")) && !own.contains(&name) {
            cmd.env_remove(&name);
        }
    }
    cmd
}
