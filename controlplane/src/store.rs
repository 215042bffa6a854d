//! Durable storage behind the control plane.
//!
//! The [`Registry`](crate::registry::Registry) keeps the live state in
//! memory and serialises every write; a [`Store`] makes each write durable
//! before the API answers, and gives everything back at start-up. The trait
//! is row-level and synchronous (the registry calls it on a blocking
//! thread). Two implementations: [`sqlite`] (one file, one replica) and
//! `postgres` (one database shared by several replicas).
//!
//! Several replicas on one store: each keeps its own copy in memory and
//! commits with the revisions that follow its own; a replica that is behind
//! gets [`StoreError::RevisionConflict`], reads what it missed with
//! [`Store::changes_since`] and tries again. [`Store::wait_for_change`]
//! wakes a replica when another one committed, so every replica's watch
//! stream carries every change, in revision order.
//!
//! Invariants every implementation keeps:
//! - [`Store::commit`] is atomic: all of a batch's ops and log entries, or
//!   none; it returns only once they are durable (survive `kill -9` and power
//!   loss as far as the medium allows).
//! - Log revisions are strictly increasing across commits and restarts; a
//!   commit whose first revision is not above the stored maximum is refused
//!   with [`StoreError::RevisionConflict`] (another writer got there first).
//! - [`Store::load`] returns the state after the last successful commit.

pub mod sqlite;

use model::state::{Change, Revision, Session};
use model::{Fingerprint, SessionId, SshAccess, UserName};

/// One user key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub user: UserName,
    pub fingerprint: Fingerprint,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`...
    pub key_type: String,
    pub comment: String,
    /// The `.pub` line as given (type, base64 blob, comment).
    pub public_key: String,
    /// Unix milliseconds.
    pub added_at_ms: i64,
}

/// One session as stored: the routed part plus what only the control plane
/// needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub session: Session,
    /// SHA-256 of the registration token (the token itself is never stored).
    pub token_hash: [u8; 32],
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Last SSH activity reported by a proxy, unix milliseconds.
    pub last_activity_ms: Option<i64>,
}

/// One row-level write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    PutKey(KeyRow),
    RemoveKey {
        user: UserName,
        fingerprint: Fingerprint,
    },
    /// Insert or replace the session row with this id.
    PutSession(SessionRow),
    RemoveSession {
        id: SessionId,
    },
    PutAccess(SshAccess),
    PutProxyFingerprint(Fingerprint),
}

/// A batch to commit atomically: row writes plus the change-log entries
/// they produce (possibly none, e.g. for activity timestamps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
    /// Invariant: revisions strictly increasing, the first one above every
    /// revision already stored.
    pub log: Vec<(Revision, Change)>,
}

/// Everything stored, as of the last commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The highest revision ever committed (0 for a new store), even if
    /// its log entry has been pruned.
    pub revision: Revision,
    /// `None` if never written.
    pub access: Option<SshAccess>,
    pub proxy_fingerprint: Option<Fingerprint>,
    pub keys: Vec<KeyRow>,
    pub sessions: Vec<SessionRow>,
    /// The retained change log, oldest first.
    pub log: Vec<(Revision, Change)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Backend(String),
    #[error("revision conflict: tried to commit {attempted}, but {stored} is already stored")]
    RevisionConflict {
        attempted: Revision,
        stored: Revision,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// What changed after a revision: the log entries, and the current rows of
/// the keys and sessions they add or replace, read in one snapshot (so the
/// rows are as of `revision`, never newer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The store's revision when read: the last entry of `log`, or the
    /// caller's own revision if nothing changed.
    pub revision: Revision,
    /// Oldest first; contiguous from the asked revision + 1.
    pub log: Vec<(Revision, Change)>,
    /// Rows of keys that `log` adds and that still exist at `revision`.
    pub keys: Vec<KeyRow>,
    /// Rows of sessions that `log` puts and that still exist at `revision`.
    pub sessions: Vec<SessionRow>,
}

/// Durable storage; see the module docs for the invariants.
pub trait Store: Send + Sync + 'static {
    /// Reads everything back (start-up).
    fn load(&self) -> Result<Loaded, StoreError>;

    /// Commits a batch atomically and durably.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;

    /// Records proxies' activity reports: for each session that still
    /// exists, `last_activity_ms = max(stored, given)`. Durable on return;
    /// unknown sessions are ignored. Not a routed change: no revision.
    fn record_activity(&self, activity: &[(SessionId, i64)]) -> Result<(), StoreError>;

    /// Drops log entries so at most `keep` newest remain.
    fn prune_log(&self, keep: usize) -> Result<(), StoreError>;

    /// Whether other processes may commit to this store (replicas sharing
    /// it). A replica on a shared store follows it with
    /// [`Store::changes_since`] and reads its activity back from it.
    fn shared(&self) -> bool {
        false
    }

    /// Everything committed after `after`, or `None` if the log no longer
    /// reaches back that far (the caller then [`Store::load`]s).
    fn changes_since(&self, after: Revision) -> Result<Option<Changes>, StoreError>;

    /// Blocks until a commit after `after` may have happened, or `timeout`
    /// passed (spurious wake-ups allowed). A store no one else writes to
    /// just sleeps.
    fn wait_for_change(
        &self,
        after: Revision,
        timeout: std::time::Duration,
    ) -> Result<(), StoreError> {
        let _ = after;
        std::thread::sleep(timeout);
        Ok(())
    }

    /// Last SSH activity of these sessions (those that have any), as
    /// stored: what any replica has recorded.
    fn last_activity(&self, ids: &[SessionId]) -> Result<Vec<(SessionId, i64)>, StoreError>;

    /// A Studio's heartbeat: its session is alive now. Liveness, not state:
    /// it need not be durable (a restart gives every running session a
    /// fresh grace period), but on a shared store every replica sees it.
    fn heartbeat(&self, id: SessionId) -> Result<(), StoreError>;

    /// Of `running`, the sessions with no heartbeat within `timeout`. A
    /// session this store has no heartbeat for starts its clock now (after
    /// a restart, or when it started running), so it is never overdue on
    /// first sight.
    fn overdue(
        &self,
        running: &[SessionId],
        timeout: std::time::Duration,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Cheap round trip to the storage (readiness).
    fn ping(&self) -> Result<(), StoreError>;
}
