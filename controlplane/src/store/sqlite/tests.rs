//! Tests of the SQLite store against real files.
use std::collections::BTreeSet;

use model::{Change, SshAccess};

use super::*;

fn user(name: &str) -> UserName {
    name.parse().expect("user name")
}

fn fp(seed: u8) -> Fingerprint {
    Fingerprint::of_key_blob(&[seed])
}

fn key(name: &str, seed: u8) -> KeyRow {
    KeyRow {
        user: user(name),
        fingerprint: fp(seed),
        key_type: "ssh-ed25519".into(),
        comment: format!("{name}@laptop"),
        public_key: format!("ssh-ed25519 AAAA{seed} {name}@laptop"),
        added_at_ms: 1_700_000_000_000 + i64::from(seed),
    }
}

fn session(id: &str, owner: &str) -> SessionRow {
    SessionRow {
        session: Session {
            id: id.parse().expect("session id"),
            workspace_id: WorkspaceId::from(u64::MAX),
            owner: user(owner),
            members: BTreeSet::new(),
            ssh_enabled: false,
            state: SessionState::Starting,
            endpoint: None,
            host_key_fingerprint: None,
        },
        token_hash: [7; 32],
        created_at_ms: 1_700_000_000_000,
        last_activity_ms: None,
    }
}

fn batch(ops: Vec<Op>, revisions: &[u64]) -> Batch {
    let log = revisions
        .iter()
        .map(|&r| {
            (
                Revision(r),
                Change::SessionRemoved {
                    id: SessionId::from_u32(u32::try_from(r).unwrap_or(0)),
                },
            )
        })
        .collect();
    Batch { ops, log }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: SqliteStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.db");
        let store = SqliteStore::open(&path).expect("open");
        Fixture {
            _dir: dir,
            path,
            store,
        }
    }

    fn reopen(&mut self) {
        self.store = SqliteStore::open(&self.path).expect("reopen");
    }

    fn load(&self) -> Loaded {
        self.store.load().expect("load")
    }
}

#[test]
fn a_new_store_loads_empty() {
    let f = Fixture::new();
    assert_eq!(f.load(), Loaded::default());
}

#[test]
fn batches_round_trip_through_the_file() {
    let mut f = Fixture::new();
    let mut running = session("01ac8894", "alice");
    running.session.members = [user("bob"), user("carol@example.com")].into();
    running.session.ssh_enabled = true;
    running.session.state = SessionState::Running;
    running.session.endpoint = Some("10.0.0.7:2223".into());
    running.session.host_key_fingerprint = Some(fp(9));
    running.last_activity_ms = Some(1_700_000_123_456);
    let gone = session("ffffffff", "bob");
    let only = SshAccess::Only {
        workspaces: [WorkspaceId::from(1), WorkspaceId::from(12345)].into(),
    };

    let first = batch(
        vec![
            Op::PutAccess(SshAccess::AllWorkspaces),
            Op::PutKey(key("bob", 2)),
            Op::PutKey(key("alice", 1)),
            Op::PutKey(key("alice", 3)),
            Op::PutSession(gone.clone()),
            Op::PutSession(session("01ac8894", "alice")),
        ],
        &[1, 2, 3],
    );
    f.store.commit(&first).expect("first");
    let mut edited = key("alice", 1);
    edited.comment = "renamed".into();
    let second = batch(
        vec![
            Op::PutSession(running.clone()),
            Op::RemoveSession {
                id: gone.session.id,
            },
            Op::RemoveKey {
                user: user("alice"),
                fingerprint: fp(3),
            },
            Op::PutKey(edited.clone()),
            Op::PutAccess(only.clone()),
            Op::PutProxyFingerprint(fp(42)),
        ],
        &[7],
    );
    f.store.commit(&second).expect("second");
    f.reopen();

    let mut log = first.log.clone();
    log.extend(second.log.clone());
    let expected = Loaded {
        revision: Revision(7),
        access: Some(only),
        proxy_fingerprint: Some(fp(42)),
        keys: vec![edited, key("bob", 2)],
        sessions: vec![running],
        log,
    };
    assert_eq!(f.load(), expected);
}

#[test]
fn every_access_variant_round_trips() {
    let mut f = Fixture::new();
    let variants = [
        SshAccess::Off,
        SshAccess::AllWorkspaces,
        SshAccess::Only {
            workspaces: BTreeSet::new(),
        },
        SshAccess::Only {
            workspaces: [WorkspaceId::from(u64::MAX)].into(),
        },
    ];
    for access in variants {
        f.store
            .commit(&batch(vec![Op::PutAccess(access.clone())], &[]))
            .expect("commit");
        f.reopen();
        assert_eq!(f.load().access, Some(access));
    }
}

