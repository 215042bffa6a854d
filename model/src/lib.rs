//! The shared vocabulary of connect, used by every program in the workspace.
//!
//! Nothing here does I/O. The crate holds the identifiers the system talks
//! about and the rules for parsing them from untrusted input:
//!
//! - [`session_id`]: a Studio session id, exactly 8 lowercase hex characters;
//! - [`workspace`]: a platform workspace id;
//! - [`user`]: a platform user name;
//! - [`login`]: the SSH login `alice@01ac8894`, split at the last `@`;
//! - [`fingerprint`]: SSH key fingerprints as `ssh-keygen -lf` prints them;
//! - [`env`](mod@env): typed reading of configuration variables, errors naming them;
//! - [`logging`]: the one-JSON-object-per-line log format all programs share;
//! - [`access`]: the SSH switch and workspace allowlist;
//! - [`state`]: the routing state, its changes and the watch stream's lines;
//! - [`secret`]: tokens that never reach logs;
//! - [`endpoint`]: a Studio's `host:port`.
#![forbid(unsafe_code)]

pub mod access;
pub mod endpoint;
pub mod env;
pub mod fingerprint;
pub mod logging;
pub mod login;
pub mod secret;
pub mod session_id;
pub mod state;
pub mod user;
pub mod workspace;

pub use access::SshAccess;
pub use fingerprint::{Fingerprint, FingerprintError};
pub use login::{Login, LoginError};
pub use secret::Secret;
pub use session_id::{SessionId, SessionIdError};
pub use state::{Change, Revision, Session, SessionState, State, WatchLine};
pub use user::{UserName, UserNameError};
pub use workspace::{WorkspaceId, WorkspaceIdError};
