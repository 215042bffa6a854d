//! [`Store`] in one SQLite file: the single-replica control plane's storage.
//!
//! The file is in WAL mode with `synchronous=FULL`, so a commit is on disk
//! (the WAL fsynced) before [`Store::commit`] returns, and survives `kill -9`
//! and power loss as far as the disk honours fsync. Every write is one
//! `BEGIN IMMEDIATE` transaction.
//!
//! Schema (version 1, in `PRAGMA user_version`; `migrate` upgrades older
//! files step by step and refuses newer ones). Tables are `STRICT`; ids and
//! fingerprints are stored as their display strings and parsed back, so a
//! bad value is reported as [`StoreError::Corrupt`] naming the table, the
//! column and the value, never a panic or a default:
//!
//! - `settings`: exactly one row (`id = 1`): `revision`, the highest
//!   revision ever committed (kept here so pruning the log cannot lower it),
//!   `access` (JSON of [`SshAccess`](model::SshAccess), NULL if never
//!   written) and `proxy_fingerprint`.
//! - `keys`: `PRIMARY KEY (user, fingerprint)`, `WITHOUT ROWID`.
//! - `sessions`: `PRIMARY KEY id`, `WITHOUT ROWID`; `members` is a JSON
//!   array of user names, `token_hash` a 32-byte BLOB.
//! - `changes`: `revision INTEGER PRIMARY KEY`, `change` JSON of
//!   [`Change`](model::Change).
//!
//! Loading reads each table with one cached statement in primary-key
//! order. Measured once (release build, 2-core build machine, warm page
//! cache, five runs): 1,000,000 key rows (a 243 MB file) load in 0.8-1.4 s,
//! 100,000 sessions with three members each in 0.13-0.2 s.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use model::state::{Change, Revision, Session, SessionState};
use model::{Fingerprint, SessionId, UserName, WorkspaceId};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row, Transaction, TransactionBehavior, params};
use serde::de::DeserializeOwned;

use super::{Batch, Changes, KeyRow, Loaded, Op, SessionRow, Store, StoreError};

/// How long a statement waits for another connection's lock (a backup tool,
/// an operator's `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `MIGRATIONS[i]` upgrades the schema from version `i` to `i + 1`; the
/// schema version this code writes is `MIGRATIONS.len()`. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE settings (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL,
        access TEXT,
        proxy_fingerprint TEXT
    ) STRICT;
    INSERT INTO settings (id, revision) VALUES (1, 0);
    CREATE TABLE keys (
        user TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        key_type TEXT NOT NULL,
        comment TEXT NOT NULL,
        public_key TEXT NOT NULL,
        added_at_ms INTEGER NOT NULL,
        PRIMARY KEY (user, fingerprint)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE sessions (
        id TEXT NOT NULL PRIMARY KEY,
        workspace_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        members TEXT NOT NULL,
        ssh_enabled INTEGER NOT NULL,
        state TEXT NOT NULL,
        endpoint TEXT,
        host_key_fingerprint TEXT,
        token_hash BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        last_activity_ms INTEGER
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE changes (
        revision INTEGER PRIMARY KEY,
        change TEXT NOT NULL
    ) STRICT;",
];

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// A [`Store`] in one SQLite file.
///
/// The connection is not `Sync`, so calls take turns on a mutex; the
/// registry makes one write at a time anyway, and a load happens once at
/// start-up. Heartbeats are kept in memory: one process owns the file, and
/// a restart gives every running session a fresh grace period.
#[derive(Debug)]
pub struct SqliteStore {
    /// For error messages.
    path: PathBuf,
    conn: Mutex<Connection>,
    heartbeats: Mutex<HashMap<SessionId, Instant>>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(err.to_string())
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and the schema if
    /// missing and migrating an older schema. Errors name the path.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = open_connection(path).map_err(|err| in_file(path, "opening", err))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            heartbeats: Mutex::new(HashMap::new()),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection; errors name the file and `doing`.
    fn with_conn<T>(
        &self,
        doing: &str,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| {
            in_file(
                &self.path,
                doing,
                StoreError::Backend(
                    "the connection's lock is poisoned: an earlier store call panicked".into(),
                ),
            )
        })?;
        f(&mut conn).map_err(|err| in_file(&self.path, doing, err))
    }
}

