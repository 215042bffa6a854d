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
//! - [`logging`]: the one-JSON-object-per-line log format all programs share.
#![forbid(unsafe_code)]

pub mod env;
pub mod fingerprint;
pub mod logging;
pub mod login;
pub mod session_id;
pub mod user;
pub mod workspace;

pub use fingerprint::{Fingerprint, FingerprintError};
pub use login::{Login, LoginError};
pub use session_id::{SessionId, SessionIdError};
pub use user::{UserName, UserNameError};
pub use workspace::{WorkspaceId, WorkspaceIdError};
