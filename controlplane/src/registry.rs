//! The registry: the control plane's live state and its one write path.
//!
//! Writes are jobs for one committer task. A job looks at the state (with
//! the jobs before it in its group already applied) and returns the row ops
//! it wants; the committer takes every job waiting, runs them in order on a
//! copy of the state, commits all their ops to the [`Store`] in one durable
//! batch, and only then installs the copy, publishes it to the [`Hub`] and
//! answers each job. Concurrent writers so share one flush (group commit);
//! a job rejected by validation does not hold up the others; a failed
//! commit leaves the state as it was and fails every job of the group.
//! Readers take a brief lock on the installed state, never waiting for a
//! flush. Jobs run in their own task, so a caller that disconnects cannot
//! leave memory behind the database.
//!
//! Several replicas may share one store ([`Store::shared`]). Each follows
//! the others' commits: woken by [`Store::wait_for_change`] (or at least
//! every [`FOLLOW_INTERVAL`]), the committer reads what it missed with
//! [`Store::changes_since`] and publishes it, so every replica's watch
//! stream carries every change in revision order. A commit that loses the
//! race for a revision ([`StoreError::RevisionConflict`]) catches up and
//! runs its jobs again on the newer state. Reads that must see every
//! replica's acknowledged writes ([`Registry::fresh`]) ask the committer to
//! catch up first.
//!
//! Heartbeats and proxies' connection counts are liveness signals, not
//! state: heartbeats go to the store's liveness table (shared by replicas,
//! not durable), connection counts stay in memory. A session's move to
//! `stopped` after missed heartbeats is a committed change like any other.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model::state::{Change, Revision, Session, SessionState, State};
use model::{Fingerprint, SessionId, SshAccess, UserName, WorkspaceId};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{ApiError, StartError};
use crate::hub::Hub;
use crate::keys;
use crate::metrics::Metrics;
use crate::store::{Batch, KeyRow, Loaded, Op, SessionRow, Store, StoreError};
use crate::token;

/// Most members a session may list.
const MAX_MEMBERS: usize = 1000;
/// How long a proxy's connection count stays valid without a new report.
const ACTIVITY_TTL: Duration = Duration::from_secs(120);
/// Most jobs committed in one batch.
const MAX_GROUP: usize = 512;
/// Attempts of a group that keeps losing the race for a revision.
const MAX_ATTEMPTS: usize = 8;
/// A replica on a shared store looks for others' commits at least this
/// often, even if no notification arrives.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);
/// The store's change log is pruned to `log_retain` entries every this
/// many revisions.
const PRUNE_EVERY: u64 = 1024;

/// A session as the API shows it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub session: Session,
    pub last_activity_ms: Option<i64>,
    pub active_connections: u64,
}

/// What `PUT /v1/sessions/{id}` asks for.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub workspace_id: WorkspaceId,
    pub owner: UserName,
    pub members: BTreeSet<UserName>,
    pub ssh_enabled: bool,
}

/// The result of `PUT /v1/sessions/{id}`.
#[derive(Debug)]
pub struct PutOutcome {
    pub view: SessionView,
    pub created: bool,
    /// Only when created or rotated: it is stored hashed, never shown again.
    pub token: Option<String>,
}

/// One proxy's report for one session.
#[derive(Debug, Clone)]
pub struct ActivityReport {
    pub session: SessionId,
    pub last_activity_ms: i64,
    pub active_connections: u64,
}

/// The state as of one revision. Every map is persistent (`imbl`), so the
/// committer's working copy is an O(1) clone.
#[derive(Clone, Default)]
pub struct Inner {
    state: State,
    keys: imbl::OrdMap<UserName, imbl::OrdMap<Fingerprint, KeyRow>>,
    sessions: imbl::HashMap<SessionId, SessionRow>,
}

/// A write waiting for the committer.
trait Job: Send {
    /// Validates against `inner` and returns the ops to commit, or the
    /// error to answer with (the job is then finished).
    fn run(&mut self, inner: &Inner) -> Result<Vec<Op>, ApiError>;
    /// Answers with the outcome of the commit that carried the ops.
    fn finish(self: Box<Self>, committed: Result<(), ApiError>);
    /// Answers with an error without running.
    fn fail(self: Box<Self>, error: ApiError);
}

