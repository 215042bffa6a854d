//! connect-control as operators and proxies meet it: the real binary on
//! 127.0.0.1:0 with a real SQLite file, driven over real HTTP.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use model::state::{Follower, WatchLine};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{KeyPair, KeyType, Process};

const BIN: &str = env!("CARGO_BIN_EXE_connect-control");
const ADMIN: &str = "admin-token-for-tests-0001";
const PROXY: &str = "proxy-token-for-tests-0001";
const FP: &str = "SHA256:NEu6MAPGJpImFJ3raQzv6+NubCPy/92hqR+CVyMjKvM";

struct Control {
    process: Process,
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

/// Environment for a control plane with SSH on for every workspace and
/// key management enabled, plus `extra`.
fn env_on(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", ""),
        ("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "true"),
        ("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT", FP),
        ("TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS", "ssh.example.com"),
    ];
    env.extend_from_slice(extra);
    env
}

impl Control {
    fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, env)
    }

    fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CONNECT_CONTROL_ADDR", "127.0.0.1:0")
            .env("CONNECT_CONTROL_DB", dir.path().join("control.sqlite3"))
            .env("CONNECT_CONTROL_ADMIN_TOKEN", ADMIN)
            .env("CONNECT_CONTROL_PROXY_TOKEN", PROXY);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut process = Process::spawn(cmd);
        let line = process.wait_for_msg("connect-control listening", Duration::from_secs(20));
        let addr = line["addr"].as_str().expect("addr").to_owned();
        Self {
            process,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// Stops with SIGKILL and starts again on the same database.
    fn restart_after_kill(self, env: &[(&str, &str)]) -> Self {
        let Control {
            mut process, dir, ..
        } = self;
        process.kill();
        Self::start_in(dir, env)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    async fn put_session(&self, id: &str, body: Value) -> (StatusCode, Value) {
        self.admin(
            reqwest::Method::PUT,
            &format!("/v1/sessions/{id}"),
            Some(body),
        )
        .await
    }

    /// Reads watch lines until `done` says stop (bounded by a timeout).
    async fn watch_until(
        &self,
        from: Option<u64>,
        mut done: impl FnMut(&[WatchLine]) -> bool,
    ) -> Vec<WatchLine> {
        let path = match from {
            Some(r) => format!("/v1/watch?from={r}"),
            None => "/v1/watch".to_owned(),
        };
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(PROXY)
            .send()
            .await
            .expect("watch");
        assert_eq!(resp.status(), StatusCode::OK);
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk.expect("chunk"));
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    lines.push(
                        serde_json::from_slice::<WatchLine>(&line).expect("watch line parses"),
                    );
                    if done(&lines) {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("watch lines in time");
        lines
    }
}

fn session_body(workspace: u64, owner: &str, ssh: bool) -> Value {
    json!({ "workspaceId": workspace, "owner": owner, "members": ["bob"], "sshEnabled": ssh })
}

fn follow(lines: &[WatchLine]) -> Follower {
    let mut f = Follower::default();
    for l in lines {
        f.apply(l).expect("consistent stream");
    }
    f
}

fn snapshot_done(lines: &[WatchLine]) -> bool {
    matches!(lines.last(), Some(WatchLine::SnapshotEnd { .. }))
}

use reqwest::Method;

#[tokio::test]
async fn ssh_unset_refuses_the_toggle_and_tells_proxies_off() {
    let c = Control::start(&[]);
    let (status, body) = c
        .put_session("01ac8894", session_body(1, "alice", true))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES")
    );
    // Nothing partial stored.
    let (status, _) = c.admin(Method::GET, "/v1/sessions/01ac8894", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Off is still a valid session state without the toggle.
    let (status, _) = c
        .put_session("01ac8894", session_body(1, "alice", false))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let lines = c.watch_until(None, snapshot_done).await;
    assert_eq!(follow(&lines).state().access, model::SshAccess::Off);
}

#[tokio::test]
async fn allowlist_empty_means_all_and_a_list_means_only_those() {
    let all = Control::start(&env_on(&[]));
    assert_eq!(
        all.put_session("00000001", session_body(424242, "alice", true))
            .await
            .0,
        StatusCode::CREATED
    );

    let listed = Control::start(&env_on(&[(
        "TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES",
        "12345, 67890",
    )]));
    assert_eq!(
        listed
            .put_session("00000001", session_body(67890, "alice", true))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, body) = listed
        .put_session("00000002", session_body(5, "alice", true))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("workspace 5"),
        "{body}"
    );
    let lines = listed.watch_until(None, snapshot_done).await;
    let access = follow(&lines).state().access.clone();
    assert!(access.allows(12345.into()) && access.allows(67890.into()) && !access.allows(5.into()));
}

