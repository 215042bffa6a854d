//! Property: for any sequence of API writes, the empty state (revision 0)
//! plus every delta the watch stream sends equals the snapshot it sends at
//! the final revision. Runs the control plane in-process (the library
//! connect-proxy embeds) on a real SQLite file and real HTTP.

use std::sync::Arc;
use std::time::Duration;

use controlplane::store::sqlite::SqliteStore;
use futures::StreamExt;
use model::state::{Follower, Revision, WatchLine};
use proptest::prelude::*;
use serde_json::json;

const ADMIN: &str = "admin-token-for-tests-0001";
const PROXY: &str = "proxy-token-for-tests-0001";
const FP: &str = "SHA256:NEu6MAPGJpImFJ3raQzv6+NubCPy/92hqR+CVyMjKvM";

#[derive(Debug, Clone)]
enum Write {
    AddKey {
        user: usize,
        key: usize,
    },
    RemoveKey {
        user: usize,
        key: usize,
    },
    PutSession {
        id: usize,
        workspace: u64,
        owner: usize,
        member: Option<usize>,
        ssh: bool,
    },
    DeleteSession {
        id: usize,
    },
    Register {
        id: usize,
    },
}

const USERS: [&str; 3] = ["alice", "bob", "carol@example.com"];

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        (0..3usize, 0..3usize).prop_map(|(user, key)| Write::AddKey { user, key }),
        (0..3usize, 0..3usize).prop_map(|(user, key)| Write::RemoveKey { user, key }),
        (
            0..4usize,
            1..4u64,
            0..3usize,
            proptest::option::of(0..3usize),
            any::<bool>()
        )
            .prop_map(|(id, workspace, owner, member, ssh)| Write::PutSession {
                id,
                workspace,
                owner,
                member,
                ssh
            }),
        (0..4usize).prop_map(|id| Write::DeleteSession { id }),
        (0..4usize).prop_map(|id| Write::Register { id }),
    ]
}

struct Fixture {
    base: String,
    http: reqwest::Client,
    keys: Vec<String>,
    tokens: std::collections::HashMap<usize, String>,
    _dir: tempfile::TempDir,
}

async fn start(keys: Vec<String>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: std::collections::HashMap<&str, &str> = [
        ("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", "1,2"),
        ("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "true"),
        ("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT", FP),
        ("CONNECT_CONTROL_ADMIN_TOKEN", ADMIN),
        ("CONNECT_CONTROL_PROXY_TOKEN", PROXY),
    ]
    .into_iter()
    .collect();
    let config = controlplane::Config::from_env(env).expect("config");
    let store = SqliteStore::open(&dir.path().join("db.sqlite3")).expect("store");
    let app = controlplane::open(config, Arc::new(store), prometheus::Registry::new())
        .await
        .expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(controlplane::serve(listener, app, std::future::pending()));
    Fixture {
        base,
        http: reqwest::Client::new(),
        keys,
        tokens: Default::default(),
        _dir: dir,
    }
}

impl Fixture {
    async fn apply(&mut self, w: &Write) {
        let sid = |id: usize| format!("{:08x}", 0xa0 + id);
        let req = match w {
            Write::AddKey { user, key } => self
                .http
                .post(format!("{}/v1/users/{}/keys", self.base, USERS[*user]))
                .json(&json!({ "key": self.keys[*key] })),
            Write::RemoveKey { user, key } => {
                let fp = model::Fingerprint::of_public_key_line(&self.keys[*key])
                    .expect("fp")
                    .to_string();
                let fp = fp.replace('/', "%2F").replace('+', "%2B");
                self.http
                    .delete(format!("{}/v1/users/{}/keys/{fp}", self.base, USERS[*user]))
            }
            Write::PutSession {
                id,
                workspace,
                owner,
                member,
                ssh,
            } => self
                .http
                .put(format!("{}/v1/sessions/{}", self.base, sid(*id)))
                .json(&json!({
                    "workspaceId": workspace,
                    "owner": USERS[*owner],
                    "members": member.map(|m| vec![USERS[m]]).unwrap_or_default(),
                    "sshEnabled": ssh,
                })),
            Write::DeleteSession { id } => {
                self.http
                    .delete(format!("{}/v1/sessions/{}", self.base, sid(*id)))
            }
            Write::Register { id } => {
                let Some(token) = self.tokens.get(id) else {
                    return;
                };
                let resp = self
                    .http
                    .post(format!("{}/v1/sessions/{}/register", self.base, sid(*id)))
                    .bearer_auth(token)
                    .json(&json!({ "endpoint": format!("10.0.0.{id}:2223"), "hostKeyFingerprint": FP }))
                    .send()
                    .await
                    .expect("register");
                let _ = resp.status();
                return;
            }
        };
        let resp = req.bearer_auth(ADMIN).send().await.expect("request");
        if resp.status() == reqwest::StatusCode::CREATED
            && let Write::PutSession { id, .. } = w
        {
            let body: serde_json::Value = resp.json().await.expect("json");
            if let Some(t) = body["registrationToken"].as_str() {
                self.tokens.insert(*id, t.to_owned());
            }
        }
        if let Write::DeleteSession { id } = w {
            self.tokens.remove(id);
        }
    }

    async fn lines(&self, from: Option<u64>, until: impl Fn(&WatchLine) -> bool) -> Vec<WatchLine> {
        let url = match from {
            Some(r) => format!("{}/v1/watch?from={r}", self.base),
            None => format!("{}/v1/watch", self.base),
        };
        let resp = self
            .http
            .get(url)
            .bearer_auth(PROXY)
            .send()
            .await
            .expect("watch");
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk.expect("chunk"));
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let raw: Vec<u8> = buf.drain(..=pos).collect();
                    let line: WatchLine = serde_json::from_slice(&raw).expect("line");
                    let stop = until(&line);
                    out.push(line);
                    if stop {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("in time");
        out
    }
}

fn key_lines() -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    (0..3)
        .map(|i| {
            testkit::KeyPair::generate(dir.path(), &format!("k{i}"), testkit::KeyType::Ed25519)
                .public_line
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn snapshot_at_zero_plus_all_deltas_equals_the_final_snapshot(
        writes in proptest::collection::vec(write(), 1..25)
    ) {
        let keys = key_lines();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (from_deltas, snapshot) = rt.block_on(async {
            let mut f = start(keys).await;
            for w in &writes {
                f.apply(w).await;
            }
            let snapshot_lines = f.lines(None, |l| matches!(l, WatchLine::SnapshotEnd { .. })).await;
            let mut snapshot = Follower::default();
            for l in &snapshot_lines {
                snapshot.apply(l).expect("snapshot");
            }
            let target: Revision = snapshot.state().revision;
            let mut replay = Follower::default();
            let delta_lines = f.lines(Some(0), |l| l.revision() >= target).await;
            for l in &delta_lines {
                assert!(matches!(l, WatchLine::Change { .. }), "from 0 the log covers everything: {l:?}");
                replay.apply(l).expect("deltas");
            }
            (replay.state().clone(), snapshot.state().clone())
        });
        prop_assert_eq!(from_deltas, snapshot);
    }
}
