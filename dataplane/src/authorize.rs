//! The authorization decision, on a core's copy of the routing state: pure
//! and allocation-free on the success path, so it can be benchmarked and
//! property-tested alone.
//!
//! A login `alice@01ac8894` with key `K` is allowed when `K` is one of
//! alice's keys, session `01ac8894` exists, SSH is on and its workspace is
//! allowed, its SSH toggle is on, and alice is its owner or a member. Each
//! refusal has a reason for logs and metrics; the client sees none of them.

use model::state::{Session, State};
use model::{Fingerprint, Login};

/// Why a login was refused. The label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The SSH user is not `user@sessionid`.
    BadLogin,
    /// The key is not one of the user's registered keys.
    UnknownKey,
    UnknownSession,
    /// `TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES` is unset on the platform.
    SshDisabled,
    WorkspaceNotAllowed,
    /// The session's "SSH Connection" toggle is off.
    ToggleOff,
    /// The user is neither the owner nor a member.
    NotMember,
    /// The signature did not verify.
    BadSignature,
    /// A key type or signature algorithm the proxy does not accept
    /// (`ssh-rsa` with SHA-1, DSA, RSA under 2048 bits...).
    UnsupportedKey,
}

impl Denied {
    pub fn label(self) -> &'static str {
        match self {
            Self::BadLogin => "bad_login",
            Self::UnknownKey => "unknown_key",
            Self::UnknownSession => "unknown_session",
            Self::SshDisabled => "ssh_disabled",
            Self::WorkspaceNotAllowed => "workspace_not_allowed",
            Self::ToggleOff => "toggle_off",
            Self::NotMember => "not_member",
            Self::BadSignature => "bad_signature",
            Self::UnsupportedKey => "unsupported_key",
        }
    }
}

/// Decides one login; on success returns the session to connect to.
pub fn authorize<'s>(
    state: &'s State,
    login: &Login,
    key: &Fingerprint,
) -> Result<&'s Session, Denied> {
    if !state.access.is_on() {
        return Err(Denied::SshDisabled);
    }
    if !state
        .keys
        .get(&login.user)
        .is_some_and(|keys| keys.contains(key))
    {
        return Err(Denied::UnknownKey);
    }
    let session = state
        .sessions
        .get(&login.session)
        .ok_or(Denied::UnknownSession)?;
    if !state.access.allows(session.workspace_id) {
        return Err(Denied::WorkspaceNotAllowed);
    }
    if !session.ssh_enabled {
        return Err(Denied::ToggleOff);
    }
    if !session.admits(&login.user) {
        return Err(Denied::NotMember);
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::SshAccess;
    use model::state::{Change, SessionState};

    fn state() -> State {
        let mut s = State::default();
        s.apply(&Change::Access {
            access: SshAccess::from_env_value(Some("1")).expect("access"),
        });
        for (user, blob) in [("alice", b"a"), ("bob", b"b"), ("eve", b"e")] {
            s.apply(&Change::KeyAdded {
                user: user.parse().expect("user"),
                fingerprint: Fingerprint::of_key_blob(blob),
            });
        }
        for (id, ws, ssh) in [
            ("01ac8894", 1, true),
            ("00000002", 2, true),
            ("00000003", 1, false),
        ] {
            s.apply(&Change::SessionPut {
                session: Session {
                    id: id.parse().expect("id"),
                    workspace_id: ws.into(),
                    owner: "alice".parse().expect("user"),
                    members: ["bob".parse().expect("user")].into_iter().collect(),
                    ssh_enabled: ssh,
                    state: SessionState::Running,
                    endpoint: Some("127.0.0.1:1".into()),
                    host_key_fingerprint: None,
                },
            });
        }
        s
    }

    fn check(s: &State, login: &str, key: &[u8]) -> Result<(), Denied> {
        let login: Login = login.parse().expect("login");
        authorize(s, &login, &Fingerprint::of_key_blob(key)).map(|_| ())
    }

    #[test]
    fn each_rule_refuses_with_its_reason() {
        let s = state();
        assert_eq!(check(&s, "alice@01ac8894", b"a"), Ok(()));
        assert_eq!(check(&s, "bob@01ac8894", b"b"), Ok(()));
        assert_eq!(check(&s, "alice@01ac8894", b"b"), Err(Denied::UnknownKey));
        assert_eq!(check(&s, "nobody@01ac8894", b"a"), Err(Denied::UnknownKey));
        assert_eq!(
            check(&s, "alice@0000ffff", b"a"),
            Err(Denied::UnknownSession)
        );
        assert_eq!(
            check(&s, "alice@00000002", b"a"),
            Err(Denied::WorkspaceNotAllowed)
        );
        assert_eq!(check(&s, "alice@00000003", b"a"), Err(Denied::ToggleOff));
        assert_eq!(check(&s, "eve@01ac8894", b"e"), Err(Denied::NotMember));
        let mut off = s.clone();
        off.apply(&Change::Access {
            access: SshAccess::Off,
        });
        assert_eq!(
            check(&off, "alice@01ac8894", b"a"),
            Err(Denied::SshDisabled)
        );
    }
}
