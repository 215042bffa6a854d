//! Each core's view of the routing state.
//!
//! The control thread builds every new version of the state once (an
//! `Arc<State>`, its maps persistent so versions share structure) and sends
//! it to each core over a `crossbeam-channel`, waking the core's update task.
//! The core keeps the latest in a thread-local: reading it is a pointer copy
//! on the core's own thread, with no lock. Memory does not grow with the
//! number of cores: they all hold the same `Arc`.

use std::cell::RefCell;
use std::sync::Arc;

use model::state::State;
use prometheus::IntGauge;
use tokio::sync::Notify;

thread_local! {
    static CURRENT: RefCell<Arc<State>> = RefCell::new(Arc::new(State::default()));
    /// Bumped on every new version: live connections re-check their login.
    static CHANGES: tokio::sync::watch::Sender<u64> = tokio::sync::watch::Sender::new(0);
}

/// The state this core routes with now.
pub fn current() -> Arc<State> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Wakes when this core installs a new version of the state.
pub fn changes() -> tokio::sync::watch::Receiver<u64> {
    CHANGES.with(|c| c.subscribe())
}

/// The control thread's end of one core's update channel.
#[derive(Clone)]
pub struct Publisher {
    tx: crossbeam_channel::Sender<Arc<State>>,
    wake: Arc<Notify>,
}

impl Publisher {
    pub fn publish(&self, state: Arc<State>) {
        if self.tx.send(state).is_ok() {
            self.wake.notify_one();
        }
    }
}

/// The core's end.
pub struct Subscriber {
    rx: crossbeam_channel::Receiver<Arc<State>>,
    wake: Arc<Notify>,
    /// The revision of the state installed last (the core's
    /// `connect_proxy_core_state_revision`).
    installed: IntGauge,
}

/// A connected pair for one core; `installed` follows the revision the
/// core routes with.
pub fn channel(installed: IntGauge) -> (Publisher, Subscriber) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let wake = Arc::new(Notify::new());
    (
        Publisher {
            tx,
            wake: wake.clone(),
        },
        Subscriber {
            rx,
            wake,
            installed,
        },
    )
}

impl Subscriber {
    /// Installs the newest queued version, if any.
    pub fn install_latest(&self) {
        if let Some(latest) = self.rx.try_iter().last() {
            let revision = latest.revision.0 as i64;
            CURRENT.with(|c| *c.borrow_mut() = latest);
            self.installed.set(revision);
            CHANGES.with(|c| c.send_modify(|v| *v += 1));
        }
    }

    /// Runs on the core: installs each new version as it arrives.
    pub async fn follow(self) {
        loop {
            self.wake.notified().await;
            self.install_latest();
        }
    }
}
