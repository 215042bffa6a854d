//! The I/O backends on real sockets on 127.0.0.1: echo through the halves
//! a leg's transport uses (reading while a write is in flight), their
//! guarantees (a dropped read loses nothing, dropping the halves sends EOF),
//! and the fallback to epoll under a seccomp filter like Docker's.
//!
//! io_uring tests run only where io_uring works and say so loudly when
//! skipped (`CONNECT_TEST_REQUIRE_URING=1` turns a skip into a failure;
//! `.ci/run` sets it wherever [`io_uring_probe`] says io_uring works).

#[path = "support/core_server.rs"]
mod core_server;
#[path = "support/seccomp.rs"]
mod seccomp;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use dataplane::io_backend::{self, Acceptor, IoBackend, IoChoice};
use dataplane::ssh::io::{ReadAt, Split, WriteOut};

use core_server::{on_core, serve_one, uring_available};

/// Declares tests `body::uring` and `body::epoll` calling `body(backend)`.
macro_rules! on_both_backends {
    ($body:ident) => {
        mod $body {
            use super::*;

            #[test]
            fn uring() {
                if uring_available() {
                    super::$body(IoBackend::Uring);
                }
            }

            #[test]
            fn epoll() {
                super::$body(IoBackend::Epoll);
            }
        }
    };
}

on_both_backends!(echo_10_mb);
on_both_backends!(dropped_read_loses_nothing);
on_both_backends!(drop_sends_eof);
on_both_backends!(dropped_acceptor_stops_listening);
on_both_backends!(spawned_tasks_run_on_the_core);

/// Deterministic, non-repeating test bytes.
fn pattern(len: usize) -> Vec<u8> {
    testkit::pattern(len, 0x9E37_79B9_7F4A_7C15)
}

/// Echoes what it reads the way the relay moves bytes: one `select!` over a
/// read and a write, each cancelled whenever the other finishes first, with
/// up to 1 MiB read ahead of what is written.
async fn echo<S: Split>(stream: S) -> io::Result<u64> {
    let (mut from, mut to) = stream.split();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut out, mut written) = (Vec::new(), 0usize);
    let (mut copied, mut eof) = (0u64, false);
    loop {
        tokio::select! {
            r = from.read_at(&mut buf, 0), if !eof && out.len() - written < 1 << 20 => {
                let n = r?;
                eof = n == 0;
                copied += n as u64;
                out.extend_from_slice(&buf[..n]);
            }
            r = to.write_some(&mut out, &mut written), if written < out.len() || to.in_flight() > 0 => {
                r?;
                if written == out.len() {
                    out.clear();
                    written = 0;
                }
            }
            else => break,
        }
    }
    to.shutdown().await?;
    Ok(copied)
}

