//! connect-client registering with the real connect-control: it adopts the
//! proxy key from the answer, keeps serving when the control plane dies,
//! and registers again after being marked stopped.

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{KeyPair, KeyType, Process, Ssh};

const CLIENT: &str = env!("CARGO_BIN_EXE_connect-client");
const ADMIN: &str = "admin-token-for-tests-0001";

/// Starts connect-control on `addr` (fixed, so a restart keeps the URL the
/// Studio knows).
fn control(dir: &std::path::Path, proxy_fp: &str, addr: &str) -> (Process, String) {
    let mut cmd = Command::new(testkit::bin("connect-control"));
    cmd.env("CONNECT_CONTROL_ADDR", addr)
        .env("CONNECT_CONTROL_DB", dir.join("control.sqlite3"))
        .env("CONNECT_CONTROL_ADMIN_TOKEN", ADMIN)
        .env("CONNECT_CONTROL_PROXY_TOKEN", "proxy-token-for-tests-0001")
        .env("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", "")
        .env("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "true")
        .env("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT", proxy_fp)
        .env("CONNECT_CONTROL_HEARTBEAT_INTERVAL", "1s")
        .env("CONNECT_CONTROL_MISSED_HEARTBEATS", "2");
    let mut p = Process::spawn(cmd);
    let line = p.wait_for_msg("connect-control listening", Duration::from_secs(20));
    let url = format!("http://{}", line["addr"].as_str().expect("addr"));
    (p, url)
}

fn curl(args: &[&str]) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {ADMIN}")])
        .args(args)
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn registers_adopts_the_proxy_key_survives_the_control_plane_and_reregisters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = KeyPair::generate(dir.path(), "proxy", KeyType::Ed25519);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let (mut control_plane, url) = control(dir.path(), &proxy.fingerprint, &addr);

    let created = curl(&[
        "-X",
        "PUT",
        &format!("{url}/v1/sessions/01ac8894"),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"workspaceId":1,"owner":"alice","sshEnabled":true}"#,
    ]);
    let token = created["registrationToken"]
        .as_str()
        .expect("registration token")
        .to_owned();

    // No CONNECT_CLIENT_SSH_KEY_FINGERPRINT: the key comes from registration.
    let mut cmd = Command::new(CLIENT);
    cmd.env_remove("CONNECT_CLIENT_SSH_KEY_FINGERPRINT")
        .env("CONNECT_CLIENT_SSH_ADDR", "127.0.0.1:0")
        .env("CONNECT_CLIENT_CONTROL_URL", &url)
        .env("CONNECT_CLIENT_SESSION_ID", "01ac8894")
        .env("CONNECT_CLIENT_TOKEN", &token);
    let mut client = Process::spawn(cmd);
    let listening = client.wait_for_msg("connect-client listening", Duration::from_secs(20));
    let registered =
        client.wait_for_msg("registered with the control plane", Duration::from_secs(20));
    assert_eq!(registered["proxy_fingerprint"], proxy.fingerprint.as_str());

    let session = curl(&[&format!("{url}/v1/sessions/01ac8894")]);
    assert_eq!(session["state"], "running");
    assert_eq!(session["endpoint"], listening["addr"]);
    assert_eq!(
        session["hostKeyFingerprint"],
        listening["host_key_fingerprint"]
    );

    let port: u16 = listening["addr"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("port");
    let ssh = Ssh {
        port,
        user: "alice".into(),
        identity: proxy.private.clone(),
        known_hosts: None,
    };
    let echo = |ssh: &Ssh| {
        let out = ssh
            .ssh()
            .arg("echo reached")
            .stdin(Stdio::null())
            .output()
            .expect("ssh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(echo(&ssh), "reached\n", "the adopted key is accepted");

    // The control plane dies: the Studio keeps serving new connections.
    control_plane.kill();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(echo(&ssh), "reached\n");

    // Back on the same database and address; then the Studio goes silent
    // long enough to be marked stopped, and on waking registers again.
    let (_control_plane, url) = control(dir.path(), &proxy.fingerprint, &addr);
    let pid = client.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let state = |url: &str| curl(&[&format!("{url}/v1/sessions/01ac8894")])["state"].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while state(&url) != "stopped" {
        assert!(std::time::Instant::now() < deadline, "never marked stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    client
        .wait_for(|v| v["msg"] == "registering again", Duration::from_secs(20))
        .expect("re-registration after being stopped");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while state(&url) != "running" {
        assert!(std::time::Instant::now() < deadline, "never running again");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(echo(&ssh), "reached\n");
}
