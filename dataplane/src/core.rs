//! The cores: one pinned thread per core, each with its own runtime
//! (io_uring or epoll) and its own `SO_REUSEPORT` listener. A connection
//! lives its whole life on the core that accepted it: both SSH legs and
//! every bridge task.
//!
//! Phases of a connection, named the same in code, logs and metrics:
//! accept -> handshake -> authorize ([`crate::authorize`]) -> connect
//! upstream ([`crate::upstream`]) -> bridge ([`crate::bridge`]) -> close.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use russh::keys::PrivateKey;
use russh::{MethodKind, MethodSet, Preferred, SshId, cipher};
use tracing::{Instrument, debug, info, warn};

use crate::activity::Table;
use crate::config::Config;
use crate::handler::UserConnection;
use crate::io_backend::{self, Acceptor, IoBackend};
use crate::metrics::{CoreMetrics, Metrics};
use crate::routes::{self, Publisher};

/// Per-channel message queue in russh: the most a slow side can make us
/// hold per channel is this many packets (32 KiB each) plus the window.
const CHANNEL_BUFFER: usize = 16;
/// SSH window per channel on both legs.
const WINDOW: u32 = 2 * 1024 * 1024;

/// What every connection on one core shares.
pub struct CoreShared {
    pub id: usize,
    pub backend: IoBackend,
    pub config: Arc<Config>,
    pub key: Arc<PrivateKey>,
    pub client_config: Arc<russh::client::Config>,
    pub metrics: CoreMetrics,
    pub activity: Arc<Table>,
    /// Connections on all cores, against `CONNECT_SSH_MAX_CONNECTIONS`.
    pub connections: Arc<AtomicUsize>,
}

/// The control thread's handles to one running core.
pub struct CoreHandle {
    pub activity: Arc<Table>,
    pub publisher: Publisher,
}

/// Ciphers in our order of preference: AES-GCM is ~4x faster than
/// chacha20-poly1305 in russh with ring (PITFALLS); the user's client
/// decides on its leg, we decide on the Studio leg.
fn preferred() -> Preferred {
    Preferred {
        cipher: std::borrow::Cow::Borrowed(&[
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_CTR,
            cipher::AES_192_CTR,
            cipher::AES_128_CTR,
        ]),
        ..Preferred::default()
    }
}

pub fn server_config(key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: SshId::Standard(
            format!("SSH-2.0-connect-proxy_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![key],
        // Refusals are decided in memory in microseconds; a short fixed
        // delay keeps timing flat without making multi-key agents crawl.
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: 20,
        window_size: WINDOW,
        channel_buffer_size: CHANNEL_BUFFER,
        // Idle shells are legitimate; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        preferred: preferred(),
        ..russh::server::Config::default()
    }
}

pub fn client_config() -> russh::client::Config {
    russh::client::Config {
        window_size: WINDOW,
        channel_buffer_size: CHANNEL_BUFFER,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        preferred: preferred(),
        ..russh::client::Config::default()
    }
}

/// Everything needed to start the cores.
pub struct Start {
    pub config: Arc<Config>,
    pub key: PrivateKey,
    pub metrics: Metrics,
    pub backend: IoBackend,
    /// One bound listener per core (all on the same port).
    pub listeners: Vec<std::net::TcpListener>,
    pub initial: Arc<model::state::State>,
}

/// Starts one thread per listener; returns their handles.
pub fn start(start: Start) -> std::io::Result<Vec<CoreHandle>> {
    let Start {
        config,
        key,
        metrics,
        backend,
        listeners,
        initial,
    } = start;
    let key = Arc::new(key);
    let server = Arc::new(server_config((*key).clone()));
    let client = Arc::new(client_config());
    let connections = Arc::new(AtomicUsize::new(0));
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let (publisher, subscriber) = routes::channel();
        publisher.publish(initial.clone());
        let activity = Arc::new(Table::default());
        let shared = Arc::new(CoreShared {
            id,
            backend,
            config: config.clone(),
            key: key.clone(),
            client_config: client.clone(),
            metrics: CoreMetrics::new(&metrics, id),
            activity: activity.clone(),
            connections: connections.clone(),
        });
        let server = server.clone();
        let pin = cpus.get(id % cpus.len().max(1)).copied();
        std::thread::Builder::new()
            .name(format!("core-{id}"))
            .spawn(move || {
                if let Some(cpu) = pin {
                    core_affinity::set_for_current(cpu);
                }
                let result = io_backend::run_core(backend, move || async move {
                    subscriber.install_latest();
                    tokio::task::spawn_local(subscriber.follow());
                    match Acceptor::new(listener, backend) {
                        Ok(acceptor) => accept_loop(shared, acceptor, server).await,
                        Err(e) => {
                            tracing::error!(core = id, error = %e, "cannot accept on this core")
                        }
                    }
                });
                if let Err(e) = result {
                    tracing::error!(core = id, error = %e, "core runtime failed");
                }
            })?;
        handles.push(CoreHandle {
            activity,
            publisher,
        });
    }
    Ok(handles)
}

/// Accept phase: admit under the connection limit, then hand off.
async fn accept_loop(
    core: Arc<CoreShared>,
    acceptor: Acceptor,
    server: Arc<russh::server::Config>,
) {
    loop {
        let (stream, peer) = match acceptor.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(core = core.id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = core.connections.fetch_add(1, Ordering::Relaxed);
        if open >= core.config.max_connections {
            core.connections.fetch_sub(1, Ordering::Relaxed);
            core.metrics
                .all
                .refused
                .with_label_values(&["max_connections"])
                .inc();
            debug!(%peer, "connection refused: CONNECT_SSH_MAX_CONNECTIONS reached");
            drop(stream);
            continue;
        }
        let span = tracing::info_span!("conn", core = core.id, peer = %peer);
        tokio::spawn(connection(core.clone(), server.clone(), stream, peer).instrument(span));
    }
}

/// Decrements the connection count however the connection ends.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handshake through close of one connection.
async fn connection(
    core: Arc<CoreShared>,
    server: Arc<russh::server::Config>,
    stream: io_backend::Stream,
    peer: std::net::SocketAddr,
) {
    let _admitted = Admitted(core.connections.clone());
    let started = Instant::now();
    let limit = core.config.handshake_timeout;
    let handler = UserConnection::new(core.clone(), peer);
    let authenticated = handler.authenticated.clone();
    let running =
        match tokio::time::timeout(limit, russh::server::run_stream(server, stream, handler)).await
        {
            Ok(Ok(running)) => running,
            // Load-balancer health checks connect and close without a byte.
            Ok(Err(e)) => {
                debug!(error = %e, "handshake failed");
                return;
            }
            Err(_) => {
                core.metrics
                    .all
                    .refused
                    .with_label_values(&["handshake_timeout"])
                    .inc();
                return;
            }
        };
    let handle = running.handle();
    let watchdog = tokio::spawn(async move {
        tokio::time::sleep(limit.saturating_sub(started.elapsed())).await;
        if !authenticated.load(Ordering::Relaxed) {
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "authentication timed out".into(),
                    String::new(),
                )
                .await;
            return true;
        }
        false
    });
    let result = running.await;
    if !watchdog.is_finished() {
        watchdog.abort();
    } else if matches!(watchdog.await, Ok(true)) {
        core.metrics
            .all
            .refused
            .with_label_values(&["handshake_timeout"])
            .inc();
    }
    match result {
        Ok(()) => info!(duration = ?started.elapsed(), "connection closed"),
        Err(e) => info!(duration = ?started.elapsed(), error = %e, "connection ended"),
    }
}