#[test]
fn bad_configuration_exits_64_naming_the_variable() {
    for (var, value) in [
        ("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", "12345,abc"),
        ("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT", "MD5:00:11"),
        (
            "TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS",
            "https://ssh.example.com",
        ),
        ("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "yes please"),
        ("CONNECT_CONTROL_ADMIN_TOKEN", "short"),
    ] {
        let out = Command::new(BIN)
            .env_clear()
            .env("CONNECT_CONTROL_ADMIN_TOKEN", ADMIN)
            .env("CONNECT_CONTROL_PROXY_TOKEN", PROXY)
            .env(var, value)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{var}={value}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(var),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn keys_follow_management_switch_and_validate() {
    let off = Control::start(&[]);
    let (status, body) = off.admin(Method::GET, "/v1/users/alice/keys", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("TOWER_SSH_KEYS_MANAGEMENT_ENABLED")
    );

    let c = Control::start(&env_on(&[]));
    let pair = KeyPair::generate(c.dir.path(), "alice-laptop", KeyType::Ed25519);
    let (status, body) = c
        .admin(
            Method::POST,
            "/v1/users/alice/keys",
            Some(json!({ "key": pair.public_line })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["fingerprint"], pair.fingerprint.as_str());
    assert_eq!(body["type"], "ssh-ed25519");
    assert_eq!(body["comment"], "alice-laptop");
    let (status, _) = c
        .admin(
            Method::POST,
            "/v1/users/alice/keys",
            Some(json!({ "key": pair.public_line })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let short = testkit::sh(&format!(
        "ssh-keygen -t rsa -b 1024 -N '' -q -f {0}/rsa1k && cat {0}/rsa1k.pub",
        c.dir.path().display()
    ));
    let (status, body) = c
        .admin(
            Method::POST,
            "/v1/users/alice/keys",
            Some(json!({ "key": short.trim() })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2048"),
        "{body}"
    );
    assert_eq!(body["error"]["field"], "key");
    let (status, _) = c
        .admin(
            Method::POST,
            "/v1/users/alice/keys",
            Some(json!({ "key": "ssh-dss AAAA nope" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, list) = c.admin(Method::GET, "/v1/users/alice/keys", None).await;
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(1));
    let encoded = pair.fingerprint.replace('/', "%2F").replace('+', "%2B");
    let path = format!("/v1/users/alice/keys/{encoded}");
    assert_eq!(
        c.admin(Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.admin(Method::DELETE, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn tokens_are_checked_and_bad_input_names_the_field() {
    let c = Control::start(&env_on(&[]));
    let path = "/v1/sessions/01ac8894";
    assert_eq!(
        c.call(Method::GET, path, None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.call(Method::GET, path, Some("wrong-token-wrong-token"), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.call(Method::GET, path, Some(PROXY), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.call(Method::GET, "/v1/watch", Some(ADMIN), None).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, body) = c
        .put_session(
            "01ac8894",
            json!({ "workspaceId": "x", "owner": "alice", "sshEnabled": true }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "workspaceId", "{body}");
    let (status, body) = c
        .put_session(
            "01ac8894",
            json!({ "workspaceId": 1, "owner": "al ice", "sshEnabled": true }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("owner")),
        "{body}"
    );
    let (status, body) = c
        .put_session("01ac8894", json!({ "workspaceId": 1, "owner": "alice" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("sshEnabled"),
        "{body}"
    );
    let (status, body) = c
        .put_session("01AC8894", session_body(1, "alice", true))
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("id"))
    );
    let huge = json!({ "workspaceId": 1, "owner": "alice", "sshEnabled": true, "members": vec!["m".repeat(100); 1000] });
    assert_eq!(
        c.put_session("01ac8894", huge).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // None of it was stored.
    assert_eq!(
        c.admin(Method::GET, path, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.admin(Method::GET, "/v1/nothing-here", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn registration_heartbeat_expiry_and_reregistration() {
    let c = Control::start(&env_on(&[
        ("CONNECT_CONTROL_HEARTBEAT_INTERVAL", "1s"),
        ("CONNECT_CONTROL_MISSED_HEARTBEATS", "2"),
    ]));
    let (status, created) = c
        .put_session("01ac8894", session_body(1, "alice", true))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = created["registrationToken"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(created["state"], "starting");

    let register = json!({ "endpoint": "127.0.0.1:2223", "hostKeyFingerprint": FP });
    let path = "/v1/sessions/01ac8894/register";
    assert_eq!(
        c.call(
            Method::POST,
            path,
            Some("not-the-token"),
            Some(register.clone())
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let bad = json!({ "endpoint": "http://x:1", "hostKeyFingerprint": FP });
    assert_eq!(
        c.call(Method::POST, path, Some(&token), Some(bad)).await.1["error"]["field"],
        "endpoint"
    );
    let (status, answer) = c
        .call(Method::POST, path, Some(&token), Some(register.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({ "proxyKeyFingerprint": FP, "heartbeatSeconds": 1 })
    );
    let (_, s) = c.admin(Method::GET, "/v1/sessions/01ac8894", None).await;
    assert_eq!(
        (s["state"].as_str(), s["endpoint"].as_str()),
        (Some("running"), Some("127.0.0.1:2223"))
    );
    assert!(
        s.get("registrationToken").is_none(),
        "the token is shown once"
    );

    let hb = "/v1/sessions/01ac8894/heartbeat";
    // Heartbeats keep it running: checked right after each one, so a slow
    // moment of the machine between them cannot fail the test.
    for _ in 0..3 {
        assert_eq!(
            c.call(Method::POST, hb, Some(&token), None).await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            c.admin(Method::GET, "/v1/sessions/01ac8894", None).await.1["state"],
            "running"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    // Silence: stopped after 2 missed heartbeats (2 s), and the heartbeat
    // says so. Waits on the server's own report of the state; the bound
    // is only a hang guard.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = c.admin(Method::GET, "/v1/sessions/01ac8894", None).await.1["state"].clone();
        if state == "stopped" {
            break;
        }
        assert_eq!(state, "running");
        assert!(
            std::time::Instant::now() < deadline,
            "still running 30 s after the last heartbeat"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.call(Method::POST, hb, Some(&token), None).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        c.call(Method::POST, path, Some(&token), Some(register.clone()))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        c.admin(Method::GET, "/v1/sessions/01ac8894", None).await.1["state"],
        "running"
    );
}

#[tokio::test]
async fn registration_says_nothing_about_unknown_sessions_and_pins_the_host_key() {
    use reqwest::Method;
    let c = Control::start(&env_on(&[]));
    let (_, created) = c
        .put_session("01ac8894", session_body(1, "alice", true))
        .await;
    let token = created["registrationToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let register = json!({ "endpoint": "127.0.0.1:2223", "hostKeyFingerprint": FP });

    // An unknown session and a wrong token get the same answer, on both
    // calls: the API is no oracle of which sessions exist.
    let wrong_token = c
        .call(
            Method::POST,
            "/v1/sessions/01ac8894/register",
            Some("not-the-token"),
            Some(register.clone()),
        )
        .await;
    let unknown = c
        .call(
            Method::POST,
            "/v1/sessions/0badf00d/register",
            Some(&token),
            Some(register.clone()),
        )
        .await;
    assert_eq!(wrong_token.0, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown, wrong_token);
    let hb_wrong = c
        .call(
            Method::POST,
            "/v1/sessions/01ac8894/heartbeat",
            Some("not-the-token"),
            None,
        )
        .await;
    let hb_unknown = c
        .call(
            Method::POST,
            "/v1/sessions/0badf00d/heartbeat",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(hb_wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(hb_unknown, hb_wrong);

    // The first registration pins the host key; the endpoint may move, the
    // key may not.
    let path = "/v1/sessions/01ac8894/register";
    assert_eq!(
        c.call(Method::POST, path, Some(&token), Some(register))
            .await
            .0,
        StatusCode::OK
    );
    let moved = json!({ "endpoint": "127.0.0.1:2224", "hostKeyFingerprint": FP });
    assert_eq!(
        c.call(Method::POST, path, Some(&token), Some(moved))
            .await
            .0,
        StatusCode::OK
    );
    let other_fp = "SHA256:AAu6MAPGJpImFJ3raQzv6+NubCPy/92hqR+CVyMjKvM";
    let hijack = json!({ "endpoint": "10.9.9.9:22", "hostKeyFingerprint": other_fp });
    let (status, refused) = c
        .call(Method::POST, path, Some(&token), Some(hijack.clone()))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("pinned")),
        "{refused}"
    );
    let (_, s) = c.admin(Method::GET, "/v1/sessions/01ac8894", None).await;
    assert_eq!(
        (s["endpoint"].as_str(), s["hostKeyFingerprint"].as_str()),
        (Some("127.0.0.1:2224"), Some(FP)),
        "a refused registration changes nothing"
    );

    // A new session start (a rotated token) unpins it; the old token is dead.
    let (status, rotated) = c
        .admin(
            Method::PUT,
            "/v1/sessions/01ac8894?rotateToken=true",
            Some(session_body(1, "alice", true)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["state"], "starting");
    let new_token = rotated["registrationToken"].as_str().expect("new token");
    assert_eq!(
        c.call(Method::POST, path, Some(&token), Some(hijack.clone()))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.call(Method::POST, path, Some(new_token), Some(hijack))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn ssh_info_gives_the_command_and_config_block() {
    let c = Control::start(&env_on(&[("TOWER_DATA_STUDIO_CONNECT_SSH_PORT", "2222")]));
    c.put_session("01ac8894", session_body(1, "alice", true))
        .await;
    let (status, info) = c
        .admin(Method::GET, "/v1/sessions/01ac8894/ssh?user=alice", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        info["command"],
        "ssh alice@01ac8894@ssh.example.com -p 2222"
    );
    assert_eq!(
        info["sshConfig"],
        "Host 01ac8894\n  HostName ssh.example.com\n  User alice@01ac8894\n  Port 2222\n"
    );
    assert_eq!(
        c.admin(Method::GET, "/v1/sessions/01ac8894/ssh?user=bob", None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        c.admin(Method::GET, "/v1/sessions/01ac8894/ssh?user=mallory", None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.admin(Method::GET, "/v1/sessions/01ac8894/ssh", None)
            .await
            .1["error"]["field"],
        "user"
    );
}

#[tokio::test]
async fn everything_survives_kill_9() {
    let env = env_on(&[]);
    let c = Control::start(&env);
    let pair = KeyPair::generate(c.dir.path(), "k", KeyType::Ed25519);
    assert_eq!(
        c.admin(
            Method::POST,
            "/v1/users/alice/keys",
            Some(json!({ "key": pair.public_line }))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    for i in 0..20u32 {
        let id = format!("{i:08x}");
        assert_eq!(
            c.put_session(&id, session_body(u64::from(i), "alice", true))
                .await
                .0,
            StatusCode::CREATED
        );
    }
    let before = follow(&c.watch_until(None, snapshot_done).await)
        .state()
        .clone();

    let c = c.restart_after_kill(&env);
    let after = follow(&c.watch_until(None, snapshot_done).await)
        .state()
        .clone();
    assert_eq!(after, before, "state and revision survive SIGKILL");
    let (_, keys) = c.admin(Method::GET, "/v1/users/alice/keys", None).await;
    assert_eq!(keys["keys"][0]["fingerprint"], pair.fingerprint.as_str());
}

#[tokio::test]
async fn watch_streams_deltas_and_resumes_after_a_dropped_connection() {
    let c = Control::start(&env_on(&[]));
    let snapshot = c.watch_until(None, snapshot_done).await;
    let at = snapshot.last().expect("lines").revision();

    // A change while connected arrives as a delta with the next revision.
    let watching = c.watch_until(Some(at.0), |lines| {
        lines.iter().any(|l| matches!(l, WatchLine::Change { .. }))
    });
    let writer = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.put_session("01ac8894", session_body(1, "alice", true))
            .await
    };
    let (lines, (status, _)) = tokio::join!(watching, writer);
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        matches!(&lines[0], WatchLine::Change { revision, .. } if revision.0 == at.0 + 1),
        "{lines:?}"
    );

    // Dropped; more changes; resuming from the last revision gets exactly
    // the missed deltas, no snapshot.
    let resume_from = lines[0].revision();
    c.put_session("01ac8895", session_body(1, "alice", true))
        .await;
    c.admin(Method::DELETE, "/v1/sessions/01ac8894", None).await;
    let resumed = c.watch_until(Some(resume_from.0), |l| l.len() == 2).await;
    assert!(
        resumed
            .iter()
            .all(|l| matches!(l, WatchLine::Change { .. })),
        "{resumed:?}"
    );
    assert_eq!(resumed[1].revision().0, resume_from.0 + 2);

    // Every line carries its revision; a heartbeat comes within 15 s even
    // when nothing changes.
    let idle = c
        .watch_until(Some(resumed[1].revision().0), |l| !l.is_empty())
        .await;
    assert!(
        matches!(idle[0], WatchLine::Heartbeat { revision } if revision == resumed[1].revision())
    );
}

#[tokio::test]
async fn watch_too_far_behind_gets_a_snapshot() {
    let c = Control::start(&env_on(&[("CONNECT_CONTROL_LOG_RETAIN", "2")]));
    for i in 0..5u32 {
        c.put_session(&format!("{i:08x}"), session_body(1, "alice", true))
            .await;
    }
    let lines = c.watch_until(Some(1), snapshot_done).await;
    assert!(
        matches!(lines[0], WatchLine::SnapshotBegin { .. }),
        "{:?}",
        lines[0]
    );
    assert_eq!(follow(&lines).state().sessions.len(), 5);
}

#[tokio::test]
async fn metrics_health_and_openapi() {
    let c = Control::start(&env_on(&[]));
    c.put_session("01ac8894", session_body(1, "alice", true))
        .await;
    let (status, metrics) = c.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().expect("text");
    for name in [
        "connect_control_http_requests_total{method=\"put\",route=\"/v1/sessions/{id}\",status=\"201\"} 1",
        "connect_control_http_request_duration_seconds_bucket",
        "connect_control_revision ",
        "connect_control_watchers 0",
        "connect_control_sessions{state=\"starting\"} 1",
        "connect_control_registrations_total 0",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
    assert_eq!(
        c.call(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.call(Method::GET, "/readyz", None, None).await.0,
        StatusCode::OK
    );
    let (status, doc) = c.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in controlplane::api::ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
}
