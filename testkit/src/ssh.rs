//! OpenSSH client command lines isolated from the user's own settings:
//! no `~/.ssh/config`, no agent unless asked, a pinned `known_hosts`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How to reach one SSH server as one user with one key.
#[derive(Debug, Clone)]
pub struct Ssh {
    pub port: u16,
    pub user: String,
    pub identity: PathBuf,
    /// `None`: host key not checked (for servers with a generated key).
    pub known_hosts: Option<PathBuf>,
}

impl Ssh {
    /// Options shared by ssh, scp, sftp (and rsync's `-e`).
    pub fn options(&self) -> Vec<String> {
        let mut o = vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.identity.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-o".into(),
            "ServerAliveInterval=10".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        match &self.known_hosts {
            Some(path) => o.extend([
                "-o".into(),
                format!("UserKnownHostsFile={}", path.display()),
                "-o".into(),
                "StrictHostKeyChecking=yes".into(),
            ]),
            None => o.extend([
                "-o".into(),
                "UserKnownHostsFile=/dev/null".into(),
                "-o".into(),
                "StrictHostKeyChecking=no".into(),
            ]),
        }
        o
    }

    /// `ssh [options] -p PORT user@127.0.0.1`, ready for more arguments.
    pub fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.options())
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user))
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// `ssh` with extra options before the destination (e.g. `-L`, `-A`, `-tt`).
    pub fn ssh_with(&self, pre: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.options())
            .args(pre)
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user));
        c.env_remove("SSH_AUTH_SOCK");
        c
    }

    /// `scp [options] -P PORT` (sources and target appended by the caller).
    pub fn scp(&self) -> Command {
        let mut c = Command::new("scp");
        c.args(self.options())
            .arg("-P")
            .arg(self.port.to_string())
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// `sftp [options] -P PORT -b BATCH user@127.0.0.1`.
    pub fn sftp_batch(&self, batch: &Path) -> Command {
        let mut c = Command::new("sftp");
        c.args(self.options())
            .arg("-P")
            .arg(self.port.to_string())
            .arg("-b")
            .arg(batch)
            .arg(format!("{}@127.0.0.1", self.user))
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// The `-e` argument for rsync.
    pub fn rsync_rsh(&self) -> String {
        let mut parts = vec!["ssh".to_owned()];
        parts.extend(self.options().into_iter().map(|o| format!("'{o}'")));
        parts.push("-p".into());
        parts.push(self.port.to_string());
        parts.join(" ")
    }

    /// Where the remote side is, as `user@127.0.0.1`.
    pub fn destination(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }
}
