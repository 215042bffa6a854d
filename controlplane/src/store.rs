//! Durable storage behind the control plane.
//!
//! The [`Registry`](crate::registry::Registry) keeps the live state in
//! memory and serialises every write; a [`Store`] makes each write durable
//! before the API answers, and gives everything back at start-up. The trait
//! is row-level and synchronous (the registry calls it on a blocking
//! thread), so a PostgreSQL implementation for several replicas can follow
//! without touching handlers: it implements the same five methods.
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
}