#[test]
fn a_batch_not_above_the_stored_revision_is_refused_and_writes_nothing() {
    let f = Fixture::new();
    f.store
        .commit(&batch(vec![Op::PutKey(key("alice", 1))], &[1, 2, 3]))
        .expect("commit");
    let before = f.load();
    for first in [0, 2, 3] {
        let err = f
            .store
            .commit(&batch(
                vec![
                    Op::PutKey(key("mallory", 6)),
                    Op::RemoveKey {
                        user: user("alice"),
                        fingerprint: fp(1),
                    },
                ],
                &[first, 9],
            ))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::RevisionConflict { attempted, stored } if attempted == Revision(first) && stored == Revision(3)),
            "{err}"
        );
        assert_eq!(f.load(), before);
    }
}

#[test]
fn a_batch_whose_revisions_do_not_increase_is_refused_and_writes_nothing() {
    let f = Fixture::new();
    for revisions in [&[5, 5][..], &[5, 6, 4]] {
        let err = f
            .store
            .commit(&batch(vec![Op::PutKey(key("alice", 1))], revisions))
            .unwrap_err();
        assert!(err.to_string().contains("do not increase"), "{err}");
        assert_eq!(f.load(), Loaded::default());
    }
}

#[test]
fn a_batch_without_log_entries_keeps_the_revision() {
    let f = Fixture::new();
    f.store.commit(&batch(vec![], &[4])).expect("commit");
    f.store
        .commit(&batch(vec![Op::PutKey(key("alice", 1))], &[]))
        .expect("ops only");
    let loaded = f.load();
    assert_eq!(loaded.revision, Revision(4));
    assert_eq!(loaded.keys, vec![key("alice", 1)]);
    assert_eq!(loaded.log.len(), 1);
}

#[test]
fn the_revision_survives_pruning_and_reopening() {
    let mut f = Fixture::new();
    for r in 1..=5 {
        f.store.commit(&batch(vec![], &[r])).expect("commit");
    }
    f.store.prune_log(2).expect("prune");
    let revisions = |f: &Fixture| f.load().log.iter().map(|(r, _)| r.0).collect::<Vec<_>>();
    assert_eq!(revisions(&f), [4, 5]);
    f.store.prune_log(10).expect("prune more than there is");
    assert_eq!(revisions(&f), [4, 5]);
    f.store.prune_log(0).expect("prune all");
    assert_eq!(revisions(&f), [] as [u64; 0]);
    f.reopen();
    assert_eq!(f.load().revision, Revision(5));
    let err = f.store.commit(&batch(vec![], &[5])).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::RevisionConflict {
                stored: Revision(5),
                ..
            }
        ),
        "{err}"
    );
    f.store
        .commit(&batch(vec![], &[6]))
        .expect("above the pruned maximum");
    assert_eq!(f.load().revision, Revision(6));
}

#[test]
fn a_batch_failing_midway_writes_nothing() {
    let f = Fixture::new();
    f.store
        .commit(&batch(vec![Op::PutKey(key("alice", 1))], &[1]))
        .expect("commit");
    // A log row above the stored maximum (as a buggy or foreign writer
    // could leave): the batch below passes the revision check, applies
    // its ops and first log entry, then fails on the second.
    let raw = Connection::open(&f.path).expect("raw");
    raw.execute("INSERT INTO changes (revision, change) VALUES (10, '{\"kind\":\"sessionRemoved\",\"id\":\"00000000\"}')", [])
        .expect("insert");
    let before = f.load();
    let failing = batch(
        vec![
            Op::PutKey(key("bob", 2)),
            Op::RemoveKey {
                user: user("alice"),
                fingerprint: fp(1),
            },
            Op::PutAccess(SshAccess::AllWorkspaces),
            Op::PutSession(session("01ac8894", "bob")),
        ],
        &[2, 10],
    );
    let err = f.store.commit(&failing).unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    assert_eq!(f.load(), before);
    assert_eq!(f.load().revision, Revision(1));
}

