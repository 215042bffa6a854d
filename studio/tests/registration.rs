//! connect-client registering with the real connect-control: it adopts the
//! proxy key from the answer, keeps serving when the control plane dies,
//! and registers again after being marked stopped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{Platform, Ssh};

const SESSION: &str = "01ac8894";

#[test]
fn registers_adopts_the_proxy_key_survives_the_control_plane_and_reregisters() {
    let mut p = Platform::builder()
        .no_proxy()
        .control_env("CONNECT_CONTROL_MISSED_HEARTBEATS", "2")
        .start();
    let token = p
        .session(SESSION, 1, "alice", &[], true)
        .expect("registration token");

    // No CONNECT_CLIENT_SSH_KEY_FINGERPRINT: the key comes from registration.
    let client = p.start_studio(SESSION, &token);
    let (listening, registered) = (client.listening.clone(), client.registered.clone());
    let pid = client.process.pid().to_string();
    assert_eq!(
        registered["proxy_fingerprint"],
        p.proxy_key.fingerprint.as_str()
    );

    let state = |p: &Platform| p.api("GET", &format!("/v1/sessions/{SESSION}"), None).1;
    let session = state(&p);
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
        identity: p.proxy_key.private.clone(),
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
    p.stop_control();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(echo(&ssh), "reached\n");

    // Back on the same database and address; then the Studio goes silent
    // long enough to be marked stopped, and on waking registers again.
    p.start_control();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(&p)["state"] != "stopped" {
        assert!(Instant::now() < deadline, "never marked stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    p.studios[0]
        .process
        .wait_for(|v| v["msg"] == "registering again", Duration::from_secs(20))
        .expect("re-registration after being stopped");
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(&p)["state"] != "running" {
        assert!(Instant::now() < deadline, "never running again");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(echo(&ssh), "reached\n");
}
