//! The routing state at scale: 100,000 sessions and 1,000,000 user keys over
//! 100,000 users, the size `control-bench` measures the control plane at.
//!
//! - `authorize`: `dataplane::authorize::authorize` on that state, for an
//!   allowed login and the three refusals that reach the maps (unknown
//!   session, wrong key, not a member).
//! - `apply`: one watch-stream change as the proxy's control thread takes
//!   it (`dataplane/src/control.rs`): `Follower::apply`, then
//!   `Arc::new(state.clone())` to publish the new version to the cores.
//!   While the cores hold the previous version, applying copies the path
//!   of tree nodes the change touches; replacing the published version
//!   frees the old path. Both are timed, as they are the steady-state cost
//!   of one update. `unshared` is the same change with no published copy
//!   outstanding (an in-place update, the lower bound).
//!
//! Building the state takes seconds and happens once, before timing.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::authorize::{Denied, authorize};
use model::state::{Follower, Session, SessionState, State, WatchLine};
use model::{Change, Fingerprint, Login, Revision, SessionId, SshAccess, UserName, WorkspaceId};

const SESSIONS: u32 = 100_000;
const KEYS: u32 = 1_000_000;
const USERS: u32 = 100_000;

/// The revision of the snapshot; every timed change comes after it.
const SNAPSHOT: Revision = Revision(1);
const DELTA: Revision = Revision(2);

fn user(i: u32) -> UserName {
    format!("user{i}").parse().expect("valid user name")
}

/// Key `i` belongs to `user(i % USERS)`, as in `control-bench`.
fn key(i: u32) -> Fingerprint {
    Fingerprint::of_key_blob(&i.to_be_bytes())
}

/// Session `i`: owned by `user(i)`, members `user(i + 1)` and `user(i + 2)`.
fn session(i: u32, port: u16) -> Session {
    Session {
        id: SessionId::from_u32(i),
        workspace_id: WorkspaceId::from(u64::from(i % 100)),
        owner: user(i % USERS),
        members: (1..3)
            .map(|m| user((i + m) % USERS))
            .collect::<BTreeSet<_>>(),
        ssh_enabled: true,
        state: SessionState::Running,
        endpoint: Some(format!(
            "10.{}.{}.{}:{port}",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        )),
        host_key_fingerprint: Some(Fingerprint::of_key_blob(
            &(u64::from(i) << 32).to_be_bytes(),
        )),
    }
}

fn change(change: Change) -> WatchLine {
    WatchLine::Change {
        revision: SNAPSHOT,
        change,
    }
}

/// A proxy's follower after receiving the whole snapshot.
fn follower() -> Follower {
    let started = Instant::now();
    let mut f = Follower::default();
    let mut apply = |line: WatchLine| f.apply(&line).expect("snapshot line in order");
    apply(WatchLine::SnapshotBegin { revision: SNAPSHOT });
    apply(change(Change::Access {
        access: SshAccess::AllWorkspaces,
    }));
    for i in 0..KEYS {
        apply(change(Change::KeyAdded {
            user: user(i % USERS),
            fingerprint: key(i),
        }));
    }
    for i in 0..SESSIONS {
        apply(change(Change::SessionPut {
            session: session(i, 2223),
        }));
    }
    apply(WatchLine::SnapshotEnd { revision: SNAPSHOT });
    assert_eq!(f.state().sessions.len(), SESSIONS as usize);
    assert_eq!(f.state().key_count(), KEYS as usize);
    eprintln!(
        "state: {SESSIONS} sessions, {KEYS} keys built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    f
}

fn authorization(c: &mut Criterion, state: &State) {
    let login = |u: u32, s: u32| Login::new(user(u), SessionId::from_u32(s));
    // user4242 owns session 4242 and holds keys 4242, 104242, ... 904242.
    let cases: [(&str, Login, Fingerprint, Result<(), Denied>); 4] = [
        ("allowed", login(4242, 4242), key(504_242), Ok(())),
        (
            "unknown_session",
            login(4242, SESSIONS + 7),
            key(504_242),
            Err(Denied::UnknownSession),
        ),
        (
            "wrong_key",
            login(4242, 4242),
            key(4243),
            Err(Denied::UnknownKey),
        ),
        (
            "not_member",
            login(9000, 4242),
            key(509_000),
            Err(Denied::NotMember),
        ),
    ];
    let mut group = c.benchmark_group("authorize");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    for (name, login, key, expected) in cases {
        assert_eq!(
            authorize(state, &login, &key).map(|_| ()),
            expected,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| authorize(black_box(state), black_box(&login), black_box(&key)).is_ok())
        });
    }
    group.finish();
}

