//! `connect-proxy --dev`: a complete local system in one process, for
//! trying the product and for the README's first command.
//!
//! It keeps its keys in `$TMPDIR/connect-dev-<uid>/` (so the printed line
//! stays the same across runs), starts the embedded control plane with SSH
//! on for every workspace, a proxy on `127.0.0.1:2222` (or
//! `CONNECT_SSH_ADDR`), a connect-client in-process registered as demo
//! session `01ac8894`, adds a demo user `demo` with a fresh key, and prints
//! an `ssh` line that works when pasted.

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use model::SessionState;
use model::env::{ProcessEnv, Source};
use model::logging::LogLevel;
use ring::rand::{SecureRandom, SystemRandom};
use ssh_key::LineEnding;
use ssh_key::PrivateKey;
use ssh_key::private::Ed25519Keypair;

use crate::{Config, Options, start, wait_for_shutdown};

const SESSION: &str = "01ac8894";
const USER: &str = "demo";

/// Runs the dev system until Ctrl-C; returns the exit code.
pub fn run() -> i32 {
    model::logging::init(
        ProcessEnv
            .get("CONNECT_LOG_LEVEL")
            .and_then(|v| v.parse().ok())
            .unwrap_or(LogLevel::Warn),
    );
    match setup() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("connect-proxy --dev: {e}");
            1
        }
    }
}

