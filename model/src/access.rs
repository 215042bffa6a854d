//! Which workspaces may use SSH: the platform's
//! `TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES`, with the seed's exact
//! semantics:
//!
//! - unset: the SSH feature is off;
//! - empty (or only spaces): every workspace;
//! - `"12345,67890"`: only those (spaces around items tolerated).
//!
//! A non-numeric item is an error naming it, never silently dropped: a typo
//! must not lock a workspace out (or in) without anyone noticing.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::workspace::{WorkspaceId, WorkspaceIdError};

/// The SSH feature switch and workspace allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum SshAccess {
    /// The feature is off: every login is refused.
    Off,
    /// Every workspace may use SSH.
    AllWorkspaces,
    /// Only these workspaces may use SSH.
    Only { workspaces: BTreeSet<WorkspaceId> },
}

/// An item of the allowlist that is not a workspace id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {position} ({item:?}) is not a workspace id: {reason}")]
pub struct AccessError {
    /// 1-based position of the item in the comma-separated list.
    pub position: usize,
    pub item: String,
    pub reason: WorkspaceIdError,
}

impl SshAccess {
    /// Parses the variable's value; `None` means unset.
    pub fn from_env_value(value: Option<&str>) -> Result<Self, AccessError> {
        let Some(value) = value else {
            return Ok(Self::Off);
        };
        if value.trim().is_empty() {
            return Ok(Self::AllWorkspaces);
        }
        let mut workspaces = BTreeSet::new();
        for (i, item) in value.split(',').enumerate() {
            let item = item.trim();
            // "1,2," is a common slip; an empty item allows nothing and
            // hides nothing, so it is tolerated.
            if item.is_empty() {
                continue;
            }
            let id = item.parse::<WorkspaceId>().map_err(|reason| AccessError {
                position: i + 1,
                item: item.to_owned(),
                reason,
            })?;
            workspaces.insert(id);
        }
        Ok(Self::Only { workspaces })
    }

    /// Whether sessions of `workspace` may be reached over SSH.
    pub fn allows(&self, workspace: WorkspaceId) -> bool {
        match self {
            Self::Off => false,
            Self::AllWorkspaces => true,
            Self::Only { workspaces } => workspaces.contains(&workspace),
        }
    }

    pub fn is_on(&self) -> bool {
        !matches!(self, Self::Off)
    }
}

impl fmt::Display for SshAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::AllWorkspaces => f.write_str("all workspaces"),
            Self::Only { workspaces } => {
                f.write_str("workspaces ")?;
                for (i, w) in workspaces.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{w}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(ids: &[u64]) -> SshAccess {
        SshAccess::Only {
            workspaces: ids.iter().map(|&i| WorkspaceId::from(i)).collect(),
        }
    }

    #[test]
    fn unset_is_off_empty_is_all_list_is_only_those() {
        assert_eq!(SshAccess::from_env_value(None), Ok(SshAccess::Off));
        assert_eq!(
            SshAccess::from_env_value(Some("")),
            Ok(SshAccess::AllWorkspaces)
        );
        assert_eq!(
            SshAccess::from_env_value(Some("  ")),
            Ok(SshAccess::AllWorkspaces)
        );
        assert_eq!(
            SshAccess::from_env_value(Some("12345,67890")),
            Ok(ws(&[12345, 67890]))
        );
        assert_eq!(
            SshAccess::from_env_value(Some(" 12345 , 67890 ,")),
            Ok(ws(&[12345, 67890]))
        );
    }

    #[test]
    fn non_numeric_item_is_named() {
        let err = SshAccess::from_env_value(Some("12345,abc")).unwrap_err();
        assert_eq!(err.position, 2);
        assert_eq!(err.item, "abc");
        assert!(err.to_string().contains("\"abc\""), "{err}");
    }

    #[test]
    fn allows_follows_the_mode() {
        let w = WorkspaceId::from(7);
        assert!(!SshAccess::Off.allows(w));
        assert!(SshAccess::AllWorkspaces.allows(w));
        assert!(ws(&[7]).allows(w));
        assert!(!ws(&[8]).allows(w));
    }

    #[test]
    fn serializes_with_a_mode_tag() {
        let json = serde_json::to_string(&ws(&[1, 2])).expect("json");
        assert_eq!(json, r#"{"mode":"only","workspaces":[1,2]}"#);
        let back: SshAccess = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, ws(&[1, 2]));
    }
}
