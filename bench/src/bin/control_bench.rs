//! Control-plane benchmark: snapshot size and time at scale, and
//! change-to-watcher latency.
//!
//! ```text
//! cargo run --release -p connect-bench --bin control-bench -- \
//!     --sessions 100000 --keys 1000000 --changes 1000
//! ```
//!
//! 1. Fills a fresh SQLite store with `--sessions` sessions and `--keys`
//!    user keys (fabricated rows: the figures are about volume), and times
//!    loading it into the control plane.
//! 2. Streams the watch snapshot over real HTTP `--rounds` times: bytes,
//!    time to the last line, and time to also rebuild the state from it
//!    (what a proxy does).
//! 3. Keeps one watcher connected and makes `--changes` session updates
//!    through the API, one at a time: for each, the time from sending the
//!    request to the watcher receiving the change line (which includes the
//!    durable SQLite commit), and the request's own latency.
//! 4. `--writers` concurrent clients each create sessions through the API
//!    (`PUT`, durable on answer) until `--concurrent-writes` are done:
//!    throughput and per-request latency (group commit: concurrent writers
//!    share a flush).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use controlplane::store::sqlite::SqliteStore;
use controlplane::store::{Batch, KeyRow, Op, SessionRow, Store};
use futures::StreamExt;
use hdrhistogram::Histogram;
use model::state::{Follower, Session, SessionState, WatchLine};
use model::{Fingerprint, SessionId, UserName, WorkspaceId};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "bench-admin-token-000000";
const PROXY: &str = "bench-proxy-token-000000";

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    sessions: u32,
    #[arg(long, default_value_t = 1_000_000)]
    keys: u32,
    /// Users the keys are spread over.
    #[arg(long, default_value_t = 100_000)]
    users: u32,
    #[arg(long, default_value_t = 1_000)]
    changes: u32,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Concurrent API clients of the write-throughput phase.
    #[arg(long, default_value_t = 32)]
    writers: u32,
    /// Session creations of the write-throughput phase (0 skips it).
    #[arg(long, default_value_t = 8_000)]
    concurrent_writes: u32,
}

fn user(i: u32) -> UserName {
    format!("user{i}").parse().expect("valid user name")
}