impl Store for SqliteStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        self.with_conn("loading", load)
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.with_conn("committing", |conn| commit(conn, batch))
    }

    fn record_activity(&self, activity: &[(SessionId, i64)]) -> Result<(), StoreError> {
        if activity.is_empty() {
            return Ok(());
        }
        self.with_conn("recording activity", |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut update = tx.prepare_cached(
                    "UPDATE sessions SET last_activity_ms = max(coalesce(last_activity_ms, ?2), ?2) WHERE id = ?1",
                )?;
                for (id, at_ms) in activity {
                    update.execute(params![id.to_string(), at_ms])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn prune_log(&self, keep: usize) -> Result<(), StoreError> {
        // Deletes up to and including the (keep+1)-th newest; when there are
        // at most `keep` rows the subquery is NULL and nothing matches.
        let offset = i64::try_from(keep).unwrap_or(i64::MAX);
        self.with_conn("pruning the change log", |conn| {
            conn.prepare_cached(
                "DELETE FROM changes WHERE revision <= \
                 (SELECT revision FROM changes ORDER BY revision DESC LIMIT 1 OFFSET ?1)",
            )?
            .execute([offset])?;
            Ok(())
        })
    }

    fn changes_since(&self, after: Revision) -> Result<Option<Changes>, StoreError> {
        self.with_conn("reading changes", |conn| changes_since(conn, after))
    }

    fn last_activity(&self, ids: &[SessionId]) -> Result<Vec<(SessionId, i64)>, StoreError> {
        self.with_conn("reading activity", |conn| {
            let mut select = conn.prepare_cached(
                "SELECT last_activity_ms FROM sessions WHERE id = ?1 AND last_activity_ms IS NOT NULL",
            )?;
            let mut out = Vec::new();
            for id in ids {
                let mut rows = select.query([id.to_string()])?;
                if let Some(row) = rows.next()? {
                    out.push((*id, read_int(row, 0, "sessions.last_activity_ms")?));
                }
            }
            Ok(out)
        })
    }

    fn heartbeat(&self, id: SessionId) -> Result<(), StoreError> {
        self.lock_heartbeats().insert(id, Instant::now());
        Ok(())
    }

    fn overdue(
        &self,
        running: &[SessionId],
        timeout: Duration,
    ) -> Result<Vec<SessionId>, StoreError> {
        let now = Instant::now();
        let mut beats = self.lock_heartbeats();
        let mut seen = HashMap::with_capacity(running.len());
        let mut overdue = Vec::new();
        for id in running {
            let at = beats.get(id).copied().unwrap_or(now);
            if now.duration_since(at) >= timeout {
                overdue.push(*id);
            }
            seen.insert(*id, at);
        }
        // Sessions no longer running are forgotten, so a map of a long-lived
        // process does not grow with every session it ever saw.
        *beats = seen;
        Ok(overdue)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with_conn("checking the database", |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

impl SqliteStore {
    fn lock_heartbeats(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Instant>> {
        self.heartbeats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Prefixes a backend or corruption message with the file and the action.
fn in_file(path: &Path, doing: &str, err: StoreError) -> StoreError {
    let place = path.display();
    match err {
        StoreError::Backend(msg) => StoreError::Backend(format!("{place}: {doing}: {msg}")),
        StoreError::Corrupt(msg) => StoreError::Corrupt(format!("{place}: {msg}")),
        conflict @ StoreError::RevisionConflict { .. } => conflict,
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let existed = path.exists();
    // No URI flag: a path is a path, even one starting with "file:".
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "cannot use the WAL journal (SQLite kept {mode:?})"
        )));
    }
    // In WAL mode, FULL fsyncs the WAL at every commit: durable on return.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // No table references another today; on so that later ones are checked.
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(32);
    migrate(&mut conn)?;
    if !existed {
        // SQLite syncs the directory for the WAL it creates, not for the
        // database file itself; without this a power cut could lose the
        // new file's directory entry.
        sync_parent_dir(path)
            .map_err(|err| StoreError::Backend(format!("syncing the directory: {err}")))?;
    }
    Ok(conn)
}

fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, so a crash
/// mid-migration leaves the old version. Refuses a newer schema: this
/// program would not know what it may touch.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let from = usize::try_from(version)
        .ok()
        .filter(|v| *v <= SCHEMA_VERSION)
        .ok_or_else(|| {
            StoreError::Backend(format!(
                "schema version {version} is not one this program knows (up to {SCHEMA_VERSION}); \
             was the file written by a newer connect-control?"
            ))
        })?;
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.execute_batch(sql).map_err(|err| {
            StoreError::Backend(format!("migrating to schema version {}: {err}", step + 1))
        })?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", step + 1))?;
    }
    tx.commit()?;
    Ok(())
}

fn commit(conn: &mut Connection, batch: &Batch) -> Result<(), StoreError> {
    // Everything that can be checked without the database, before it.
    for pair in batch.log.windows(2) {
        if let [(before, _), (after, _)] = pair
            && after <= before
        {
            return Err(StoreError::Backend(format!(
                "refusing a batch whose log revisions do not increase: {after} after {before}"
            )));
        }
    }
    let log = batch
        .log
        .iter()
        .map(|(revision, change)| Ok((revision_to_sql(*revision)?, to_json(change)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;

    // Dropping `tx` on any error below rolls the whole batch back.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some((first, _)) = batch.log.first() {
        let stored = stored_revision(&tx)?;
        if *first <= stored {
            return Err(StoreError::RevisionConflict {
                attempted: *first,
                stored,
            });
        }
    }
    for op in &batch.ops {
        apply(&tx, op)?;
    }
    if let Some((last, _)) = log.last() {
        let mut insert =
            tx.prepare_cached("INSERT INTO changes (revision, change) VALUES (?1, ?2)")?;
        for (revision, change) in &log {
            insert.execute(params![revision, change])?;
        }
        tx.prepare_cached("UPDATE settings SET revision = ?1 WHERE id = 1")?
            .execute([last])?;
    }
    tx.commit()?;
    Ok(())
}

fn apply(tx: &Transaction<'_>, op: &Op) -> Result<(), StoreError> {
    match op {
        Op::PutKey(key) => {
            tx.prepare_cached(
                "INSERT INTO keys (user, fingerprint, key_type, comment, public_key, added_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (user, fingerprint) DO UPDATE SET key_type = excluded.key_type,
                     comment = excluded.comment, public_key = excluded.public_key,
                     added_at_ms = excluded.added_at_ms",
            )?
            .execute(params![
                key.user.as_str(),
                key.fingerprint.to_string(),
                key.key_type,
                key.comment,
                key.public_key,
                key.added_at_ms,
            ])?;
        }
        Op::RemoveKey { user, fingerprint } => {
            tx.prepare_cached("DELETE FROM keys WHERE user = ?1 AND fingerprint = ?2")?
                .execute(params![user.as_str(), fingerprint.to_string()])?;
        }
        Op::PutSession(row) => {
            let s = &row.session;
            tx.prepare_cached(
                // Activity only moves forward: the row may come from a
                // replica that has not seen the latest report.
                "INSERT INTO sessions (id, workspace_id, owner, members, ssh_enabled, state,
                     endpoint, host_key_fingerprint, token_hash, created_at_ms, last_activity_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET workspace_id = excluded.workspace_id,
                     owner = excluded.owner, members = excluded.members,
                     ssh_enabled = excluded.ssh_enabled, state = excluded.state,
                     endpoint = excluded.endpoint,
                     host_key_fingerprint = excluded.host_key_fingerprint,
                     token_hash = excluded.token_hash, created_at_ms = excluded.created_at_ms,
                     last_activity_ms = CASE
                         WHEN sessions.last_activity_ms IS NULL THEN excluded.last_activity_ms
                         WHEN excluded.last_activity_ms IS NULL THEN sessions.last_activity_ms
                         ELSE max(sessions.last_activity_ms, excluded.last_activity_ms) END",
            )?
            .execute(params![
                s.id.to_string(),
                s.workspace_id.to_string(),
                s.owner.as_str(),
                to_json(&s.members)?,
                s.ssh_enabled,
                s.state.to_string(),
                s.endpoint,
                s.host_key_fingerprint.map(|fp| fp.to_string()),
                &row.token_hash[..],
                row.created_at_ms,
                row.last_activity_ms,
            ])?;
        }
        Op::RemoveSession { id } => {
            tx.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                .execute([id.to_string()])?;
        }
        Op::PutAccess(access) => {
            tx.prepare_cached("UPDATE settings SET access = ?1 WHERE id = 1")?
                .execute([to_json(access)?])?;
        }
        Op::PutProxyFingerprint(fingerprint) => {
            tx.prepare_cached("UPDATE settings SET proxy_fingerprint = ?1 WHERE id = 1")?
                .execute([fingerprint.to_string()])?;
        }
    }
    Ok(())
}

fn stored_revision(tx: &Transaction<'_>) -> Result<Revision, StoreError> {
    let mut select = tx.prepare_cached("SELECT revision FROM settings WHERE id = 1")?;
    let mut rows = select.query([])?;
    let row = rows.next()?.ok_or_else(missing_settings)?;
    read_revision(row, 0, "settings.revision")
}

fn missing_settings() -> StoreError {
    StoreError::Corrupt("settings: the row is missing".into())
}

fn load(conn: &mut Connection) -> Result<Loaded, StoreError> {
    // One read transaction: the tables as of one commit.
    let tx = conn.transaction()?;
    let mut loaded = {
        let mut select = tx.prepare_cached(
            "SELECT revision, access, proxy_fingerprint FROM settings WHERE id = 1",
        )?;
        let mut rows = select.query([])?;
        let row = rows.next()?.ok_or_else(missing_settings)?;
        Loaded {
            revision: read_revision(row, 0, "settings.revision")?,
            access: read_opt_json(row, 1, "settings.access")?,
            proxy_fingerprint: read_opt_parsed(row, 2, "settings.proxy_fingerprint")?,
            ..Loaded::default()
        }
    };
    {
        let mut select = tx.prepare_cached(
            "SELECT user, fingerprint, key_type, comment, public_key, added_at_ms
             FROM keys ORDER BY user, fingerprint",
        )?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            loaded.keys.push(read_key(row)?);
        }
    }
    {
        let mut select = tx.prepare_cached(
            "SELECT id, workspace_id, owner, members, ssh_enabled, state, endpoint,
                    host_key_fingerprint, token_hash, created_at_ms, last_activity_ms
             FROM sessions ORDER BY id",
        )?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            loaded.sessions.push(read_session(row)?);
        }
    }
    {
        let mut select =
            tx.prepare_cached("SELECT revision, change FROM changes ORDER BY revision")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            loaded.log.push((
                read_revision(row, 0, "changes.revision")?,
                read_json(row, 1, "changes.change")?,
            ));
        }
    }
    tx.commit()?;
    Ok(loaded)
}

fn changes_since(conn: &mut Connection, after: Revision) -> Result<Option<Changes>, StoreError> {
    // One read transaction: the log and the rows as of one commit.
    let tx = conn.transaction()?;
    let stored = stored_revision(&tx)?;
    let mut changes = Changes {
        revision: stored,
        ..Changes::default()
    };
    if stored <= after {
        changes.revision = after.max(stored);
        return Ok(Some(changes));
    }
    {
        let mut select = tx.prepare_cached(
            "SELECT revision, change FROM changes WHERE revision > ?1 ORDER BY revision",
        )?;
        let mut rows = select.query([revision_to_sql(after)?])?;
        while let Some(row) = rows.next()? {
            changes.log.push((
                read_revision(row, 0, "changes.revision")?,
                read_json(row, 1, "changes.change")?,
            ));
        }
    }
    // Pruned past `after`: the log no longer starts right after it.
    if changes.log.first().map(|(r, _)| *r) != Some(after.next()) {
        return Ok(None);
    }
    let mut sessions = std::collections::BTreeSet::new();
    let mut keys = std::collections::BTreeSet::new();
    for (_, change) in &changes.log {
        match change {
            Change::SessionPut { session } => {
                sessions.insert(session.id.to_string());
            }
            Change::KeyAdded { user, fingerprint } => {
                keys.insert((user.as_str().to_owned(), fingerprint.to_string()));
            }
            _ => {}
        }
    }
    {
        let mut select = tx.prepare_cached(
            "SELECT id, workspace_id, owner, members, ssh_enabled, state, endpoint,
                    host_key_fingerprint, token_hash, created_at_ms, last_activity_ms
             FROM sessions WHERE id = ?1",
        )?;
        for id in &sessions {
            let mut rows = select.query([id])?;
            if let Some(row) = rows.next()? {
                changes.sessions.push(read_session(row)?);
            }
        }
    }
    {
        let mut select = tx.prepare_cached(
            "SELECT user, fingerprint, key_type, comment, public_key, added_at_ms
             FROM keys WHERE user = ?1 AND fingerprint = ?2",
        )?;
        for (user, fingerprint) in &keys {
            let mut rows = select.query([user, fingerprint])?;
            if let Some(row) = rows.next()? {
                changes.keys.push(read_key(row)?);
            }
        }
    }
    tx.commit()?;
    Ok(Some(changes))
}

fn read_key(row: &Row<'_>) -> Result<KeyRow, StoreError> {
    Ok(KeyRow {
        user: read_parsed(row, 0, "keys.user")?,
        fingerprint: read_parsed(row, 1, "keys.fingerprint")?,
        key_type: read_text(row, 2, "keys.key_type")?.to_owned(),
        comment: read_text(row, 3, "keys.comment")?.to_owned(),
        public_key: read_text(row, 4, "keys.public_key")?.to_owned(),
        added_at_ms: read_int(row, 5, "keys.added_at_ms")?,
    })
}

fn read_session(row: &Row<'_>) -> Result<SessionRow, StoreError> {
    let ssh_enabled = match read_int(row, 4, "sessions.ssh_enabled")? {
        0 => false,
        1 => true,
        other => {
            return Err(corrupt(
                "sessions.ssh_enabled",
                format_args!("{other} is neither 0 nor 1"),
            ));
        }
    };
    let state = match read_text(row, 5, "sessions.state")? {
        "starting" => SessionState::Starting,
        "running" => SessionState::Running,
        "stopped" => SessionState::Stopped,
        other => {
            return Err(corrupt(
                "sessions.state",
                format_args!("{other:?} is not a session state"),
            ));
        }
    };
    let token_hash = read_blob(row, 8, "sessions.token_hash")?;
    let token_hash = <[u8; 32]>::try_from(token_hash).map_err(|_| {
        corrupt(
            "sessions.token_hash",
            format_args!("{} bytes where a SHA-256 has 32", token_hash.len()),
        )
    })?;
    Ok(SessionRow {
        session: Session {
            id: read_parsed::<SessionId>(row, 0, "sessions.id")?,
            workspace_id: read_parsed::<WorkspaceId>(row, 1, "sessions.workspace_id")?,
            owner: read_parsed::<UserName>(row, 2, "sessions.owner")?,
            members: read_json(row, 3, "sessions.members")?,
            ssh_enabled,
            state,
            endpoint: read_opt_text(row, 6, "sessions.endpoint")?.map(str::to_owned),
            host_key_fingerprint: read_opt_parsed::<Fingerprint>(
                row,
                7,
                "sessions.host_key_fingerprint",
            )?,
        },
        token_hash,
        created_at_ms: read_int(row, 9, "sessions.created_at_ms")?,
        last_activity_ms: read_opt_int(row, 10, "sessions.last_activity_ms")?,
    })
}

// Column readers. `at` is `table.column`, named in every corruption message;
// values are shown escaped (`{:?}`) so a message is safe to log.

fn corrupt(at: &str, what: impl Display) -> StoreError {
    StoreError::Corrupt(format!("{at}: {what}"))
}

fn value<'r>(row: &'r Row<'_>, index: usize, at: &str) -> Result<ValueRef<'r>, StoreError> {
    row.get_ref(index)
        .map_err(|err| StoreError::Backend(format!("reading {at}: {err}")))
}

fn read_opt_text<'r>(
    row: &'r Row<'_>,
    index: usize,
    at: &str,
) -> Result<Option<&'r str>, StoreError> {
    match value(row, index, at)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|err| corrupt(at, format_args!("not UTF-8: {err}"))),
        other => Err(corrupt(
            at,
            format_args!("{} where text belongs", other.data_type()),
        )),
    }
}

