//! A test server on one data-plane core: a thread running
//! [`io_backend::run_core`] that accepts a fixed number of connections on
//! 127.0.0.1 and runs a handler on each, then returns the handlers'
//! results. It waits for every handler before returning, as real cores
//! must (see the `io_backend` docs on shutting a core down).
#![allow(dead_code)] // each test binary uses a different part

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;

use dataplane::io_backend::{self, Acceptor, IoBackend, Stream};

/// Starts a core of `backend` serving `connections` connections with
/// `handle`; returns its address and a handle yielding the results in
/// accept order.
pub fn serve<T, F, Fut>(
    backend: IoBackend,
    connections: usize,
    handle: F,
) -> (SocketAddr, thread::JoinHandle<Vec<T>>)
where
    T: Send + 'static,
    F: Fn(Stream) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (addr_tx, addr_rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        let results = Rc::new(RefCell::new(Vec::new()));
        let sink = results.clone();
        io_backend::run_core(backend, move || async move {
            let listener = io_backend::reuseport_listener(SocketAddr::from(([127, 0, 0, 1], 0)))
                .expect("bind 127.0.0.1:0");
            let acceptor = Acceptor::new(listener, backend).expect("acceptor");
            addr_tx
                .send(acceptor.local_addr().expect("local_addr"))
                .expect("test waits for the address");
            let mut tasks = Vec::new();
            for _ in 0..connections {
                let (stream, _peer) = acceptor.accept().await.expect("accept");
                assert_eq!(stream.backend(), backend);
                tasks.push(tokio::task::spawn_local(handle(stream)));
            }
            drop(acceptor);
            for task in tasks {
                let result = task.await.expect("handler task");
                sink.borrow_mut().push(result);
            }
        })
        .expect("build the core's runtime");
        results.take()
    });
    let addr = addr_rx.recv().expect("server core started");
    (addr, thread)
}

/// [`serve`] for a single connection.
pub fn serve_one<T, F, Fut>(backend: IoBackend, handle: F) -> (SocketAddr, thread::JoinHandle<T>)
where
    T: Send + 'static,
    F: FnOnce(Stream) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let once = std::sync::Mutex::new(Some(handle));
    let (addr, thread) = serve(backend, 1, move |stream| {
        let handle = once
            .lock()
            .expect("lock")
            .take()
            .expect("one connection only");
        handle(stream)
    });
    let single = thread::spawn(move || {
        thread
            .join()
            .expect("server core thread")
            .pop()
            .expect("one result")
    });
    (addr, single)
}

/// Runs `f` as a core of `backend` on a new thread and returns its output.
pub fn on_core<T, F, Fut>(backend: IoBackend, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    thread::spawn(move || {
        let out = Rc::new(RefCell::new(None));
        let sink = out.clone();
        io_backend::run_core(backend, move || async move {
            *sink.borrow_mut() = Some(f().await);
        })
        .expect("build the core's runtime");
        out.take().expect("core future finished")
    })
    .join()
    .expect("core thread")
}

/// Whether io_uring works here. When it doesn't, says so loudly (the
/// io_uring tests then pass vacuously) unless `CONNECT_TEST_REQUIRE_URING`
/// is set, which makes it a failure: `.ci/run` sets it wherever the probe
/// in its own process said io_uring works, so a test process that cannot
/// use it (a lower memlock limit, a seccomp filter) fails instead of
/// skipping, and prints the skip in its summary everywhere else.
pub fn uring_available() -> bool {
    match io_backend::probe() {
        Ok(()) => true,
        Err(e) if std::env::var_os("CONNECT_TEST_REQUIRE_URING").is_some() => {
            panic!("CONNECT_TEST_REQUIRE_URING is set but io_uring is unavailable: {e}")
        }
        Err(e) => {
            eprintln!(
                "\n*** SKIPPED: io_uring is unavailable here ({e}); this io_uring test \
                 did not run ***\n"
            );
            false
        }
    }
}