fn fill(store: &SqliteStore, args: &Args) -> Result<()> {
    let mut ops = Vec::with_capacity(args.keys as usize + args.sessions as usize);
    for i in 0..args.keys {
        let fp = Fingerprint::of_key_blob(&i.to_be_bytes());
        ops.push(Op::PutKey(KeyRow {
            user: user(i % args.users),
            fingerprint: fp,
            key_type: "ssh-ed25519".into(),
            comment: format!("key{i}"),
            public_key: format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{i:040} key{i}"),
            added_at_ms: 0,
        }));
    }
    for i in 0..args.sessions {
        let members: BTreeSet<UserName> = (1..3).map(|m| user((i + m) % args.users)).collect();
        ops.push(Op::PutSession(SessionRow {
            session: Session {
                id: SessionId::from_u32(i),
                workspace_id: WorkspaceId::from(u64::from(i % 100)),
                owner: user(i % args.users),
                members,
                ssh_enabled: true,
                state: SessionState::Running,
                endpoint: Some(format!(
                    "10.{}.{}.{}:2223",
                    (i >> 16) & 255,
                    (i >> 8) & 255,
                    i & 255
                )),
                host_key_fingerprint: Some(Fingerprint::of_key_blob(
                    &(u64::from(i) << 32).to_be_bytes(),
                )),
            },
            token_hash: [7; 32],
            created_at_ms: 0,
            last_activity_ms: None,
        }));
    }
    store.commit(&Batch {
        ops,
        log: Vec::new(),
    })?;
    Ok(())
}

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.sqlite3");
    let store = SqliteStore::open(&path)?;
    let t = Instant::now();
    fill(&store, &args)?;
    println!(
        "fill: {} sessions, {} keys in {:.1} s",
        args.sessions,
        args.keys,
        t.elapsed().as_secs_f64()
    );
    drop(store);

    let env: std::collections::HashMap<&str, &str> = [
        ("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", ""),
        ("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "true"),
        (
            "TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT",
            "SHA256:NEu6MAPGJpImFJ3raQzv6+NubCPy/92hqR+CVyMjKvM",
        ),
        ("CONNECT_CONTROL_ADMIN_TOKEN", ADMIN),
        ("CONNECT_CONTROL_PROXY_TOKEN", PROXY),
    ]
    .into_iter()
    .collect();
    let config = controlplane::Config::from_env(env)?;
    let t = Instant::now();
    let store = SqliteStore::open(&path)?;
    let app = controlplane::open(config, Arc::new(store), prometheus::Registry::new()).await?;
    println!(
        "load into control plane: {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(controlplane::serve(listener, app, std::future::pending()));
    let http = reqwest::Client::new();

    // Snapshot.
    let (mut times, mut applied) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    let mut last_revision = model::state::Revision(0);
    for _ in 0..args.rounds {
        let t = Instant::now();
        let resp = http
            .get(format!("{base}/v1/watch"))
            .bearer_auth(PROXY)
            .send()
            .await?;
        let mut stream = resp.bytes_stream();
        let mut raw = Vec::new();
        while let Some(chunk) = stream.next().await {
            raw.extend_from_slice(&chunk?);
            if raw.ends_with(b"\n")
                && raw
                    .rsplit(|b| *b == b'\n')
                    .nth(1)
                    .is_some_and(|l| l.starts_with(br#"{"type":"snapshotEnd""#))
            {
                break;
            }
        }
        times.push(t.elapsed().as_secs_f64());
        bytes = raw.len();
        let t2 = Instant::now();
        let mut follower = Follower::default();
        for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            follower.apply(&serde_json::from_slice::<WatchLine>(line)?)?;
        }
        applied.push(times.last().copied().unwrap_or_default() + t2.elapsed().as_secs_f64());
        anyhow::ensure!(
            follower.state().sessions.len() == args.sessions as usize,
            "snapshot incomplete"
        );
        last_revision = follower.state().revision;
    }
    println!(
        "snapshot: {:.1} MB, streamed in {:.2} s (median of {}), received and applied in {:.2} s",
        bytes as f64 / 1e6,
        median(times),
        args.rounds,
        median(applied)
    );

    // Change-to-watcher latency.
    let start_rev = last_revision;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let resp = http
        .get(format!("{base}/v1/watch?from={}", start_rev.0))
        .bearer_auth(PROXY)
        .send()
        .await?;
    tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(WatchLine::Change { revision, .. }) =
                    serde_json::from_slice::<WatchLine>(&line)
                {
                    let _ = tx.send((revision.0, now));
                }
            }
        }
    });
    let mut to_watcher = Histogram::<u64>::new(3)?;
    let mut request = Histogram::<u64>::new(3)?;
    for i in 0..args.changes {
        let body = serde_json::json!({
            "workspaceId": 1, "owner": "user0", "members": [format!("user{}", i % 7 + 1)], "sshEnabled": true
        });
        let t = Instant::now();
        let resp = http
            .put(format!("{base}/v1/sessions/00000000"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "PUT failed: {}", resp.status());
        request.record(t.elapsed().as_micros() as u64)?;
        let want = start_rev.0 + u64::from(i) + 1;
        loop {
            let (rev, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await?
                .context("watcher ended")?;
            if rev == want {
                to_watcher.record(at.duration_since(t).as_micros() as u64)?;
                break;
            }
        }
    }
    println!("change to watcher: {}", percentiles(&to_watcher));
    println!("API write (PUT, durable): {}", percentiles(&request));

    // Concurrent writers.
    if args.concurrent_writes > 0 {
        let per_writer = args.concurrent_writes.div_ceil(args.writers.max(1));
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..args.writers {
            let (http, base) = (http.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3)?;
                for i in 0..per_writer {
                    // Ids above the filled range: every PUT creates.
                    let id = SessionId::from_u32(0x8000_0000 | (w << 20) | i);
                    let body = serde_json::json!({
                        "workspaceId": 1, "owner": "user0", "members": ["user1"], "sshEnabled": true
                    });
                    let t = Instant::now();
                    let resp = http
                        .put(format!("{base}/v1/sessions/{id}"))
                        .bearer_auth(ADMIN)
                        .json(&body)
                        .send()
                        .await?;
                    anyhow::ensure!(resp.status().is_success(), "PUT failed: {}", resp.status());
                    h.record(t.elapsed().as_micros() as u64)?;
                }
                Ok::<_, anyhow::Error>(h)
            }));
        }
        let mut all = Histogram::<u64>::new(3)?;
        for task in tasks {
            all.add(task.await??)?;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "concurrent writes: {} writers, {} durable session creations in {:.2} s = {:.0}/s; latency {}",
            args.writers,
            all.len(),
            secs,
            all.len() as f64 / secs,
            percentiles(&all)
        );
    }
    Ok(())
}