struct WriteJob<F, T> {
    f: F,
    value: Option<T>,
    reply: oneshot::Sender<Result<T, ApiError>>,
}

impl<F, T> Job for WriteJob<F, T>
where
    F: FnMut(&Inner) -> Result<(Vec<Op>, T), ApiError> + Send,
    T: Send,
{
    fn run(&mut self, inner: &Inner) -> Result<Vec<Op>, ApiError> {
        let (ops, value) = (self.f)(inner)?;
        self.value = Some(value);
        Ok(ops)
    }

    fn finish(self: Box<Self>, committed: Result<(), ApiError>) {
        let WriteJob { value, reply, .. } = *self;
        let answer = committed.and_then(|()| {
            value.ok_or_else(|| ApiError::Internal("a write finished without running".into()))
        });
        let _ = reply.send(answer);
    }

    fn fail(self: Box<Self>, error: ApiError) {
        let _ = self.reply.send(Err(error));
    }
}

enum Request {
    Write(Box<dyn Job>),
    /// Catch up with the store; answer when done (`None`: a wake-up from
    /// the follower, no one waits).
    Sync(Option<oneshot::Sender<Result<(), ApiError>>>),
}

pub struct Registry {
    /// The committed state; only the committer replaces it.
    inner: RwLock<Inner>,
    requests: mpsc::UnboundedSender<Request>,
    store: Arc<dyn Store>,
    hub: Hub,
    config: Arc<Config>,
    metrics: Metrics,
    /// Live connection counts: (proxy, session) -> (count, reported at).
    connections: Mutex<HashMap<(String, SessionId), (u64, Instant)>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
}

impl Inner {
    fn from_loaded(loaded: Loaded) -> Inner {
        let mut inner = Inner {
            state: State {
                revision: loaded.revision,
                ..State::default()
            },
            ..Inner::default()
        };
        if let Some(access) = loaded.access {
            inner.state.access = access;
        }
        inner.state.proxy_fingerprint = loaded.proxy_fingerprint;
        for row in loaded.keys {
            inner.state.apply(&Change::KeyAdded {
                user: row.user.clone(),
                fingerprint: row.fingerprint,
            });
            inner
                .keys
                .entry(row.user.clone())
                .or_default()
                .insert(row.fingerprint, row);
        }
        for row in loaded.sessions {
            inner.state.apply(&Change::SessionPut {
                session: row.session.clone(),
            });
            inner.sessions.insert(row.session.id, row);
        }
        inner
    }

    /// The session row with this id, if any.
    pub fn session(&self, id: SessionId) -> Option<&SessionRow> {
        self.sessions.get(&id)
    }
}

