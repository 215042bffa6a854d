//! A commit that returned survives `kill -9` of the process that made it.
//!
//! The test re-runs its own binary as a child "writer" (the
//! [`writer_child`] test, which does nothing unless [`WRITER_ENV`] names a
//! file) that commits batches in a loop and prints each revision only after
//! `commit` returned. The parent SIGKILLs it mid-stream, reopens the file and
//! checks that everything the child reported is there.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use controlplane::store::sqlite::SqliteStore;
use controlplane::store::{Batch, KeyRow, Op, Store};
use model::{Change, Fingerprint, Revision, UserName};

/// Names the store file the writer child commits to.
const WRITER_ENV: &str = "CONNECT_STORE_DURABILITY_WRITER";

/// What the writer prints before each committed revision.
const COMMITTED: &str = "committed ";

/// How many acknowledged commits the parent waits for before the kill.
const COMMITS_BEFORE_KILL: u64 = 200;

/// The writer stops by itself after this many, in case the parent died.
const WRITER_LIMIT: u64 = 100_000;

fn user(revision: u64) -> UserName {
    format!("user{revision}").parse().expect("user name")
}

fn fingerprint(revision: u64) -> Fingerprint {
    Fingerprint::of_key_blob(&revision.to_be_bytes())
}

/// The batch for `revision`: a key row and its log entry.
fn batch(revision: u64) -> Batch {
    let (user, fingerprint) = (user(revision), fingerprint(revision));
    Batch {
        ops: vec![Op::PutKey(KeyRow {
            user: user.clone(),
            fingerprint,
            key_type: "ssh-ed25519".into(),
            comment: String::new(),
            public_key: format!("ssh-ed25519 AAAA{revision}"),
            added_at_ms: 0,
        })],
        log: vec![(Revision(revision), Change::KeyAdded { user, fingerprint })],
    }
}

/// The child process; a no-op when run as an ordinary test.
#[test]
fn writer_child() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&path)).expect("writer: open");
    let mut stdout = std::io::stdout().lock();
    for revision in 1..=WRITER_LIMIT {
        store.commit(&batch(revision)).expect("writer: commit");
        writeln!(stdout, "{COMMITTED}{revision}").expect("writer: print");
        stdout.flush().expect("writer: flush");
    }
}

#[test]
fn commits_acknowledged_before_kill_9_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.db");
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");

    // Read on a thread so the wait below has a deadline.
    let stdout = child.stdout.take().expect("stdout");
    let (lines, acknowledged) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest's "test writer_child ... " may share the first line.
            if let Some((_, revision)) = line.rsplit_once(COMMITTED) {
                let revision: u64 = revision.parse().expect("revision");
                if lines.send(revision).is_err() {
                    break;
                }
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut printed = Vec::new();
    while printed.len() < COMMITS_BEFORE_KILL as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        match acknowledged.recv_timeout(left) {
            Ok(revision) => printed.push(revision),
            Err(err) => {
                let _ = child.kill();
                panic!("writer acknowledged {} commits, then: {err}", printed.len());
            }
        }
    }
    // SIGKILL while the writer is still committing.
    child.kill().expect("kill writer");
    let status = child.wait().expect("wait for writer");
    assert!(
        !status.success(),
        "the writer was killed, not finished: {status}"
    );
    // Lines already in the pipe were acknowledged before the kill too.
    reader.join().expect("reader thread");
    printed.extend(acknowledged.try_iter());

    let store = SqliteStore::open(&path).expect("reopen after kill");
    let loaded = store.load().expect("load after kill");
    let last = *printed.last().expect("some commits");
    assert_eq!(
        printed,
        (1..=last).collect::<Vec<_>>(),
        "the writer prints revisions in order"
    );
    assert!(
        loaded.revision >= Revision(last),
        "stored {} < acknowledged {last}",
        loaded.revision
    );
    let logged: Vec<u64> = loaded.log.iter().map(|(revision, _)| revision.0).collect();
    assert!(
        logged.starts_with(&printed),
        "every acknowledged revision is in the log: acknowledged 1..={last}, logged {} entries",
        logged.len()
    );
    for &revision in &printed {
        let key = (user(revision), fingerprint(revision));
        assert!(
            loaded
                .keys
                .iter()
                .any(|k| (k.user.clone(), k.fingerprint) == key),
            "the key committed at revision {revision} is stored"
        );
    }
    // The store is usable: the next revision commits.
    let next = loaded.revision.0 + 1;
    store.commit(&batch(next)).expect("commit after the crash");
    assert_eq!(store.load().expect("load").revision, Revision(next));
}
