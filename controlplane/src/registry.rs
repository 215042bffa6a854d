//! The registry: the control plane's live state and its one write path.
//!
//! Every write takes the registry lock, validates against memory, commits
//! the row ops and their changes to the [`Store`] (durable before anything
//! else happens), then applies them to memory and publishes the new state
//! version to the [`Hub`]. Writes run in their own task so a caller that
//! disconnects mid-commit cannot leave memory behind the database.
//!
//! Heartbeats and proxies' connection counts are kept in memory only: they
//! are liveness signals, not state. A session's move to `stopped` after
//! missed heartbeats is a committed change like any other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model::state::{Change, Revision, Session, SessionState, State};
use model::{Fingerprint, SessionId, SshAccess, UserName, WorkspaceId};
use tokio::sync::Mutex as AsyncMutex;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{ApiError, StartError};
use crate::hub::Hub;
use crate::keys;
use crate::metrics::Metrics;
use crate::store::{Batch, KeyRow, Op, SessionRow, Store};
use crate::token;

/// Most members a session may list.
const MAX_MEMBERS: usize = 1000;
/// How long a proxy's connection count stays valid without a new report.
const ACTIVITY_TTL: Duration = Duration::from_secs(120);

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

struct Inner {
    state: State,
    keys: BTreeMap<UserName, BTreeMap<Fingerprint, KeyRow>>,
    sessions: HashMap<SessionId, SessionRow>,
}

pub struct Registry {
    inner: AsyncMutex<Inner>,
    store: Arc<dyn Store>,
    hub: Hub,
    config: Arc<Config>,
    metrics: Metrics,
    /// Heartbeat deadlines of running sessions.
    deadlines: Mutex<HashMap<SessionId, Instant>>,
    /// Live connection counts: (proxy, session) -> (count, reported at).
    connections: Mutex<HashMap<(String, SessionId), (u64, Instant)>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Registry {
    /// Loads the store, reconciles it with the configuration (switch,
    /// allowlist and proxy fingerprint come from the environment) and starts
    /// publishing.
    pub async fn open(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        metrics: Metrics,
    ) -> Result<Arc<Self>, StartError> {
        let loader = store.clone();
        let loaded = tokio::task::spawn_blocking(move || loader.load())
            .await
            .map_err(|e| StartError::Store(crate::store::StoreError::Backend(e.to_string())))??;

        let mut state = State {
            revision: loaded.revision,
            ..State::default()
        };
        if let Some(access) = &loaded.access {
            state.access = access.clone();
        }
        state.proxy_fingerprint = loaded.proxy_fingerprint;
        let mut keys: BTreeMap<UserName, BTreeMap<Fingerprint, KeyRow>> = BTreeMap::new();
        for row in loaded.keys {
            state.apply(&Change::KeyAdded {
                user: row.user.clone(),
                fingerprint: row.fingerprint,
            });
            keys.entry(row.user.clone())
                .or_default()
                .insert(row.fingerprint, row);
        }
        let mut sessions = HashMap::new();
        let mut deadlines = HashMap::new();
        let grace = Instant::now() + config.liveness_timeout();
        for row in loaded.sessions {
            state.apply(&Change::SessionPut {
                session: row.session.clone(),
            });
            if row.session.state == SessionState::Running {
                deadlines.insert(row.session.id, grace);
            }
            sessions.insert(row.session.id, row);
        }

        let hub = Hub::new(state.clone(), loaded.log, config.log_retain);
        let registry = Arc::new(Self {
            inner: AsyncMutex::new(Inner {
                state,
                keys,
                sessions,
            }),
            store,
            hub,
            config: config.clone(),
            metrics,
            deadlines: Mutex::new(deadlines),
            connections: Mutex::new(HashMap::new()),
        });

        let mut ops = Vec::new();
        {
            let inner = registry.inner.lock().await;
            if loaded.access.as_ref() != Some(&config.access) {
                info!(from = %inner.state.access, to = %config.access, "SSH access changed by configuration");
                ops.push(Op::PutAccess(config.access.clone()));
            }
            if let Some(fp) = config.proxy_fingerprint
                && inner.state.proxy_fingerprint != Some(fp)
            {
                ops.push(Op::PutProxyFingerprint(fp));
            }
        }
        if !ops.is_empty() {
            let mut inner = registry.inner.lock().await;
            registry
                .commit(&mut inner, ops)
                .await
                .map_err(|e| StartError::Store(crate::store::StoreError::Backend(e.to_string())))?;
        }
        registry.refresh_gauges(&*registry.inner.lock().await);
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

    /// Runs a write in its own task: see the module docs.
    async fn write<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(f(this))
            .await
            .map_err(|e| ApiError::Internal(format!("write task failed: {e}")))?
    }

    /// Commits `ops` durably, then applies and publishes them.
    async fn commit(&self, inner: &mut Inner, ops: Vec<Op>) -> Result<Revision, ApiError> {
        let mut revision = inner.state.revision;
        let log: Vec<(Revision, Change)> = ops
            .iter()
            .map(|op| {
                revision = revision.next();
                (revision, op.change())
            })
            .collect();
        let batch = Batch { ops, log };
        let store = self.store.clone();
        let batch = tokio::task::spawn_blocking(move || store.commit(&batch).map(|()| batch))
            .await
            .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))??;