#[test]
fn record_activity_keeps_the_latest_and_ignores_unknown_sessions() {
    let mut f = Fixture::new();
    let a = session("0000000a", "alice");
    let mut b = session("0000000b", "bob");
    b.last_activity_ms = Some(500);
    f.store
        .commit(&batch(
            vec![Op::PutSession(a.clone()), Op::PutSession(b.clone())],
            &[1],
        ))
        .expect("commit");
    let unknown = SessionId::from_u32(0xc);
    f.store
        .record_activity(&[(a.session.id, 100), (b.session.id, 400), (unknown, 900)])
        .expect("record");
    f.store
        .record_activity(&[(a.session.id, 300), (a.session.id, 200)])
        .expect("record again");
    f.store.record_activity(&[]).expect("nothing to record");
    f.reopen();
    let loaded = f.load();
    let activity: Vec<_> = loaded
        .sessions
        .iter()
        .map(|s| (s.session.id, s.last_activity_ms))
        .collect();
    assert_eq!(
        activity,
        [(a.session.id, Some(300)), (b.session.id, Some(500))]
    );
    assert_eq!(
        loaded.revision,
        Revision(1),
        "activity is not a routed change"
    );
}

#[test]
fn corrupt_values_are_reported_naming_column_and_value() {
    let cases = [
        (
            "UPDATE keys SET user = 'has space'",
            "keys.user",
            "has space",
        ),
        (
            "UPDATE keys SET fingerprint = 'SHA256:nope'",
            "keys.fingerprint",
            "SHA256:nope",
        ),
        (
            "UPDATE keys SET comment = CAST(X'FF' AS TEXT)",
            "keys.comment",
            "UTF-8",
        ),
        (
            "UPDATE sessions SET id = '01AC8894'",
            "sessions.id",
            "01AC8894",
        ),
        (
            "UPDATE sessions SET workspace_id = '-1'",
            "sessions.workspace_id",
            "-1",
        ),
        ("UPDATE sessions SET owner = ''", "sessions.owner", "empty"),
        (
            "UPDATE sessions SET members = '[\"bob\",\"a b\"]'",
            "sessions.members",
            "a b",
        ),
        (
            "UPDATE sessions SET members = 'not json'",
            "sessions.members",
            "not json",
        ),
        (
            "UPDATE sessions SET ssh_enabled = 2",
            "sessions.ssh_enabled",
            "2",
        ),
        (
            "UPDATE sessions SET state = 'paused'",
            "sessions.state",
            "paused",
        ),
        (
            "UPDATE sessions SET host_key_fingerprint = 'MD5:aa'",
            "sessions.host_key_fingerprint",
            "MD5:aa",
        ),
        (
            "UPDATE sessions SET token_hash = zeroblob(31)",
            "sessions.token_hash",
            "31 bytes",
        ),
        (
            "UPDATE settings SET access = '{\"mode\":\"sometimes\"}'",
            "settings.access",
            "sometimes",
        ),
        (
            "UPDATE settings SET proxy_fingerprint = 'x'",
            "settings.proxy_fingerprint",
            "\"x\"",
        ),
        (
            "UPDATE settings SET revision = -1",
            "settings.revision",
            "-1",
        ),
        ("DELETE FROM settings", "settings", "missing"),
        ("UPDATE changes SET change = '{}'", "changes.change", "{}"),
        ("UPDATE changes SET revision = -5", "changes.revision", "-5"),
    ];
    for (sql, column, value) in cases {
        let f = Fixture::new();
        let mut s = session("01ac8894", "alice");
        s.session.host_key_fingerprint = Some(fp(1));
        let ops = vec![
            Op::PutKey(key("alice", 1)),
            Op::PutSession(s),
            Op::PutAccess(SshAccess::AllWorkspaces),
            Op::PutProxyFingerprint(fp(2)),
        ];
        f.store.commit(&batch(ops, &[1])).expect("commit");
        let raw = Connection::open(&f.path).expect("raw");
        raw.execute_batch(sql).expect(sql);
        match f.store.load() {
            Err(StoreError::Corrupt(msg)) => {
                assert!(msg.contains(column) && msg.contains(value), "{sql}: {msg}");
                assert!(msg.contains(&f.path.display().to_string()), "{msg}");
            }
            other => panic!("{sql}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn the_file_is_in_wal_mode_at_schema_version_1() {
    let f = Fixture::new();
    let raw = Connection::open(&f.path).expect("raw");
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("user_version");
    assert_eq!(version, 1);
    let sync: i64 = f
        .store
        .conn
        .lock()
        .expect("lock")
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .expect("sync");
    assert_eq!(sync, 2, "FULL");
}

#[test]
fn a_newer_schema_is_refused_naming_the_file() {
    let f = Fixture::new();
    let raw = Connection::open(&f.path).expect("raw");
    raw.pragma_update(None, "user_version", 2).expect("bump");
    let err = SqliteStore::open(&f.path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("schema version 2") && msg.contains(&f.path.display().to_string()),
        "{msg}"
    );
}

#[test]
fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing-dir").join("control.db");
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}