impl Registry {
    /// Loads the store, reconciles it with the configuration (switch,
    /// allowlist and proxy fingerprint come from the environment) and starts
    /// the committer (and, on a shared store, the follower).
    pub async fn open(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        metrics: Metrics,
    ) -> Result<Arc<Self>, StartError> {
        let loaded = blocking(&store, |s| s.load()).await?;
        let log = loaded.log.clone();
        let inner = Inner::from_loaded(loaded);
        let hub = Hub::new(inner.state.clone(), log, config.log_retain);
        let (requests, queue) = mpsc::unbounded_channel();
        let registry = Arc::new(Self {
            inner: RwLock::new(inner),
            requests,
            store,
            hub,
            config: config.clone(),
            metrics,
            connections: Mutex::new(HashMap::new()),
        });
        tokio::spawn(Committer::new(Arc::downgrade(&registry), queue).run());
        if registry.store.shared() {
            tokio::spawn(follow(Arc::downgrade(&registry)));
        }

        let wanted = config.clone();
        registry
            .write(move |inner| {
                let mut ops = Vec::new();
                if inner.state.access != wanted.access {
                    info!(from = %inner.state.access, to = %wanted.access, "SSH access changed by configuration");
                    ops.push(Op::PutAccess(wanted.access.clone()));
                }
                if let Some(fp) = wanted.proxy_fingerprint
                    && inner.state.proxy_fingerprint != Some(fp)
                {
                    ops.push(Op::PutProxyFingerprint(fp));
                }
                Ok((ops, ()))
            })
            .await
            .map_err(|e| StartError::Store(StoreError::Backend(e.to_string())))?;
        registry.refresh_gauges(&registry.read());
        Ok(registry)
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        blocking(&self.store, |s| s.ping()).await
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a write for the committer and waits for its answer: `f` may
    /// run more than once (on a newer state each time), and its value is
    /// returned only once its ops are durable.
    async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnMut(&Inner) -> Result<(Vec<Op>, T), ApiError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(WriteJob {
            f,
            value: None,
            reply,
        });
        self.requests
            .send(Request::Write(job))
            .map_err(|_| ApiError::Unavailable("the control plane is shutting down".into()))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("the committer stopped".into()))?
    }

    /// On a shared store, waits until this replica has every change
    /// committed before the call (by any replica): what a read that must
    /// see acknowledged writes calls first. A no-op on a store of its own.
    pub async fn fresh(&self) -> Result<(), ApiError> {
        if !self.store.shared() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Sync(Some(reply)))
            .map_err(|_| ApiError::Unavailable("the control plane is shutting down".into()))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("the committer stopped".into()))?
    }

    fn refresh_gauges(&self, inner: &Inner) {
        let mut by_state: HashMap<SessionState, i64> = HashMap::new();
        for row in inner.sessions.values() {
            *by_state.entry(row.session.state).or_default() += 1;
        }
        for s in [
            SessionState::Starting,
            SessionState::Running,
            SessionState::Stopped,
        ] {
            self.metrics
                .sessions
                .with_label_values(&[&s.to_string()])
                .set(*by_state.get(&s).unwrap_or(&0));
        }
        self.metrics.keys.set(inner.state.key_count() as i64);
        self.metrics.revision.set(inner.state.revision.0 as i64);
    }

    fn require_keys_management(&self) -> Result<(), ApiError> {
        if self.config.keys_management {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "SSH key management is disabled: set TOWER_SSH_KEYS_MANAGEMENT_ENABLED=true to enable it".into(),
            ))
        }
    }

    // --- users' keys -------------------------------------------------

    pub async fn add_key(&self, user: UserName, line: String) -> Result<KeyRow, ApiError> {
        self.require_keys_management()?;
        let parsed = keys::parse(&line).map_err(|e| ApiError::field("key", e.to_string()))?;
        let added_at_ms = now_ms();
        self.write(move |inner| {
            if inner
                .keys
                .get(&user)
                .is_some_and(|k| k.contains_key(&parsed.fingerprint))
            {
                return Err(ApiError::Conflict(format!(
                    "key {} is already registered for {user}",
                    parsed.fingerprint
                )));
            }
            let row = KeyRow {
                user: user.clone(),
                fingerprint: parsed.fingerprint,
                key_type: parsed.key_type.clone(),
                comment: parsed.comment.clone(),
                public_key: parsed.line.clone(),
                added_at_ms,
            };
            Ok((vec![Op::PutKey(row.clone())], row))
        })
        .await
    }

    pub async fn list_keys(&self, user: &UserName) -> Result<Vec<KeyRow>, ApiError> {
        self.require_keys_management()?;
        self.fresh().await?;
        Ok(self
            .read()
            .keys
            .get(user)
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default())
    }

    pub async fn remove_key(
        &self,
        user: UserName,
        fingerprint: Fingerprint,
    ) -> Result<(), ApiError> {
        self.require_keys_management()?;
        self.write(move |inner| {
            if !inner
                .keys
                .get(&user)
                .is_some_and(|k| k.contains_key(&fingerprint))
            {
                return Err(ApiError::NotFound(format!(
                    "no key {fingerprint} for {user}"
                )));
            }
            let op = Op::RemoveKey {
                user: user.clone(),
                fingerprint,
            };
            Ok((vec![op], ()))
        })
        .await
    }

    // --- sessions ----------------------------------------------------

    pub async fn put_session(
        &self,
        id: SessionId,
        spec: SessionSpec,
        rotate_token: bool,
    ) -> Result<PutOutcome, ApiError> {
        if spec.members.len() > MAX_MEMBERS {
            return Err(ApiError::field(
                "members",
                format!("at most {MAX_MEMBERS} members"),
            ));
        }
        if spec.ssh_enabled {
            check_access(&self.config.access, spec.workspace_id)?;
        }
        let now = now_ms();
        let row = self
            .write(move |inner| {
                let existing = inner.sessions.get(&id);
                let created = existing.is_none();
                let (token, token_hash) = match existing {
                    Some(row) if !rotate_token => (None, row.token_hash),
                    _ => {
                        let (t, h) = token::generate()?;
                        (Some(t), h)
                    }
                };
                let session = match existing {
                    // A new token is a new start of the Studio: it registers
                    // again, and may bring a new host key.
                    Some(row) if rotate_token => Session {
                        workspace_id: spec.workspace_id,
                        owner: spec.owner.clone(),
                        members: spec.members.clone(),
                        ssh_enabled: spec.ssh_enabled,
                        state: SessionState::Starting,
                        endpoint: None,
                        host_key_fingerprint: None,
                        ..row.session.clone()
                    },
                    Some(row) => Session {
                        workspace_id: spec.workspace_id,
                        owner: spec.owner.clone(),
                        members: spec.members.clone(),
                        ssh_enabled: spec.ssh_enabled,
                        ..row.session.clone()
                    },
                    None => Session {
                        id,
                        workspace_id: spec.workspace_id,
                        owner: spec.owner.clone(),
                        members: spec.members.clone(),
                        ssh_enabled: spec.ssh_enabled,
                        state: SessionState::Starting,
                        endpoint: None,
                        host_key_fingerprint: None,
                    },
                };
                let row = SessionRow {
                    session,
                    token_hash,
                    created_at_ms: existing.map(|r| r.created_at_ms).unwrap_or(now),
                    last_activity_ms: existing.and_then(|r| r.last_activity_ms),
                };
                Ok((vec![Op::PutSession(row.clone())], (row, created, token)))
            })
            .await?;
        let (row, created, token) = row;
        Ok(PutOutcome {
            view: self.view(&row),
            created,
            token,
        })
    }

    pub async fn get_session(&self, id: SessionId) -> Result<SessionView, ApiError> {
        self.fresh().await?;
        let row = self.read().sessions.get(&id).cloned();
        let mut row = row.ok_or_else(|| not_found(id))?;
        // Activity is recorded in the store only (and may have reached
        // another replica).
        let stored = blocking(&self.store, move |s| s.last_activity(&[id])).await?;
        if let Some((_, at)) = stored.first() {
            row.last_activity_ms = Some(row.last_activity_ms.map_or(*at, |m| m.max(*at)));
        }
        Ok(self.view(&row))
    }

    pub async fn delete_session(&self, id: SessionId) -> Result<(), ApiError> {
        self.write(move |inner| {
            if !inner.sessions.contains_key(&id) {
                return Err(not_found(id));
            }
            Ok((vec![Op::RemoveSession { id }], ()))
        })
        .await
    }

    fn view(&self, row: &SessionRow) -> SessionView {
        let now = Instant::now();
        let active_connections = self
            .connections
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|((_, s), (_, at))| {
                        *s == row.session.id && now.duration_since(*at) < ACTIVITY_TTL
                    })
                    .map(|(_, (n, _))| *n)
                    .sum()
            })
            .unwrap_or(0);
        SessionView {
            session: row.session.clone(),
            last_activity_ms: row.last_activity_ms,
            active_connections,
        }
    }

    // --- Studio registration -----------------------------------------

    /// Checks a Studio's token: an unknown session and a wrong token get the
    /// same answer, so the API says nothing about which sessions exist.
    /// On a shared store, a miss is checked again after catching up (the
    /// session may have been created on another replica a moment ago).
    async fn authenticate(
        &self,
        id: SessionId,
        token_hash: &[u8; 32],
    ) -> Result<SessionRow, ApiError> {
        let found = |inner: &Inner| {
            inner
                .sessions
                .get(&id)
                .filter(|row| token::hashes_match(&row.token_hash, token_hash))
                .cloned()
        };
        if let Some(row) = found(&self.read()) {
            return Ok(row);
        }
        if self.store.shared() {
            self.fresh().await?;
            if let Some(row) = found(&self.read()) {
                return Ok(row);
            }
        }
        Err(ApiError::Unauthorized)
    }

    /// Registers a Studio's endpoint and host key; returns the proxy key
    /// fingerprint the Studio must accept.
    ///
    /// The host key is pinned by the first registration after the session
    /// was created or its token rotated: a later registration with another
    /// host key is refused (409), so someone who learnt the token cannot
    /// point members' logins at a server of their own. The endpoint may
    /// change (a Studio moved to another node keeps its key).
    pub async fn register(
        &self,
        id: SessionId,
        token_hash: [u8; 32],
        endpoint: String,
        host_key_fingerprint: Fingerprint,
    ) -> Result<Fingerprint, ApiError> {
        let proxy = self.config.proxy_fingerprint.ok_or_else(|| {
            ApiError::Unavailable(
                "TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT is not configured; Studios cannot know which proxy key to accept"
                    .into(),
            )
        })?;
        self.authenticate(id, &token_hash).await?;
        // Before the commit: a replica's expiry must not see the session
        // running with a heartbeat from an earlier run.
        blocking(&self.store, move |s| s.heartbeat(id)).await?;
        self.write(move |inner| {
            let row = inner
                .sessions
                .get(&id)
                .filter(|row| token::hashes_match(&row.token_hash, &token_hash))
                .ok_or(ApiError::Unauthorized)?;
            if let Some(pinned) = row.session.host_key_fingerprint
                && pinned != host_key_fingerprint
            {
                return Err(ApiError::Conflict(format!(
                    "session {id} is pinned to host key {pinned}, not {host_key_fingerprint}; \
                     a new host key needs a new session start (PUT the session with ?rotateToken=true)"
                )));
            }
            let mut row = row.clone();
            row.session.state = SessionState::Running;
            row.session.endpoint = Some(endpoint.clone());
            row.session.host_key_fingerprint = Some(host_key_fingerprint);
            Ok((vec![Op::PutSession(row)], ()))
        })
        .await?;
        self.metrics.registrations.inc();
        info!(session = %id, "studio registered");
        Ok(proxy)
    }

    /// Extends a running session's liveness.
    pub async fn heartbeat(&self, id: SessionId, token_hash: [u8; 32]) -> Result<(), ApiError> {
        let result = match self.authenticate(id, &token_hash).await {
            Ok(row) if row.session.state != SessionState::Running => Err(ApiError::Conflict(
                format!("session {id} is {}; register again", row.session.state),
            )),
            Ok(_) => blocking(&self.store, move |s| s.heartbeat(id))
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        let label = match &result {
            Ok(()) => "ok",
            Err(ApiError::Unauthorized) => "unauthorized",
            Err(ApiError::Conflict(_)) => "not_registered",
            Err(_) => "error",
        };
        self.metrics.heartbeats.with_label_values(&[label]).inc();
        result
    }

    /// Marks running sessions whose heartbeats stopped as `stopped`;
    /// returns how many. Several replicas may do this at once: the second
    /// one finds the session already stopped.
    pub async fn expire(&self) -> Result<usize, ApiError> {
        let running: Vec<SessionId> = self
            .read()
            .sessions
            .values()
            .filter(|row| row.session.state == SessionState::Running)
            .map(|row| row.session.id)
            .collect();
        let timeout = self.config.liveness_timeout();
        let overdue = blocking(&self.store, move |s| s.overdue(&running, timeout)).await?;
        if overdue.is_empty() {
            return Ok(0);
        }
        let n = self
            .write(move |inner| {
                let ops: Vec<Op> = overdue
                    .iter()
                    .filter_map(|id| inner.sessions.get(id))
                    .filter(|row| row.session.state == SessionState::Running)
                    .map(|row| {
                        let mut row = row.clone();
                        row.session.state = SessionState::Stopped;
                        Op::PutSession(row)
                    })
                    .collect();
                let n = ops.len();
                Ok((ops, n))
            })
            .await?;
        if n > 0 {
            warn!(
                sessions = n,
                "studios missed their heartbeats; marked stopped"
            );
            self.metrics.expired.inc_by(n as u64);
        }
        Ok(n)
    }

    // --- proxies' activity -------------------------------------------

    /// Records a proxy's batch: live connection counts in memory, last
    /// activity durably (reported to the platform so it does not stop a
    /// Studio someone is using).
    pub async fn record_activity(
        &self,
        proxy: String,
        reports: Vec<ActivityReport>,
    ) -> Result<(), ApiError> {
        let now = Instant::now();
        {
            let mut conns = self
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            conns.retain(|_, (_, at)| now.duration_since(*at) < ACTIVITY_TTL);
            for r in &reports {
                conns.insert((proxy.clone(), r.session), (r.active_connections, now));
            }
        }
        let activity: Vec<(SessionId, i64)> = reports
            .iter()
            .map(|r| (r.session, r.last_activity_ms))
            .collect();
        blocking(&self.store, move |s| s.record_activity(&activity)).await?;
        Ok(())
    }

    /// The `ssh` command line and `~/.ssh/config` block for a user.
    pub async fn ssh_info(
        &self,
        id: SessionId,
        user: &UserName,
    ) -> Result<(String, String), ApiError> {
        self.fresh().await?;
        let admits = {
            let inner = self.read();
            let row = inner.sessions.get(&id).ok_or_else(|| not_found(id))?;
            row.session.admits(user)
        };
        if !admits {
            return Err(ApiError::Forbidden(format!(
                "{user} is neither the owner nor a member of session {id}"
            )));
        }
        let host = self.config.ssh_endpoint.host.as_deref().ok_or_else(|| {
            ApiError::Unavailable(
                "no SSH address configured: set TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS (or TOWER_DATA_STUDIO_CONNECT_URL)"
                    .into(),
            )
        })?;
        let port = self.config.ssh_endpoint.port;
        let login = format!("{user}@{id}");
        let command = format!("ssh {login}@{host} -p {port}");
        let config = format!("Host {id}\n  HostName {host}\n  User {login}\n  Port {port}\n");
        Ok((command, config))
    }
}