/// Changes to cycle through, each a real change of the built state: keys
/// are added and removed in turn (so the state keeps its size), sessions
/// re-registered with another endpoint port. Spread over the key space so
/// successive changes touch different tree paths.
fn key_changes() -> Vec<WatchLine> {
    (0..2048u32)
        .flat_map(|n| {
            let u = user(n * 48 % USERS);
            let fingerprint = key(KEYS + n);
            [
                Change::KeyAdded {
                    user: u.clone(),
                    fingerprint,
                },
                Change::KeyRemoved {
                    user: u,
                    fingerprint,
                },
            ]
        })
        .map(|c| WatchLine::Change {
            revision: DELTA,
            change: c,
        })
        .collect()
}

fn session_changes() -> Vec<WatchLine> {
    (0..4096u32)
        .map(|n| WatchLine::Change {
            revision: DELTA,
            change: Change::SessionPut {
                session: session(n * 24 % SESSIONS, 2224 + (n % 2) as u16),
            },
        })
        .collect()
}

/// Key and session changes interleaved, for batches.
fn mixed_changes() -> Vec<WatchLine> {
    key_changes()
        .into_iter()
        .zip(session_changes())
        .flat_map(|(k, s)| [k, s])
        .collect()
}

/// Apply one line and publish, as `control.rs` does per received chunk.
fn published(c: &mut Criterion, follower: &mut Follower) {
    let mut group = c.benchmark_group("apply");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    let mut current = Arc::new(follower.state().clone());

    for (name, lines) in [
        ("key_added_or_removed", key_changes()),
        ("session_put", session_changes()),
    ] {
        let mut next = lines.iter().cycle();
        group.bench_function(BenchmarkId::new(name, "published"), |b| {
            b.iter(|| {
                let line = next.next().expect("cycle");
                follower.apply(line).expect("in order");
                current = Arc::new(follower.state().clone());
            })
        });
    }

    // The same for a session registration arriving as JSON text, which
    // is how the proxy receives it.
    let json: Vec<Vec<u8>> = session_changes()
        .iter()
        .map(|l| serde_json::to_vec(l).expect("json"))
        .collect();
    let mut next = json.iter().cycle();
    group.bench_function(BenchmarkId::new("session_put_json", "published"), |b| {
        b.iter(|| {
            let line: WatchLine =
                serde_json::from_slice(next.next().expect("cycle")).expect("watch line");
            follower.apply(&line).expect("in order");
            current = Arc::new(follower.state().clone());
        })
    });

    // A chunk of 100 changes, published once (the proxy publishes once per
    // chunk read from the stream).
    let lines = mixed_changes();
    let mut next = lines.chunks(100).cycle();
    group.throughput(Throughput::Elements(100));
    group.bench_function(BenchmarkId::new("batch_100_mixed", "published"), |b| {
        b.iter(|| {
            for line in next.next().expect("cycle") {
                follower.apply(line).expect("in order");
            }
            current = Arc::new(follower.state().clone());
        })
    });
    group.finish();
    drop(current);
}

/// The same changes on a state nobody else holds: updates in place.
fn unshared(c: &mut Criterion, state: &mut State) {
    let mut group = c.benchmark_group("apply");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    for (name, lines) in [
        ("key_added_or_removed", key_changes()),
        ("session_put", session_changes()),
    ] {
        let changes: Vec<Change> = lines
            .into_iter()
            .filter_map(|l| match l {
                WatchLine::Change { change, .. } => Some(change),
                _ => None,
            })
            .collect();
        let mut next = changes.iter().cycle();
        group.bench_function(BenchmarkId::new(name, "unshared"), |b| {
            b.iter(|| state.apply(next.next().expect("cycle")))
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let mut follower = follower();
    let mut state = follower.state().clone();
    authorization(c, &state);
    published(c, &mut follower);
    // Now `state` is the only owner of its nodes.
    drop(follower);
    unshared(c, &mut state);
}

criterion_group!(state, benches);
criterion_main!(state);
