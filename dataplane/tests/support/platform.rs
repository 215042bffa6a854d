//! A whole platform on 127.0.0.1 for end-to-end tests: connect-proxy (with
//! its embedded control plane, or following a separate connect-control),
//! connect-client Studios registered through the real API, users with keys
//! made by ssh-keygen, and OpenSSH clients pinned to the proxy's host key.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{KeyPair, KeyType, Process, Ssh};

pub const PROXY_BIN: &str = env!("CARGO_BIN_EXE_connect-proxy");
pub const ADMIN: &str = "admin-token-for-tests-0001";
pub const PROXY_TOKEN: &str = "proxy-token-for-tests-0001";
const START: Duration = Duration::from_secs(30);

pub struct Platform {
    pub dir: tempfile::TempDir,
    pub proxy_key: KeyPair,
    pub proxy: Process,
    pub ssh_port: u16,
    pub management: String,
    pub control_url: String,
    /// A separately started connect-control, when not embedded.
    pub control: Option<Process>,
    pub known_hosts: PathBuf,
    /// Extra environment of the Studios started from now on.
    pub studio_env: Vec<(&'static str, String)>,
    studios: Vec<Process>,
}

/// How to start a platform.
pub struct Setup<'a> {
    /// `TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES`; `None` leaves it unset.
    pub allowed: Option<&'a str>,
    pub io: &'a str,
    /// Run connect-control as its own process and follow it remotely.
    pub remote_control: bool,
    pub extra: Vec<(&'a str, String)>,
    /// Run the proxy under a seccomp filter denying io_uring (Docker's
    /// default profile does).
    pub seccomp: bool,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            allowed: Some(""),
            io: "auto",
            remote_control: false,
            extra: Vec::new(),
            seccomp: false,
        }
    }
}