/// The one task that changes the state: see the module docs.
struct Committer {
    registry: std::sync::Weak<Registry>,
    queue: mpsc::UnboundedReceiver<Request>,
    /// The revision at which the store's log was last pruned.
    pruned_at: u64,
}

impl Committer {
    fn new(registry: std::sync::Weak<Registry>, queue: mpsc::UnboundedReceiver<Request>) -> Self {
        Committer {
            registry,
            queue,
            pruned_at: 0,
        }
    }

    async fn run(mut self) {
        while let Some(first) = self.queue.recv().await {
            let mut jobs = Vec::new();
            let mut syncs = Vec::new();
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Write(job) => jobs.push(job),
                    Request::Sync(reply) => syncs.push(reply),
                }
                if jobs.len() < MAX_GROUP {
                    next = self.queue.try_recv().ok();
                }
            }
            let Some(registry) = self.registry.upgrade() else {
                return;
            };
            // Jobs validate against the newest state of a shared store, and
            // syncs are answered by the same catch-up.
            let caught_up = if registry.store.shared() || !syncs.is_empty() {
                registry.catch_up().await
            } else {
                Ok(())
            };
            for reply in syncs.into_iter().flatten() {
                let _ = reply.send(caught_up.as_ref().map_err(store_failure).copied());
            }
            match caught_up {
                Ok(()) => registry.commit_group(jobs).await,
                Err(e) => {
                    for job in jobs {
                        job.fail(store_failure(&e));
                    }
                }
            }
            self.prune(&registry);
        }
    }

    /// Trims the store's change log now and then, off the write path.
    fn prune(&mut self, registry: &Arc<Registry>) {
        let revision = registry.read().state.revision.0;
        if revision < self.pruned_at + PRUNE_EVERY {
            return;
        }
        self.pruned_at = revision;
        let keep = registry.config.log_retain;
        let store = registry.store.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.prune_log(keep) {
                warn!(error = %e, "pruning the change log failed; will try again");
            }
        });
    }
}

