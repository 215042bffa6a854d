//! What the control plane tells every proxy: the routing state, the changes
//! to it, and the lines of the watch stream that carry them.
//!
//! The state is everything a proxy needs to decide a login and find the
//! Studio: the SSH switch and allowlist, the proxy key fingerprint, users'
//! key fingerprints, and sessions (workspace, owner and members, toggle,
//! registered endpoint and host key, liveness).
//!
//! Every committed change has a [`Revision`], strictly increasing. A watch
//! stream (`GET /v1/watch?from=REV`) is newline-delimited JSON
//! [`WatchLine`]s: a snapshot (`snapshotBegin`, one `change` line per item,
//! `snapshotEnd`) when the watcher is new or too far behind, otherwise only
//! the changes after its revision; then each change as it commits, and a
//! `heartbeat` at least every 15 s. Changes carry whole records (puts and
//! removals, never increments), so applying one twice is harmless and a
//! snapshot is just the changes that rebuild the state.

use std::collections::BTreeSet;
use std::fmt;

use imbl::{OrdMap, OrdSet};

use serde::{Deserialize, Serialize};

use crate::access::SshAccess;
use crate::fingerprint::Fingerprint;
use crate::session_id::SessionId;
use crate::user::UserName;
use crate::workspace::WorkspaceId;

/// A point in the control plane's history. Revision 0 is the empty state.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A Studio session's liveness as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionState {
    /// Created, no connect-client has registered yet.
    Starting,
    /// Registered and heartbeating.
    Running,
    /// Deleted by the platform or heartbeats stopped.
    Stopped,
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopped => "stopped",
        })
    }
}

/// A Studio session as proxies route it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: SessionId,
    pub workspace_id: WorkspaceId,
    pub owner: UserName,
    /// Users besides the owner who may connect.
    pub members: BTreeSet<UserName>,
    /// The session's "SSH Connection" toggle.
    pub ssh_enabled: bool,
    pub state: SessionState,
    /// Where connect-client listens, `host:port`; set by registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Studio host key connect-client registered; the proxy checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<Fingerprint>,
}

impl Session {
    /// Whether `user` is the owner or a member.
    pub fn admits(&self, user: &UserName) -> bool {
        self.owner == *user || self.members.contains(user)
    }
}

/// One committed change, carrying whole records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Change {
    /// The SSH switch and allowlist.
    Access {
        access: SshAccess,
    },
    /// The fingerprint every proxy's key must have.
    ProxyFingerprint {
        fingerprint: Fingerprint,
    },
    #[serde(rename_all = "camelCase")]
    KeyAdded {
        user: UserName,
        fingerprint: Fingerprint,
    },
    #[serde(rename_all = "camelCase")]
    KeyRemoved {
        user: UserName,
        fingerprint: Fingerprint,
    },
    SessionPut {
        session: Session,
    },
    SessionRemoved {
        id: SessionId,
    },
}

/// One line of the watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum WatchLine {
    /// Start of a snapshot: forget everything; the `change` lines up to
    /// `snapshotEnd` rebuild the state at `revision`.
    SnapshotBegin { revision: Revision },
    /// A change: within a snapshot, an item of it; outside, a delta.
    Change { revision: Revision, change: Change },
    /// End of a snapshot: the state is complete at `revision`.
    SnapshotEnd { revision: Revision },
    /// Nothing changed; the stream is alive at `revision`.
    Heartbeat { revision: Revision },
}

impl WatchLine {
    pub fn revision(&self) -> Revision {
        match self {
            Self::SnapshotBegin { revision }
            | Self::Change { revision, .. }
            | Self::SnapshotEnd { revision }
            | Self::Heartbeat { revision } => *revision,
        }
    }
}

/// A replica of the routing state, built by applying changes. The control
/// plane serves its snapshots from one, the proxies route from one.
///
/// The maps are persistent (`imbl`): a clone shares structure and costs
/// O(1), and applying a change copies only the O(log n) path it touches. A
/// watcher streams a snapshot from its own clone without holding a lock,
/// and a proxy publishes each new version to its cores as a new clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub revision: Revision,
    pub access: SshAccess,
    pub proxy_fingerprint: Option<Fingerprint>,
    /// Users' key fingerprints.
    pub keys: OrdMap<UserName, OrdSet<Fingerprint>>,
    pub sessions: OrdMap<SessionId, Session>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            revision: Revision(0),
            access: SshAccess::Off,
            proxy_fingerprint: None,
            keys: OrdMap::new(),
            sessions: OrdMap::new(),
        }
    }
}

impl State {
    /// Applies one change (idempotent: changes carry whole records).
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Access { access } => self.access = access.clone(),
            Change::ProxyFingerprint { fingerprint } => self.proxy_fingerprint = Some(*fingerprint),
            Change::KeyAdded { user, fingerprint } => {
                self.keys
                    .entry(user.clone())
                    .or_default()
                    .insert(*fingerprint);
            }
            Change::KeyRemoved { user, fingerprint } => {
                if let Some(set) = self.keys.get_mut(user) {
                    set.remove(fingerprint);
                    if set.is_empty() {
                        self.keys.remove(user);
                    }
                }
            }
            Change::SessionPut { session } => {
                self.sessions.insert(session.id, session.clone());
            }
            Change::SessionRemoved { id } => {
                self.sessions.remove(id);
            }
        }
    }

    /// The changes that rebuild this state from nothing.
    pub fn snapshot_changes(&self) -> impl Iterator<Item = Change> + '_ {
        let access = std::iter::once(Change::Access {
            access: self.access.clone(),
        });
        let proxy = self
            .proxy_fingerprint
            .map(|fingerprint| Change::ProxyFingerprint { fingerprint });
        let keys = self.keys.iter().flat_map(|(user, fps)| {
            fps.iter().map(move |fp| Change::KeyAdded {
                user: user.clone(),
                fingerprint: *fp,
            })
        });
        let sessions = self
            .sessions
            .values()
            .map(|s| Change::SessionPut { session: s.clone() });
        access.chain(proxy).chain(keys).chain(sessions)
    }

    /// Number of key fingerprints held.
    pub fn key_count(&self) -> usize {
        self.keys.values().map(OrdSet::len).sum()
    }
}

