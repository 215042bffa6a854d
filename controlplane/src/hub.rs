//! The fan-out to watchers: the latest published state, the recent change
//! log they resume from, and a wake-up when either moves.
//!
//! Publishing swaps in a new state version (an O(1) `imbl` clone) and
//! appends its changes; a watcher asks [`Hub::since`] what it is missing and
//! gets either the deltas or, if it is new or has fallen out of the retained
//! log, a snapshot to stream from its own clone, without holding a lock.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use model::state::{Change, Revision, State};
use tokio::sync::watch;

/// What a watcher at some revision needs next.
#[derive(Debug)]
pub enum Catchup {
    /// Start over from this state.
    Snapshot(State),
    /// Apply these, in order (possibly none).
    Deltas(Vec<(Revision, Arc<Change>)>),
}

struct Published {
    state: State,
    /// Invariant: contiguous revisions ending at `state.revision` (when not
    /// empty), at most `retain` long.
    log: VecDeque<(Revision, Arc<Change>)>,
}

pub struct Hub {
    published: RwLock<Published>,
    notify: watch::Sender<Revision>,
    retain: usize,
}

impl Hub {
    /// Starts from a loaded state and the tail of its log.
    pub fn new(state: State, log: Vec<(Revision, Change)>, retain: usize) -> Self {
        let revision = state.revision;
        let mut log: VecDeque<_> = log
            .into_iter()
            .filter(|(r, _)| *r <= revision)
            .map(|(r, c)| (r, Arc::new(c)))
            .collect();
        // Keep only a contiguous run ending at the state's revision.
        let mut expected = revision;
        let mut keep = 0;
        for (r, _) in log.iter().rev() {
            if *r != expected {
                break;
            }
            keep += 1;
            expected = Revision(expected.0.saturating_sub(1));
        }
        log.drain(..log.len() - keep);
        while log.len() > retain {
            log.pop_front();
        }
        let (notify, _) = watch::channel(revision);
        Self {
            published: RwLock::new(Published { state, log }),
            notify,
            retain,
        }
    }

    /// Publishes a new state version and the changes that led to it.
    pub fn publish(&self, state: State, changes: Vec<(Revision, Change)>) {
        let revision = state.revision;
        {
            let mut p = self
                .published
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            p.state = state;
            p.log
                .extend(changes.into_iter().map(|(r, c)| (r, Arc::new(c))));
            while p.log.len() > self.retain {
                p.log.pop_front();
            }
        }
        self.notify.send_replace(revision);
    }

    /// Starts over from a reloaded state (a replica that fell behind the
    /// store's log): the retained log is replaced, so watchers behind the
    /// new one get a snapshot.
    pub fn replace(&self, state: State, log: Vec<(Revision, Change)>) {
        let fresh = Hub::new(state, log, self.retain);
        let published = fresh
            .published
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let revision = published.state.revision;
        *self
            .published
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = published;
        self.notify.send_replace(revision);
    }

    /// A receiver that wakes when a new revision is published. Subscribe
    /// before calling [`Hub::since`] so no publication falls in between.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.notify.subscribe()
    }

    /// The current state (cheap clone).
    pub fn state(&self) -> State {
        self.published
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .state
            .clone()
    }

    /// What a watcher that has everything up to `from` needs.
    pub fn since(&self, from: Option<Revision>) -> Catchup {
        let p = self
            .published
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(from) = from else {
            return Catchup::Snapshot(p.state.clone());
        };
        let current = p.state.revision;
        if from == current {
            return Catchup::Deltas(Vec::new());
        }
        // From the future (a watcher of a replaced database): start over.
        if from > current {
            return Catchup::Snapshot(p.state.clone());
        }
        match p.log.front() {
            Some((oldest, _)) if *oldest <= from.next() => {
                let skip = (from.next().0 - oldest.0) as usize;
                Catchup::Deltas(p.log.iter().skip(skip).cloned().collect())
            }
            _ => Catchup::Snapshot(p.state.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::SshAccess;

    fn change(n: u64) -> Change {
        Change::ProxyFingerprint {
            fingerprint: model::Fingerprint::of_key_blob(&n.to_be_bytes()),
        }
    }

    fn hub_at(rev: u64, log_from: u64, retain: usize) -> Hub {
        let state = State {
            revision: Revision(rev),
            access: SshAccess::AllWorkspaces,
            ..State::default()
        };
        Hub::new(
            state,
            (log_from..=rev).map(|r| (Revision(r), change(r))).collect(),
            retain,
        )
    }

    #[test]
    fn deltas_when_the_log_covers_the_gap() {
        let hub = hub_at(10, 5, 100);
        match hub.since(Some(Revision(6))) {
            Catchup::Deltas(d) => assert_eq!(
                d.iter().map(|(r, _)| r.0).collect::<Vec<_>>(),
                vec![7, 8, 9, 10]
            ),
            other => panic!("{other:?}"),
        }
        match hub.since(Some(Revision(4))) {
            Catchup::Deltas(d) => assert_eq!(d.len(), 6),
            other => panic!("{other:?}"),
        }
        assert!(matches!(hub.since(Some(Revision(10))), Catchup::Deltas(d) if d.is_empty()));
    }

    #[test]
    fn snapshot_when_new_too_old_or_from_the_future() {
        let hub = hub_at(10, 5, 100);
        assert!(matches!(hub.since(None), Catchup::Snapshot(_)));
        assert!(matches!(hub.since(Some(Revision(3))), Catchup::Snapshot(_)));
        assert!(matches!(
            hub.since(Some(Revision(11))),
            Catchup::Snapshot(_)
        ));
    }

    #[test]
    fn retention_trims_the_oldest() {
        let hub = hub_at(10, 1, 3);
        assert!(matches!(hub.since(Some(Revision(6))), Catchup::Snapshot(_)));
        assert!(matches!(hub.since(Some(Revision(7))), Catchup::Deltas(d) if d.len() == 3));
        let mut next = hub.state();
        next.revision = Revision(11);
        hub.publish(next, vec![(Revision(11), change(11))]);
        assert!(matches!(hub.since(Some(Revision(7))), Catchup::Snapshot(_)));
        assert!(matches!(hub.since(Some(Revision(8))), Catchup::Deltas(d) if d.len() == 3));
    }
}