fn echo_10_mb(backend: IoBackend) {
    let (addr, server) = serve_one(backend, echo);
    let data = Arc::new(pattern(10 << 20));
    let mut client = TcpStream::connect(addr).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut writer = client.try_clone().expect("clone");
    let sent = data.clone();
    let writing = thread::spawn(move || -> io::Result<()> {
        writer.write_all(&sent)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut echoed = Vec::with_capacity(data.len());
    client.read_to_end(&mut echoed).expect("read echo to EOF");
    writing.join().expect("writer").expect("write 10 MB");

    let mismatch = echoed.iter().zip(data.iter()).position(|(a, b)| a != b);
    assert_eq!(mismatch, None, "echo differs at byte {mismatch:?}");
    assert_eq!(echoed.len(), data.len(), "echo length");
    let copied = server.join().expect("server").expect("server copy");
    assert_eq!(copied, data.len() as u64);
}

/// A read whose future is dropped (here by a timeout) while its receive is
/// posted: the bytes that arrive come out of the next reads, even through a
/// buffer smaller than what arrived.
fn dropped_read_loses_nothing(backend: IoBackend) {
    let (go, go_rx) = mpsc::channel();
    let (addr, server) = serve_one(backend, move |stream| async move {
        let (mut r, _w) = stream.split();
        let mut buf = vec![0u8; 4];
        let first = tokio::time::timeout(Duration::from_millis(200), r.read_at(&mut buf, 0)).await;
        assert!(first.is_err(), "nothing was sent yet: {first:?}");
        go.send(()).expect("client waits");
        // Let the bytes land in the receive posted by the dropped read.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut got = Vec::new();
        while got.len() < 11 {
            let n = tokio::time::timeout(Duration::from_secs(5), r.read_at(&mut buf, 0))
                .await
                .map_err(|_| format!("bytes lost: got only {got:?}"))?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok::<_, String>(got)
    });
    let mut client = TcpStream::connect(addr).expect("connect");
    go_rx.recv().expect("server read timed out");
    client.write_all(b"hello world").expect("send");
    let got = server.join().expect("server").expect("server read");
    assert_eq!(got, b"hello world");
}

/// Dropping both halves with a read in flight closes the connection for
/// the peer at once, while the core keeps running.
fn drop_sends_eof(backend: IoBackend) {
    let (dropped, dropped_rx) = mpsc::channel();
    let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = serve_one(backend, move |stream| async move {
        let (mut r, w) = stream.split();
        let mut buf = vec![0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(100), r.read_at(&mut buf, 0)).await;
        assert!(read.is_err(), "the read stays in flight: {read:?}");
        drop((r, w));
        dropped.send(()).expect("client waits");
        // Keep the core, and any operation still in flight, alive.
        let _ = done_rx.await;
    });
    let mut client = TcpStream::connect(addr).expect("connect");
    dropped_rx.recv().expect("server dropped its stream");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let read = client.read(&mut buf);
    let _ = done.send(());
    server.join().expect("server");
    assert_eq!(read.expect("EOF, not a read timeout"), 0);
}

/// Dropping an acceptor while its accept is in flight stops listening, so
/// new connections are refused instead of queueing on a dead socket.
fn dropped_acceptor_stops_listening(backend: IoBackend) {
    let refused = on_core(backend, move || async move {
        let listener = io_backend::reuseport_listener(([127, 0, 0, 1], 0).into()).expect("bind");
        let acceptor = Acceptor::new(listener, backend).expect("acceptor");
        let addr = acceptor.local_addr().expect("addr");
        let accept = tokio::time::timeout(Duration::from_millis(100), acceptor.accept()).await;
        assert!(accept.is_err(), "nobody connected yet");
        drop(acceptor);
        tokio::net::TcpStream::connect(addr).await.map(|_| ())
    });
    let err = refused.expect_err("connecting after the acceptor is dropped must fail");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
}

/// `tokio::spawn` (Send tasks) and `spawn_local` both run on the core's own
/// thread.
fn spawned_tasks_run_on_the_core(backend: IoBackend) {
    let (core, spawned, local) = on_core(backend, || async {
        let spawned = tokio::spawn(async { thread::current().id() }).await;
        let local = tokio::task::spawn_local(async { thread::current().id() }).await;
        (
            thread::current().id(),
            spawned.expect("spawn"),
            local.expect("spawn_local"),
        )
    });
    assert_eq!(spawned, core);
    assert_eq!(local, core);
}

#[test]
fn io_choice_parses_connect_io() {
    assert_eq!("auto".parse(), Ok(IoChoice::Auto));
    assert_eq!("uring".parse(), Ok(IoChoice::Uring));
    assert_eq!("epoll".parse(), Ok(IoChoice::Epoll));
    let err = "kqueue".parse::<IoChoice>().expect_err("not a backend");
    assert!(err.to_string().contains("\"kqueue\""), "{err}");
    assert_eq!(IoBackend::Uring.to_string(), "io_uring");
    assert_eq!(IoBackend::Epoll.to_string(), "epoll");
    assert_eq!(
        io_backend::choose(IoChoice::Epoll),
        Ok((IoBackend::Epoll, None))
    );
}

/// What `.ci/run` asks before choosing the backends to require: one line,
/// `io_uring: available` or `io_uring: unavailable: REASON`. And `auto`
/// picks io_uring exactly when the probe says it works.
#[test]
fn io_uring_probe() {
    let probe = io_backend::probe();
    match &probe {
        Ok(()) => println!("io_uring: available"),
        Err(e) => println!("io_uring: unavailable: {e}"),
    }
    let (chosen, why) = io_backend::choose(IoChoice::Auto).expect("auto always chooses");
    assert_eq!(
        chosen == IoBackend::Uring,
        probe.is_ok(),
        "{chosen} {why:?}"
    );
    assert_eq!(why.is_some(), probe.is_err(), "{why:?}");
}

/// Environment variable selecting [`seccomp_child`]'s mode.
const CHILD_ENV: &str = "CONNECT_TEST_SECCOMP_CHILD";

/// Child-process entry (a no-op in a normal run). `install`: installs the
/// filter first; `inherited`: expects to have been exec'd under it. Then
/// prints what the backend choice sees.
#[test]
fn seccomp_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    if mode == "install" {
        seccomp::deny_io_uring().expect("install seccomp filter");
    }
    println!("AUTO={:?}", io_backend::choose(IoChoice::Auto));
    println!("URING={:?}", io_backend::choose(IoChoice::Uring));
    let run = io_backend::run_core(IoBackend::Uring, || async {});
    println!("RUN_CORE={:?}", run.map_err(|e| e.raw_os_error()));
}

/// Entry for [`seccomp::command_without_io_uring`].
#[test]
fn deny_io_uring_exec() {
    seccomp::exec_if_requested();
}

fn child_report(mut cmd: std::process::Command) -> String {
    let out = cmd.output().expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn assert_fell_back(report: &str) {
    let line = |key: &str| {
        report
            .lines()
            .find_map(|l| l.find(key).map(|at| l[at..].to_owned()))
            .unwrap_or_else(|| panic!("no {key} line in:\n{report}"))
    };
    let auto = line("AUTO=");
    assert!(auto.starts_with("AUTO=Ok((Epoll, Some("), "{auto}");
    assert!(auto.contains("seccomp") && auto.contains("EPERM"), "{auto}");
    let uring = line("URING=");
    assert!(
        uring.starts_with("URING=Err(") && uring.contains("seccomp"),
        "{uring}"
    );
    let run = line("RUN_CORE=");
    assert_eq!(run, format!("RUN_CORE=Err(Some({}))", libc::EPERM));
}

/// Under a filter like Docker's default profile, `auto` falls back to epoll
/// naming the reason, a forced `uring` is an error, and building an io_uring
/// core returns an error instead of panicking.
#[test]
fn auto_falls_back_to_epoll_under_seccomp() {
    if uring_available() {
        // Without the filter io_uring is chosen: the fallback is the filter's doing.
        assert_eq!(
            io_backend::choose(IoChoice::Auto),
            Ok((IoBackend::Uring, None))
        );
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--exact",
        "seccomp_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "install");
    assert_fell_back(&child_report(cmd));
}

/// A program exec'd through `command_without_io_uring` runs under the filter.
#[test]
fn exec_under_the_filter() {
    let exe = std::env::current_exe().expect("current_exe");
    let exe = exe.to_string_lossy().into_owned();
    let args = [
        "--exact",
        "seccomp_child",
        "--nocapture",
        "--test-threads=1",
    ]
    .map(String::from);
    let mut cmd = seccomp::command_without_io_uring(exe, &args);
    cmd.env(CHILD_ENV, "inherited");
    assert_fell_back(&child_report(cmd));
}