fn setup() -> Result<i32, String> {
    let dir = std::env::temp_dir().join(format!("connect-dev-{}", nix_uid()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    // One --dev per directory: a second would rewrite the first's admin
    // token, known_hosts and database under it. Held until exit.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| format!("{}: {e}", dir.join("lock").display()))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| {
            format!(
                "another connect-proxy --dev is running with {} (its ssh line still works); \
                 stop it first, or give this one its own directory: TMPDIR=/some/dir connect-proxy --dev",
                dir.display()
            )
        })?;
    let proxy_key = key_file(&dir.join("proxy_key"))?;
    let demo_key = key_file(&dir.join("demo_key"))?;
    let proxy_fp = crate::key::fingerprint(&proxy_key);
    let demo_pub = demo_key
        .public_key()
        .to_openssh()
        .map_err(|e| e.to_string())?;

    let mut ssh_addr = ProcessEnv
        .get("CONNECT_SSH_ADDR")
        .unwrap_or_else(|| "127.0.0.1:2222".into());
    // Port 0 asks for any free port; the control plane must know the real
    // one for the ssh lines it hands out, so pick it now.
    if let Some(host) = ssh_addr.strip_suffix(":0") {
        let probe = std::net::TcpListener::bind(format!("{host}:0"))
            .map_err(|e| format!("CONNECT_SSH_ADDR: {e}"))?;
        ssh_addr = probe.local_addr().map_err(|e| e.to_string())?.to_string();
    }
    let mgmt = ProcessEnv
        .get("CONNECT_MANAGEMENT_PORT")
        .unwrap_or_else(|| "0".into());
    let proxy_env: HashMap<String, String> = [
        ("CONNECT_SSH_ENABLED", "true".to_owned()),
        (
            "CONNECT_SSH_KEY_PATH",
            dir.join("proxy_key").display().to_string(),
        ),
        ("CONNECT_SSH_ADDR", ssh_addr.clone()),
        ("CONNECT_MANAGEMENT_PORT", mgmt),
        (
            "CONNECT_IO",
            ProcessEnv
                .get("CONNECT_IO")
                .unwrap_or_else(|| "auto".into()),
        ),
        (
            "CONNECT_CORES",
            ProcessEnv.get("CONNECT_CORES").unwrap_or_default(),
        ),
        ("CONNECT_PROXY_NAME", "dev".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut config = Config::from_env(proxy_env).map_err(|e| e.to_string())?;
    // A local system: nothing of it listens beyond this machine by default.
    config.management_ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let port = config.ssh_addr.port();

    let admin = token()?;
    let control_env: HashMap<String, String> = [
        ("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", String::new()),
        ("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "true".into()),
        (
            "TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT",
            proxy_fp.to_string(),
        ),
        ("TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS", "127.0.0.1".into()),
        ("TOWER_DATA_STUDIO_CONNECT_SSH_PORT", port.to_string()),
        ("CONNECT_CONTROL_ADDR", "127.0.0.1:0".into()),
        (
            "CONNECT_CONTROL_DB",
            dir.join("control.sqlite3").display().to_string(),
        ),
        ("CONNECT_CONTROL_ADMIN_TOKEN", admin.clone()),
        ("CONNECT_CONTROL_PROXY_TOKEN", token()?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let control = controlplane::Config::from_env(control_env).map_err(|e| e.to_string())?;

    let running = start(
        config,
        Options {
            control: Some(control),
        },
    )
    .map_err(|e| e.to_string())?;
    let ssh = running.ssh_addr.ok_or("no SSH listener")?;
    let control_url = format!(
        "http://{}",
        running.control_addr.ok_or("no embedded control plane")?
    );

    // The demo session and user, through the control plane's own API.
    let registration = running.runtime.block_on(async {
        let http = reqwest::Client::new();
        let created = http
            .put(format!(
                "{control_url}/v1/sessions/{SESSION}?rotateToken=true"
            ))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "workspaceId": 1, "owner": USER, "sshEnabled": true }))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json::<serde_json::Value>()
            .await
            .map_err(|e| e.to_string())?;
        let token = created["registrationToken"]
            .as_str()
            .ok_or("no registration token")?
            .to_owned();
        http.post(format!("{control_url}/v1/users/{USER}/keys"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "key": demo_pub }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(token)
    })?;

    // A connect-client in this process, as the demo Studio.
    let client_env: HashMap<&str, String> = [
        ("CONNECT_CLIENT_SSH_ADDR", "127.0.0.1:0".to_owned()),
        ("CONNECT_CLIENT_CONTROL_URL", control_url.clone()),
        ("CONNECT_CLIENT_SESSION_ID", SESSION.into()),
        ("CONNECT_CLIENT_TOKEN", registration),
    ]
    .into_iter()
    .collect();
    let client_config =
        connect_client::Config::from_env(EnvMap(client_env)).map_err(|e| e.to_string())?;
    running.runtime.spawn(async move {
        if let Err(e) = connect_client::run(client_config).await {
            tracing::error!(error = %e, "demo connect-client stopped");
        }
    });
    wait_until_running(&running.fanout)?;

    let known_hosts = dir.join("known_hosts");
    let host = if ssh.port() == 22 {
        "127.0.0.1".to_owned()
    } else {
        format!("[127.0.0.1]:{}", ssh.port())
    };
    let public = proxy_key
        .public_key()
        .to_openssh()
        .map_err(|e| e.to_string())?;
    std::fs::write(&known_hosts, format!("{host} {public}\n")).map_err(|e| e.to_string())?;

    println!("connect-proxy --dev is running:");
    println!(
        "  proxy          {ssh} (management http://{})",
        running.management_addr
    );
    println!(
        "  control plane  {control_url} (admin token in {})",
        write_secret(&dir.join("admin_token"), &admin)?.display()
    );
    println!(
        "  demo Studio    session {SESSION}, user {USER}, key {}",
        dir.join("demo_key").display()
    );
    println!("Connect with:");
    println!(
        "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -p {} {USER}@{SESSION}@127.0.0.1",
        dir.join("demo_key").display(),
        known_hosts.display(),
        ssh.port()
    );
    wait_for_shutdown(&running);
    Ok(0)
}

/// Loads an ed25519 key from `path`, or creates one there (mode 0600).
fn key_file(path: &Path) -> Result<PrivateKey, String> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(key) = PrivateKey::from_openssh(text.trim())
    {
        return Ok(key);
    }
    let mut seed = [0u8; 32];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| "system random source failed")?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment("connect-dev");
    let text = key.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
    write_secret(path, &text)?;
    let public = key.public_key().to_openssh().map_err(|e| e.to_string())?;
    std::fs::write(path.with_extension("pub"), format!("{public}\n")).map_err(|e| e.to_string())?;
    Ok(key)
}

/// Writes `value` to a new file only the owner can read (0600).
fn write_secret(path: &Path, value: &str) -> Result<PathBuf, String> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, value.as_bytes()).map_err(|e| e.to_string())?;
    Ok(path.to_owned())
}

fn token() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "system random source failed")?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

/// Waits until the demo Studio has registered and the proxy's state says so.
fn wait_until_running(fanout: &crate::control::Fanout) -> Result<(), String> {
    let id: model::SessionId = SESSION.parse().map_err(|e| format!("{e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if fanout
            .latest()
            .and_then(|s| s.sessions.get(&id).map(|s| s.state))
            == Some(SessionState::Running)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("the demo Studio did not register within 30 s".into())
}

struct EnvMap(HashMap<&'static str, String>);

impl Source for EnvMap {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}