/// Rebuilds state from watch lines, as a proxy does; the reference
/// implementation the tests check the control plane's stream against.
#[derive(Debug, Default)]
pub struct Follower {
    current: State,
    /// A snapshot being received; swapped in at `snapshotEnd`.
    building: Option<State>,
}

/// A watch line that does not fit the stream so far.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    #[error("revision went backwards: {got} after {had}")]
    Backwards { had: Revision, got: Revision },
    #[error("snapshotEnd without snapshotBegin")]
    UnexpectedSnapshotEnd,
}

impl Follower {
    /// The last complete state.
    pub fn state(&self) -> &State {
        &self.current
    }

    /// Whether a complete state has been received.
    pub fn is_synced(&self) -> bool {
        self.building.is_none()
    }

    /// Applies one line; returns whether the complete state changed.
    pub fn apply(&mut self, line: &WatchLine) -> Result<bool, FollowError> {
        match line {
            WatchLine::SnapshotBegin { revision } => {
                self.building = Some(State {
                    revision: *revision,
                    ..State::default()
                });
                Ok(false)
            }
            WatchLine::Change { revision, change } => match &mut self.building {
                Some(state) => {
                    state.apply(change);
                    Ok(false)
                }
                None => {
                    if *revision < self.current.revision {
                        return Err(FollowError::Backwards {
                            had: self.current.revision,
                            got: *revision,
                        });
                    }
                    self.current.apply(change);
                    self.current.revision = *revision;
                    Ok(true)
                }
            },
            WatchLine::SnapshotEnd { .. } => {
                let state = self
                    .building
                    .take()
                    .ok_or(FollowError::UnexpectedSnapshotEnd)?;
                self.current = state;
                Ok(true)
            }
            WatchLine::Heartbeat { .. } => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserName {
        s.parse().expect("user")
    }

    fn session(id: &str, owner: &str) -> Session {
        Session {
            id: id.parse().expect("id"),
            workspace_id: WorkspaceId::from(1),
            owner: user(owner),
            members: BTreeSet::new(),
            ssh_enabled: true,
            state: SessionState::Running,
            endpoint: Some("127.0.0.1:2223".into()),
            host_key_fingerprint: None,
        }
    }

    #[test]
    fn snapshot_changes_rebuild_the_state() {
        let mut s = State::default();
        let fp = Fingerprint::of_key_blob(b"k");
        s.apply(&Change::Access {
            access: SshAccess::AllWorkspaces,
        });
        s.apply(&Change::KeyAdded {
            user: user("alice"),
            fingerprint: fp,
        });
        s.apply(&Change::SessionPut {
            session: session("01ac8894", "alice"),
        });
        let mut rebuilt = State::default();
        for c in s.snapshot_changes() {
            rebuilt.apply(&c);
        }
        assert_eq!(rebuilt, s);
    }

    #[test]
    fn removing_the_last_key_forgets_the_user() {
        let mut s = State::default();
        let fp = Fingerprint::of_key_blob(b"k");
        s.apply(&Change::KeyAdded {
            user: user("alice"),
            fingerprint: fp,
        });
        s.apply(&Change::KeyRemoved {
            user: user("alice"),
            fingerprint: fp,
        });
        assert!(s.keys.is_empty());
    }

    #[test]
    fn watch_lines_have_a_stable_json_shape() {
        let line = WatchLine::Change {
            revision: Revision(7),
            change: Change::KeyAdded {
                user: user("alice"),
                fingerprint: Fingerprint::of_key_blob(b"k"),
            },
        };
        let json = serde_json::to_string(&line).expect("json");
        assert!(
            json.starts_with(
                r#"{"type":"change","revision":7,"change":{"kind":"keyAdded","user":"alice","#
            ),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<WatchLine>(&json).expect("parse"),
            line
        );
    }

    #[test]
    fn follower_swaps_in_a_snapshot_only_when_complete() {
        let mut f = Follower::default();
        f.apply(&WatchLine::SnapshotBegin {
            revision: Revision(3),
        })
        .expect("begin");
        f.apply(&WatchLine::Change {
            revision: Revision(3),
            change: Change::Access {
                access: SshAccess::AllWorkspaces,
            },
        })
        .expect("item");
        assert_eq!(
            f.state().access,
            SshAccess::Off,
            "partial snapshot not visible"
        );
        assert!(
            f.apply(&WatchLine::SnapshotEnd {
                revision: Revision(3)
            })
            .expect("end")
        );
        assert_eq!(f.state().access, SshAccess::AllWorkspaces);
        assert_eq!(f.state().revision, Revision(3));
        let err = f
            .apply(&WatchLine::Change {
                revision: Revision(2),
                change: Change::Access {
                    access: SshAccess::Off,
                },
            })
            .unwrap_err();
        assert!(matches!(err, FollowError::Backwards { .. }));
    }
}
