//! Property: for any sequence of API writes, every write answers the status
//! an independent model (a plain map in this file, updated only by the
//! writes the API acknowledged) predicts; the snapshot the watch stream
//! sends at the end equals that model; and the empty state (revision 0)
//! plus every delta it sends equals the snapshot. A write that is
//! acknowledged but dropped, applied but refused, or applied wrongly fails.
//! Runs the control plane in-process (the library connect-proxy embeds) on
//! a real SQLite file and real HTTP.

use std::collections::{BTreeMap, BTreeSet};
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

/// What the state should be, from the acknowledged writes alone: users'
/// key fingerprints, and each session as the watch stream serialises it.
#[derive(Debug, Default)]
struct Model {
    keys: BTreeMap<String, BTreeSet<String>>,
    sessions: BTreeMap<String, serde_json::Value>,
}

impl Model {
    /// The status the API must answer `w` with, given the state so far
    /// (`registered`: whether the fixture holds the session's token).
    fn expect(&self, w: &Write, fps: &[String], registered: bool) -> Option<u16> {
        Some(match w {
            Write::AddKey { user, key } => {
                if self.has_key(USERS[*user], &fps[*key]) {
                    409
                } else {
                    201
                }
            }
            Write::RemoveKey { user, key } => {
                if self.has_key(USERS[*user], &fps[*key]) {
                    204
                } else {
                    404
                }
            }
            Write::PutSession {
                id, workspace, ssh, ..
            } => {
                if *ssh && *workspace == 3 {
                    403 // TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES is 1,2
                } else if self.sessions.contains_key(&sid(*id)) {
                    200
                } else {
                    201
                }
            }
            Write::DeleteSession { id } => {
                if self.sessions.contains_key(&sid(*id)) {
                    204
                } else {
                    404
                }
            }
            // No token, no request.
            Write::Register { .. } if !registered => return None,
            Write::Register { .. } => 200,
        })
    }

    fn has_key(&self, user: &str, fp: &str) -> bool {
        self.keys.get(user).is_some_and(|k| k.contains(fp))
    }

    /// Applies a write the API acknowledged.
    fn apply(&mut self, w: &Write, fps: &[String]) {
        match w {
            Write::AddKey { user, key } => {
                self.keys
                    .entry(USERS[*user].to_owned())
                    .or_default()
                    .insert(fps[*key].clone());
            }
            Write::RemoveKey { user, key } => {
                if let Some(k) = self.keys.get_mut(USERS[*user]) {
                    k.remove(&fps[*key]);
                }
            }
            Write::PutSession {
                id,
                workspace,
                owner,
                member,
                ssh,
            } => {
                let mut session = self
                    .sessions
                    .get(&sid(*id))
                    .cloned()
                    .unwrap_or_else(|| json!({ "id": sid(*id), "state": "starting" }));
                session["workspaceId"] = json!(workspace);
                session["owner"] = json!(USERS[*owner]);
                session["members"] = json!(member.map(|m| vec![USERS[m]]).unwrap_or_default());
                session["sshEnabled"] = json!(ssh);
                self.sessions.insert(sid(*id), session);
            }
            Write::DeleteSession { id } => {
                self.sessions.remove(&sid(*id));
            }
            Write::Register { id } => {
                let session = self
                    .sessions
                    .get_mut(&sid(*id))
                    .expect("registered session");
                session["state"] = json!("running");
                session["endpoint"] = json!(endpoint(*id));
                session["hostKeyFingerprint"] = json!(FP);
            }
        }
    }

    /// Whether `state` holds exactly the model's keys and sessions (users
    /// without keys count as absent).
    fn check(&self, state: &model::state::State) -> Result<(), String> {
        let keys: BTreeMap<String, BTreeSet<String>> = state
            .keys
            .iter()
            .filter(|(_, fps)| !fps.is_empty())
            .map(|(u, fps)| (u.to_string(), fps.iter().map(|f| f.to_string()).collect()))
            .collect();
        let want: BTreeMap<String, BTreeSet<String>> = self
            .keys
            .iter()
            .filter(|(_, fps)| !fps.is_empty())
            .map(|(u, fps)| (u.clone(), fps.clone()))
            .collect();
        if keys != want {
            return Err(format!("keys: served {keys:?}, model {want:?}"));
        }
        let sessions: BTreeMap<String, serde_json::Value> = state
            .sessions
            .iter()
            .map(|(id, s)| {
                (
                    id.to_string(),
                    serde_json::to_value(s).expect("session json"),
                )
            })
            .collect();
        if sessions != self.sessions {
            return Err(format!(
                "sessions: served {sessions:#?}, model {:#?}",
                self.sessions
            ));
        }
        Ok(())
    }
}

fn sid(id: usize) -> String {
    format!("{:08x}", 0xa0 + id)
}

fn endpoint(id: usize) -> String {
    format!("10.0.0.{id}:2223")
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
    /// Sends `w`; its status, or `None` for a registration without a token.
    async fn apply(&mut self, w: &Write) -> Option<u16> {
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
                let token = self.tokens.get(id)?;
                let resp = self
                    .http
                    .post(format!("{}/v1/sessions/{}/register", self.base, sid(*id)))
                    .bearer_auth(token)
                    .json(&json!({ "endpoint": endpoint(*id), "hostKeyFingerprint": FP }))
                    .send()
                    .await
                    .expect("register");
                return Some(resp.status().as_u16());
            }
        };
        let resp = req.bearer_auth(ADMIN).send().await.expect("request");
        let status = resp.status().as_u16();
        if status == 201
            && let Write::PutSession { id, .. } = w
        {
            let body: serde_json::Value = resp.json().await.expect("json");
            let token = body["registrationToken"]
                .as_str()
                .expect("a created session's token");
            self.tokens.insert(*id, token.to_owned());
        }
        if status == 204
            && let Write::DeleteSession { id } = w
        {
            self.tokens.remove(id);
        }
        Some(status)
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
    fn every_write_answers_as_a_model_predicts_and_the_watch_stream_serves_the_model(
        writes in proptest::collection::vec(write(), 1..25)
    ) {
        let keys = key_lines();
        let fps: Vec<String> = keys
            .iter()
            .map(|k| model::Fingerprint::of_public_key_line(k).expect("fp").to_string())
            .collect();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (from_deltas, snapshot) = rt.block_on(async {
            let mut f = start(keys).await;
            let mut expected = Model::default();
            for (i, w) in writes.iter().enumerate() {
                let registered = matches!(w, Write::Register { id } if f.tokens.contains_key(id));
                let want = expected.expect(w, &fps, registered);
                let got = f.apply(w).await;
                assert_eq!(got, want, "write {i} {w:?}; model {expected:?}");
                if matches!(got, Some(200 | 201 | 204)) {
                    expected.apply(w, &fps);
                }
            }
            let snapshot_lines = f.lines(None, |l| matches!(l, WatchLine::SnapshotEnd { .. })).await;
            let mut snapshot = Follower::default();
            for l in &snapshot_lines {
                snapshot.apply(l).expect("snapshot");
            }
            if let Err(e) = expected.check(snapshot.state()) {
                panic!("the snapshot is not what the writes made: {e}\nwrites: {writes:#?}");
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