/// On a shared store: wakes the committer when another replica may have
/// committed, and at least every [`FOLLOW_INTERVAL`].
async fn follow(registry: std::sync::Weak<Registry>) {
    loop {
        let Some(this) = registry.upgrade() else {
            return;
        };
        let after = this.read().state.revision;
        let waited = blocking(&this.store, move |s| {
            s.wait_for_change(after, FOLLOW_INTERVAL)
        })
        .await;
        if let Err(e) = waited {
            warn!(error = %e, "waiting for other replicas' changes failed; polling");
            drop(this);
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            continue;
        }
        if this.requests.send(Request::Sync(None)).is_err() {
            return;
        }
    }
}

impl Registry {
    /// Brings the installed state up to the store's (committer only).
    async fn catch_up(&self) -> Result<(), StoreError> {
        let after = self.read().state.revision;
        let Some(changes) = blocking(&self.store, move |s| s.changes_since(after)).await? else {
            // The log was pruned past us: start over from a full load.
            let loaded = blocking(&self.store, |s| s.load()).await?;
            let log = loaded.log.clone();
            let inner = Inner::from_loaded(loaded);
            warn!(from = %after, to = %inner.state.revision, "fell behind the change log; reloaded the state");
            self.hub.replace(inner.state.clone(), log);
            self.refresh_gauges(&inner);
            *self.write_lock() = inner;
            return Ok(());
        };
        if changes.log.is_empty() {
            return Ok(());
        }
        let mut inner = self.read().clone();
        let sessions: HashMap<SessionId, SessionRow> = changes
            .sessions
            .into_iter()
            .map(|row| (row.session.id, row))
            .collect();
        let keys: HashMap<(UserName, Fingerprint), KeyRow> = changes
            .keys
            .into_iter()
            .map(|row| ((row.user.clone(), row.fingerprint), row))
            .collect();
        for (_, change) in &changes.log {
            match change {
                Change::SessionPut { session } => {
                    if let Some(row) = sessions.get(&session.id) {
                        inner.apply(&Op::PutSession(row.clone()));
                    }
                }
                Change::KeyAdded { user, fingerprint } => {
                    if let Some(row) = keys.get(&(user.clone(), *fingerprint)) {
                        inner.apply(&Op::PutKey(row.clone()));
                    }
                }
                Change::KeyRemoved { user, fingerprint } => inner.apply(&Op::RemoveKey {
                    user: user.clone(),
                    fingerprint: *fingerprint,
                }),
                Change::SessionRemoved { id } => inner.apply(&Op::RemoveSession { id: *id }),
                Change::Access { .. } | Change::ProxyFingerprint { .. } => {}
            }
            inner.state.apply(change);
        }
        inner.state.revision = changes.revision;
        self.metrics.catch_ups.inc();
        self.install(inner, changes.log);
        Ok(())
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs a newer state and publishes it with the changes that led
    /// to it.
    fn install(&self, inner: Inner, log: Vec<(Revision, Change)>) {
        self.hub.publish(inner.state.clone(), log);
        self.refresh_gauges(&inner);
        *self.write_lock() = inner;
    }

    /// Runs a group of jobs and commits their ops in one batch, catching up
    /// and running them again when another replica took the revision.
    async fn commit_group(&self, mut jobs: Vec<Box<dyn Job>>) {
        for attempt in 1..=MAX_ATTEMPTS {
            let mut next = self.read().clone();
            let mut accepted = Vec::with_capacity(jobs.len());
            let mut batch = Batch::default();
            for mut job in jobs.drain(..) {
                match job.run(&next) {
                    Ok(ops) => {
                        for op in ops {
                            next.state.revision = next.state.revision.next();
                            let change = op.change();
                            next.apply(&op);
                            next.state.apply(&change);
                            batch.log.push((next.state.revision, change));
                            batch.ops.push(op);
                        }
                        accepted.push(job);
                    }
                    Err(e) => job.fail(e),
                }
            }
            if batch.ops.is_empty() {
                for job in accepted {
                    job.finish(Ok(()));
                }
                return;
            }
            let started = Instant::now();
            let size = accepted.len();
            let (batch, committed) = {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || {
                    let result = store.commit(&batch);
                    (batch, result)
                })
                .await
                {
                    Ok(done) => done,
                    Err(e) => {
                        for job in accepted {
                            job.fail(ApiError::Internal(format!("store task failed: {e}")));
                        }
                        return;
                    }
                }
            };
            match committed {
                Ok(()) => {
                    self.metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.commit_writes.observe(size as f64);
                    self.install(next, batch.log);
                    for job in accepted {
                        job.finish(Ok(()));
                    }
                    return;
                }
                Err(StoreError::RevisionConflict { .. }) if attempt < MAX_ATTEMPTS => {
                    // Another replica (or an earlier commit whose answer was
                    // lost) took these revisions: catch up and run again.
                    if let Err(e) = self.catch_up().await {
                        for job in accepted {
                            job.fail(store_failure(&e));
                        }
                        return;
                    }
                    jobs = accepted;
                }
                Err(e) => {
                    warn!(error = %e, writes = size, "commit failed; nothing of it was applied");
                    for job in accepted {
                        job.fail(store_failure(&e));
                    }
                    return;
                }
            }
        }
    }
}