        for op in &batch.ops {
            inner.apply(op);
        }
        for (_, change) in &batch.log {
            inner.state.apply(change);
        }
        inner.state.revision = revision;
        self.hub.publish(inner.state.clone(), batch.log);
        self.metrics.revision.set(revision.0 as i64);
        self.refresh_gauges(inner);
        Ok(revision)
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

    pub async fn add_key(
        self: &Arc<Self>,
        user: UserName,
        line: String,
    ) -> Result<KeyRow, ApiError> {
        self.require_keys_management()?;
        let parsed = keys::parse(&line).map_err(|e| ApiError::field("key", e.to_string()))?;
        self.write(move |this| async move {
            let mut inner = this.inner.lock().await;
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
                user,
                fingerprint: parsed.fingerprint,
                key_type: parsed.key_type,
                comment: parsed.comment,
                public_key: parsed.line,
                added_at_ms: now_ms(),
            };
            this.commit(&mut inner, vec![Op::PutKey(row.clone())])
                .await?;
            Ok(row)
        })
        .await
    }

    pub async fn list_keys(&self, user: &UserName) -> Result<Vec<KeyRow>, ApiError> {
        self.require_keys_management()?;
        let inner = self.inner.lock().await;
        Ok(inner
            .keys
            .get(user)
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default())
    }

    pub async fn remove_key(
        self: &Arc<Self>,
        user: UserName,
        fingerprint: Fingerprint,
    ) -> Result<(), ApiError> {
        self.require_keys_management()?;
        self.write(move |this| async move {
            let mut inner = this.inner.lock().await;
            if !inner
                .keys
                .get(&user)
                .is_some_and(|k| k.contains_key(&fingerprint))
            {
                return Err(ApiError::NotFound(format!(
                    "no key {fingerprint} for {user}"
                )));
            }
            this.commit(&mut inner, vec![Op::RemoveKey { user, fingerprint }])
                .await?;
            Ok(())
        })
        .await
    }

    // --- sessions ----------------------------------------------------

    pub async fn put_session(
        self: &Arc<Self>,
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
        self.write(move |this| async move {
            let mut inner = this.inner.lock().await;
            let existing = inner.sessions.get(&id).cloned();
            let created = existing.is_none();
            let (token, token_hash) = match &existing {
                Some(row) if !rotate_token => (None, row.token_hash),
                _ => {
                    let (t, h) = token::generate()?;
                    (Some(t), h)
                }
            };
            let session = match &existing {
                Some(row) => Session {
                    workspace_id: spec.workspace_id,
                    owner: spec.owner,
                    members: spec.members,
                    ssh_enabled: spec.ssh_enabled,
                    ..row.session.clone()
                },
                None => Session {
                    id,
                    workspace_id: spec.workspace_id,
                    owner: spec.owner,
                    members: spec.members,
                    ssh_enabled: spec.ssh_enabled,
                    state: SessionState::Starting,
                    endpoint: None,
                    host_key_fingerprint: None,
                },
            };
            let row = SessionRow {
                session,
                token_hash,
                created_at_ms: existing
                    .as_ref()
                    .map(|r| r.created_at_ms)
                    .unwrap_or_else(now_ms),
                last_activity_ms: existing.as_ref().and_then(|r| r.last_activity_ms),
            };
            this.commit(&mut inner, vec![Op::PutSession(row.clone())])
                .await?;
            let view = this.view(&row);
            Ok(PutOutcome {
                view,
                created,
                token,
            })
        })
        .await
    }

    pub async fn get_session(&self, id: SessionId) -> Result<SessionView, ApiError> {
        let inner = self.inner.lock().await;
        let row = inner.sessions.get(&id).ok_or_else(|| not_found(id))?;
        Ok(self.view(row))
    }

    pub async fn delete_session(self: &Arc<Self>, id: SessionId) -> Result<(), ApiError> {
        self.write(move |this| async move {
            let mut inner = this.inner.lock().await;
            if !inner.sessions.contains_key(&id) {
                return Err(not_found(id));
            }
            this.commit(&mut inner, vec![Op::RemoveSession { id }])
                .await?;
            this.lock_deadlines().remove(&id);
            Ok(())
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

    fn lock_deadlines(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Instant>> {
        self.deadlines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // --- Studio registration -----------------------------------------

    /// Registers a Studio's endpoint and host key; returns the proxy key
    /// fingerprint the Studio must accept.
    pub async fn register(
        self: &Arc<Self>,
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
        self.write(move |this| async move {
            let mut inner = this.inner.lock().await;
            let row = inner.sessions.get(&id).ok_or_else(|| not_found(id))?;
            if row.token_hash != token_hash {
                return Err(ApiError::Unauthorized);
            }
            let mut row = row.clone();
            row.session.state = SessionState::Running;
            row.session.endpoint = Some(endpoint);
            row.session.host_key_fingerprint = Some(host_key_fingerprint);
            this.commit(&mut inner, vec![Op::PutSession(row)]).await?;
            this.lock_deadlines()
                .insert(id, Instant::now() + this.config.liveness_timeout());
            this.metrics.registrations.inc();
            info!(session = %id, "studio registered");
            Ok(proxy)
        })
        .await
    }

    /// Extends a running session's liveness.
    pub async fn heartbeat(&self, id: SessionId, token_hash: [u8; 32]) -> Result<(), ApiError> {
        let result = {
            let inner = self.inner.lock().await;
            match inner.sessions.get(&id) {
                None => Err(not_found(id)),
                Some(row) if row.token_hash != token_hash => Err(ApiError::Unauthorized),
                Some(row) if row.session.state != SessionState::Running => Err(ApiError::Conflict(
                    format!("session {id} is {}; register again", row.session.state),
                )),
                Some(_) => {
                    self.lock_deadlines()
                        .insert(id, Instant::now() + self.config.liveness_timeout());
                    Ok(())
                }
            }
        };
        let label = match &result {
            Ok(()) => "ok",
            Err(ApiError::NotFound(_)) => "unknown",
            Err(ApiError::Unauthorized) => "unauthorized",
            Err(_) => "not_registered",
        };
        self.metrics.heartbeats.with_label_values(&[label]).inc();
        result
    }

    /// Marks sessions whose heartbeats stopped as `stopped`; returns how many.
    pub async fn expire(self: &Arc<Self>) -> Result<usize, ApiError> {
        let now = Instant::now();
        let due: Vec<SessionId> = self
            .lock_deadlines()
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        self.write(move |this| async move {
            let mut inner = this.inner.lock().await;
            let mut ops = Vec::new();
            {
                let mut deadlines = this.lock_deadlines();
                for id in due {
                    // A heartbeat may have arrived since the scan.
                    if deadlines.get(&id).is_some_and(|d| *d > Instant::now()) {
                        continue;
                    }
                    deadlines.remove(&id);
                    if let Some(row) = inner.sessions.get(&id)
                        && row.session.state == SessionState::Running
                    {
                        let mut row = row.clone();
                        row.session.state = SessionState::Stopped;
                        warn!(session = %id, "studio missed its heartbeats; marked stopped");
                        ops.push(Op::PutSession(row));
                    }
                }
            }
            let n = ops.len();
            if n > 0 {
                this.commit(&mut inner, ops).await?;
                this.metrics.expired.inc_by(n as u64);
            }
            Ok(n)
        })
        .await
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
        let store = self.store.clone();
        let stored = activity.clone();
        tokio::task::spawn_blocking(move || store.record_activity(&stored))
            .await
            .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))??;
        let mut inner = self.inner.lock().await;
        for (id, at) in activity {
            if let Some(row) = inner.sessions.get_mut(&id) {
                row.last_activity_ms = Some(row.last_activity_ms.map_or(at, |old| old.max(at)));
            }
        }
        Ok(())
    }

    /// The `ssh` command line and `~/.ssh/config` block for a user.
    pub async fn ssh_info(
        &self,
        id: SessionId,
        user: &UserName,
    ) -> Result<(String, String), ApiError> {
        let inner = self.inner.lock().await;
        let row = inner.sessions.get(&id).ok_or_else(|| not_found(id))?;
        if !row.session.admits(user) {
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