fn read_text<'r>(row: &'r Row<'_>, index: usize, at: &str) -> Result<&'r str, StoreError> {
    read_opt_text(row, index, at)?.ok_or_else(|| corrupt(at, "NULL where text belongs"))
}

fn read_opt_int(row: &Row<'_>, index: usize, at: &str) -> Result<Option<i64>, StoreError> {
    match value(row, index, at)? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(int) => Ok(Some(int)),
        other => Err(corrupt(
            at,
            format_args!("{} where an integer belongs", other.data_type()),
        )),
    }
}

fn read_int(row: &Row<'_>, index: usize, at: &str) -> Result<i64, StoreError> {
    read_opt_int(row, index, at)?.ok_or_else(|| corrupt(at, "NULL where an integer belongs"))
}

fn read_blob<'r>(row: &'r Row<'_>, index: usize, at: &str) -> Result<&'r [u8], StoreError> {
    match value(row, index, at)? {
        ValueRef::Blob(bytes) => Ok(bytes),
        other => Err(corrupt(
            at,
            format_args!("{} where a blob belongs", other.data_type()),
        )),
    }
}

fn read_opt_parsed<T>(row: &Row<'_>, index: usize, at: &str) -> Result<Option<T>, StoreError>
where
    T: FromStr,
    T::Err: Display,
{
    read_opt_text(row, index, at)?
        .map(|text| {
            text.parse()
                .map_err(|err| corrupt(at, format_args!("{text:?}: {err}")))
        })
        .transpose()
}

fn read_parsed<T>(row: &Row<'_>, index: usize, at: &str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: Display,
{
    read_opt_parsed(row, index, at)?.ok_or_else(|| corrupt(at, "NULL where text belongs"))
}

fn read_opt_json<T: DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
    at: &str,
) -> Result<Option<T>, StoreError> {
    read_opt_text(row, index, at)?
        .map(|text| {
            serde_json::from_str(text).map_err(|err| corrupt(at, format_args!("{text:?}: {err}")))
        })
        .transpose()
}

fn read_json<T: DeserializeOwned>(row: &Row<'_>, index: usize, at: &str) -> Result<T, StoreError> {
    read_opt_json(row, index, at)?.ok_or_else(|| corrupt(at, "NULL where JSON belongs"))
}

fn read_revision(row: &Row<'_>, index: usize, at: &str) -> Result<Revision, StoreError> {
    let int = read_int(row, index, at)?;
    u64::try_from(int)
        .map(Revision)
        .map_err(|_| corrupt(at, format_args!("{int} is not a revision")))
}

fn revision_to_sql(revision: Revision) -> Result<i64, StoreError> {
    i64::try_from(revision.0).map_err(|_| {
        StoreError::Backend(format!(
            "revision {revision} does not fit in SQLite's 64-bit signed INTEGER"
        ))
    })
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|err| StoreError::Backend(format!("serializing to JSON: {err}")))
}

#[cfg(test)]
mod tests;
