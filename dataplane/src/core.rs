//! The cores: one pinned thread per core, each with its own runtime
//! (io_uring or epoll) and its own `SO_REUSEPORT` listener. A connection
//! lives its whole life on the core that accepted it: both SSH legs and
//! its relay.
//!
//! The accept phase lives here; the rest of a connection's phases are
//! [`crate::connection`]'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tracing::{Instrument, debug, warn};

use crate::activity::Table;
use crate::config::Config;
use crate::io_backend::{self, Acceptor, IoBackend};
use crate::metrics::{CoreMetrics, Metrics};
use crate::routes::{self, Publisher};
use crate::ssh::sig::Ed25519Signer;

/// What every connection on one core shares.
pub struct CoreShared {
    pub id: usize,
    pub backend: IoBackend,
    pub config: Arc<Config>,
    /// The proxy key: host key to users, client key to Studios.
    pub key: Arc<Ed25519Signer>,
    pub metrics: CoreMetrics,
    pub activity: Arc<Table>,
    /// Authenticated connections on all cores, against
    /// `CONNECT_SSH_MAX_CONNECTIONS`.
    pub connections: Arc<AtomicUsize>,
    /// Unauthenticated connections on all cores, and per-source penalties.
    pub admission: Arc<crate::admission::Admission>,
}

/// The control thread's handles to one running core.
pub struct CoreHandle {
    pub activity: Arc<Table>,
    pub publisher: Publisher,
}

/// Everything needed to start the cores.
pub struct Start {
    pub config: Arc<Config>,
    pub key: Ed25519Signer,
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
    let connections = Arc::new(AtomicUsize::new(0));
    let admission = crate::admission::Admission::new(config.admission);
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let core_metrics = CoreMetrics::new(&metrics, id);
        let (publisher, subscriber) = routes::channel(core_metrics.state_revision.clone());
        publisher.publish(initial.clone());
        let activity = Arc::new(Table::default());
        let shared = Arc::new(CoreShared {
            id,
            backend,
            config: config.clone(),
            key: key.clone(),
            metrics: core_metrics,
            activity: activity.clone(),
            connections: connections.clone(),
            admission: admission.clone(),
        });
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
                        Ok(acceptor) => accept_loop(shared, acceptor).await,
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

/// Accept phase: admit under the unauthenticated caps, then hand off.
async fn accept_loop(core: Arc<CoreShared>, acceptor: Acceptor) {
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
        let startup = match core.admission.admit(peer.ip()) {
            Ok(s) => s,
            Err(refused) => {
                core.metrics
                    .all
                    .refused
                    .with_label_values(&[refused.label()])
                    .inc();
                debug!(%peer, reason = refused.label(), "connection refused before the handshake");
                drop(stream);
                continue;
            }
        };
        if startup.evict && crate::admission::evict_oldest() {
            core.metrics
                .all
                .refused
                .with_label_values(&["max_startups"])
                .inc();
        }
        // Registered here, not in the task: the next accept may evict it.
        let preauth = crate::admission::PreauthEntry::register(&startup);
        let span = tracing::info_span!("conn", core = core.id, peer = %peer);
        let core = core.clone();
        tokio::task::spawn_local(
            crate::connection::run(core, stream, startup, preauth).instrument(span),
        );
    }
}

/// One authenticated connection counted against
/// `CONNECT_SSH_MAX_CONNECTIONS` (all cores); unauthenticated ones have
/// their own caps ([`crate::admission`]).
pub struct Admitted(Arc<AtomicUsize>);

impl Admitted {
    /// Counts one more, unless the cap is reached.
    pub fn try_new(core: &CoreShared) -> Option<Self> {
        let open = core.connections.fetch_add(1, Ordering::Relaxed);
        if open >= core.config.max_connections {
            core.connections.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Self(core.connections.clone()))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