/// The API's answer to a store failure: details go to the log, not to the
/// caller.
fn store_failure(e: &StoreError) -> ApiError {
    match e {
        StoreError::Corrupt(_) => ApiError::Internal(e.to_string()),
        StoreError::Backend(_) | StoreError::RevisionConflict { .. } => {
            tracing::error!(error = %e, "store unavailable");
            ApiError::Unavailable("the control plane's database is unavailable; try again".into())
        }
    }
}

impl Inner {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::PutKey(row) => {
                self.keys
                    .entry(row.user.clone())
                    .or_default()
                    .insert(row.fingerprint, row.clone());
            }
            Op::RemoveKey { user, fingerprint } => {
                if let Some(k) = self.keys.get_mut(user) {
                    k.remove(fingerprint);
                    if k.is_empty() {
                        self.keys.remove(user);
                    }
                }
            }
            Op::PutSession(row) => {
                self.sessions.insert(row.session.id, row.clone());
            }
            Op::RemoveSession { id } => {
                self.sessions.remove(id);
            }
            Op::PutAccess(_) | Op::PutProxyFingerprint(_) => {}
        }
    }
}

impl Op {
    /// The routed change a row write produces.
    pub fn change(&self) -> Change {
        match self {
            Op::PutKey(row) => Change::KeyAdded {
                user: row.user.clone(),
                fingerprint: row.fingerprint,
            },
            Op::RemoveKey { user, fingerprint } => Change::KeyRemoved {
                user: user.clone(),
                fingerprint: *fingerprint,
            },
            Op::PutSession(row) => Change::SessionPut {
                session: row.session.clone(),
            },
            Op::RemoveSession { id } => Change::SessionRemoved { id: *id },
            Op::PutAccess(access) => Change::Access {
                access: access.clone(),
            },
            Op::PutProxyFingerprint(fp) => Change::ProxyFingerprint { fingerprint: *fp },
        }
    }
}

fn not_found(id: SessionId) -> ApiError {
    ApiError::NotFound(format!("no session {id}"))
}

fn check_access(access: &SshAccess, workspace: WorkspaceId) -> Result<(), ApiError> {
    match access {
        SshAccess::Off => Err(ApiError::Forbidden(
            "SSH is disabled on this platform (TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES is unset); \
             the SSH toggle cannot be turned on"
                .into(),
        )),
        a if !a.allows(workspace) => Err(ApiError::Forbidden(format!(
            "workspace {workspace} is not allowed to use SSH (TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES)"
        ))),
        _ => Ok(()),
    }
}