fn tower_env(cmd: &mut Command, allowed: Option<&str>, fingerprint: &str) {
    cmd.env_remove("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES")
        .env("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "true")
        .env("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT", fingerprint)
        .env("TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS", "127.0.0.1")
        .env("CONNECT_CONTROL_ADMIN_TOKEN", ADMIN)
        .env("CONNECT_CONTROL_PROXY_TOKEN", PROXY_TOKEN)
        .env("CONNECT_CONTROL_HEARTBEAT_INTERVAL", "1s");
    if let Some(a) = allowed {
        cmd.env("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", a);
    }
}

impl Platform {
    pub fn start(setup: Setup<'_>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let proxy_key = KeyPair::generate(dir.path(), "proxy", KeyType::Ed25519);
        let (control, control_url) = if setup.remote_control {
            let (p, url) = start_control(
                dir.path(),
                setup.allowed,
                &proxy_key.fingerprint,
                "127.0.0.1:0",
            );
            (Some(p), Some(url))
        } else {
            (None, None)
        };
        let mut proxy = start_proxy(&dir, &proxy_key, &setup, control_url.as_deref());
        let control_url = match control_url {
            Some(u) => u,
            None => {
                let line = proxy.wait_for_msg("embedded control plane listening", START);
                format!("http://{}", line["addr"].as_str().expect("addr"))
            }
        };
        let listening = proxy.wait_for_msg("connect-proxy listening", START);
        let ssh_port = port_of(&listening["addr"]);
        let management = listening["management"]
            .as_str()
            .expect("management")
            .replace("0.0.0.0", "127.0.0.1");
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, proxy_key.known_hosts_line(ssh_port)).expect("known_hosts");
        Self {
            dir,
            proxy_key,
            proxy,
            ssh_port,
            management,
            control_url,
            control,
            known_hosts,
            studio_env: Vec::new(),
            studios: Vec::new(),
        }
    }

    /// An admin API call; returns (status, JSON body).
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H"])
            .arg(format!("Authorization: Bearer {ADMIN}"))
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

    /// A user with a registered key.
    pub fn user(&self, name: &str) -> KeyPair {
        let key = KeyPair::generate(self.dir.path(), &format!("user-{name}"), KeyType::Ed25519);
        let (status, body) = self.api(
            "POST",
            &format!("/v1/users/{name}/keys"),
            Some(json!({ "key": key.public_line })),
        );
        assert_eq!(status, 201, "{body}");
        key
    }

    /// Creates session `id` and, if `run`, starts its Studio and waits until
    /// the proxy routes to it.
    pub fn studio(
        &mut self,
        id: &str,
        workspace: u64,
        owner: &str,
        members: &[&str],
        ssh: bool,
    ) -> Option<usize> {
        let (status, body) = self.api(
            "PUT",
            &format!("/v1/sessions/{id}"),
            Some(json!({ "workspaceId": workspace, "owner": owner, "members": members, "sshEnabled": ssh })),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
        let token = body["registrationToken"].as_str()?.to_owned();
        let mut cmd = Command::new(testkit::bin("connect-client"));
        cmd.env_remove("CONNECT_CLIENT_SSH_KEY_FINGERPRINT")
            .env("CONNECT_CLIENT_SSH_ADDR", "127.0.0.1:0")
            .env("CONNECT_CLIENT_CONTROL_URL", &self.control_url)
            .env("CONNECT_CLIENT_SESSION_ID", id)
            .env("CONNECT_CLIENT_TOKEN", token)
            .envs(self.studio_env.iter().map(|(k, v)| (k, v)));
        let mut p = Process::spawn(cmd);
        p.wait_for_msg("registered with the control plane", START);
        self.studios.push(p);
        self.wait_routed(id, "running");
        Some(self.studios.len() - 1)
    }

    /// Waits until the session has `state` in the proxy's own state (seen
    /// through its metrics: the revision moves past the change).
    pub fn wait_routed(&self, id: &str, state: &str) {
        let deadline = Instant::now() + START;
        loop {
            let (_, s) = self.api("GET", &format!("/v1/sessions/{id}"), None);
            if s["state"] == state {
                break;
            }
            assert!(Instant::now() < deadline, "session {id} never {state}: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The proxy follows the watch stream within milliseconds.
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn studio_process(&mut self, index: usize) -> &mut Process {
        &mut self.studios[index]
    }

    /// OpenSSH as `user@session` through the proxy, host key pinned.
    pub fn ssh(&self, key: &KeyPair, user: &str, session: &str) -> Ssh {
        Ssh {
            port: self.ssh_port,
            user: format!("{user}@{session}"),
            identity: key.private.clone(),
            known_hosts: Some(self.known_hosts.clone()),
        }
    }

    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://{}/metrics", self.management)])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of one metric line (exact name and labels).
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

pub fn start_control(
    dir: &std::path::Path,
    allowed: Option<&str>,
    fingerprint: &str,
    addr: &str,
) -> (Process, String) {
    let mut cmd = Command::new(testkit::bin("connect-control"));
    tower_env(&mut cmd, allowed, fingerprint);
    cmd.env("CONNECT_CONTROL_ADDR", addr)
        .env("CONNECT_CONTROL_DB", dir.join("control.sqlite3"));
    let mut p = Process::spawn(cmd);
    let line = p.wait_for_msg("connect-control listening", START);
    let url = format!("http://{}", line["addr"].as_str().expect("addr"));
    (p, url)
}

pub fn start_proxy(
    dir: &tempfile::TempDir,
    key: &KeyPair,
    setup: &Setup<'_>,
    control_url: Option<&str>,
) -> Process {
    Process::spawn(proxy_command(dir, key, setup, control_url))
}

/// The proxy's command line (under seccomp if `setup` says so).
pub fn proxy_command(
    dir: &tempfile::TempDir,
    key: &KeyPair,
    setup: &Setup<'_>,
    control_url: Option<&str>,
) -> Command {
    let mut cmd = if setup.seccomp {
        crate::seccomp::command_without_io_uring(PROXY_BIN, &[])
    } else {
        Command::new(PROXY_BIN)
    };
    tower_env(&mut cmd, setup.allowed, &key.fingerprint);
    cmd.env("CONNECT_SSH_ENABLED", "true")
        .env("CONNECT_SSH_ADDR", "127.0.0.1:0")
        .env("CONNECT_SSH_KEY_PATH", &key.private)
        .env("CONNECT_MANAGEMENT_PORT", "0")
        .env("CONNECT_CORES", "2")
        .env("CONNECT_IO", setup.io)
        .env("CONNECT_LOG_LEVEL", "debug")
        .env("CONNECT_CONTROL_ADDR", "127.0.0.1:0")
        .env("CONNECT_CONTROL_DB", dir.path().join("embedded.sqlite3"));
    if let Some(url) = control_url {
        cmd.env("CONNECT_CONTROL_URL", url)
            .env("CONNECT_CONTROL_TOKEN", PROXY_TOKEN);
    }
    for (k, v) in &setup.extra {
        cmd.env(k, v);
    }
    cmd
}

pub fn port_of(addr: &Value) -> u16 {
    addr.as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("port")
}
