//! The container account every SSH channel runs as: connect-client's own
//! user. A Studio has one user; whoever the proxy lets in works as it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Who commands run as, and the environment they start with.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub home: PathBuf,
    /// The login shell from the passwd entry, or `/bin/sh` if that is
    /// missing or not executable.
    pub shell: PathBuf,
    /// Environment every child inherits: connect-client's own environment
    /// minus its private `CONNECT_CLIENT_*` settings, plus the login basics.
    pub base_env: Vec<(OsString, OsString)>,
}

impl Account {
    /// Reads the current user's passwd entry and the process environment.
    pub fn current() -> Self {
        let uid = nix::unistd::getuid();
        let entry = nix::unistd::User::from_uid(uid).ok().flatten();
        let name = entry
            .as_ref()
            .map(|u| u.name.clone())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| uid.to_string());
        let home = entry
            .as_ref()
            .map(|u| u.dir.clone())
            .filter(|d| d.is_dir())
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .filter(|d| d.is_dir())
            })
            .unwrap_or_else(|| PathBuf::from("/"));
        let shell = entry
            .as_ref()
            .map(|u| u.shell.clone())
            .filter(|s| is_executable(s))
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));

        let mut base_env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !is_private(k))
            .filter(|(k, _)| !["USER", "LOGNAME", "HOME", "SHELL"].iter().any(|n| k == n))
            .collect();
        base_env.push(("USER".into(), name.clone().into()));
        base_env.push(("LOGNAME".into(), name.clone().into()));
        base_env.push(("HOME".into(), home.clone().into()));
        base_env.push(("SHELL".into(), shell.clone().into()));
        if !base_env.iter().any(|(k, _)| k == "PATH") {
            base_env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
        Self {
            name,
            home,
            shell,
            base_env,
        }
    }
}

/// connect-client's own settings (and the platform's secrets) stay out of
/// user processes.
fn is_private(key: &std::ffi::OsStr) -> bool {
    let k = key.to_string_lossy();
    k.starts_with("CONNECT_CLIENT_") || k.starts_with("TOWER_")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
