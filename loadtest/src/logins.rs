//! Who connects: logins given on the command line or in a file (users
//! created for the run are [`crate::provision`]'s).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use ring::rand::{SecureRandom, SystemRandom};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;

/// One identity to log in as: `user@session` for connect-proxy, a plain
/// user name for other SSH servers.
#[derive(Clone)]
pub struct Login {
    pub name: String,
    pub key: Arc<PrivateKey>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("name", &self.name).finish()
    }
}

/// Logins handed out round-robin to workers.
#[derive(Debug)]
pub struct Logins {
    list: Vec<Login>,
    next: AtomicUsize,
}

impl Logins {
    pub fn new(list: Vec<Login>) -> Result<Self> {
        if list.is_empty() {
            bail!(
                "no logins: pass --login USER@SESSION with --key, --logins FILE, or --provision-users N"
            );
        }
        Ok(Self {
            list,
            next: AtomicUsize::new(0),
        })
    }

    pub fn next(&self) -> &Login {
        &self.list[self.next.fetch_add(1, Ordering::Relaxed) % self.list.len()]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// `--login NAME` (each with `--key`), and `--logins FILE` lines of
/// `NAME [KEY_PATH]` (`#` comments; the key defaults to `--key`).
pub fn from_args(names: &[String], file: Option<&Path>, key: Option<&Path>) -> Result<Vec<Login>> {
    let default_key = key
        .map(|k| crate::client::load_key(k).context("--key"))
        .transpose()?;
    let mut out = Vec::new();
    for name in names {
        let key = default_key
            .clone()
            .with_context(|| format!("--login {name} needs --key PATH (its private key)"))?;
        out.push(Login {
            name: name.clone(),
            key,
        });
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--logins {}", path.display()))?;
        let mut keys: Vec<(String, Arc<PrivateKey>)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let name = parts.next().unwrap_or_default().to_owned();
            let key = match parts.next() {
                Some(key_path) => match keys.iter().find(|(p, _)| p == key_path) {
                    Some((_, k)) => k.clone(),
                    None => {
                        let k = crate::client::load_key(Path::new(key_path))
                            .with_context(|| format!("{}:{}", path.display(), n + 1))?;
                        keys.push((key_path.to_owned(), k.clone()));
                        k
                    }
                },
                None => default_key.clone().with_context(|| {
                    format!(
                        "{}:{}: {name} has no key path and there is no --key",
                        path.display(),
                        n + 1
                    )
                })?,
            };
            if parts.next().is_some() {
                bail!("{}:{}: expected `LOGIN [KEY_PATH]`", path.display(), n + 1);
            }
            out.push(Login { name, key });
        }
    }
    Ok(out)
}

/// A new ed25519 key.
pub fn generate_key() -> Result<PrivateKey> {
    let mut seed = [0u8; 32];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment("connect-loadtest");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logins_file_names_its_mistakes_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("k");
        let key = generate_key().unwrap();
        std::fs::write(
            &key_path,
            key.to_openssh(russh::keys::ssh_key::LineEnding::LF)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let file = dir.path().join("logins");
        std::fs::write(
            &file,
            format!(
                "# comment\n\nalice@01ac8894 {}\nbob@01ac8894\n",
                key_path.display()
            ),
        )
        .unwrap();
        let e = from_args(&[], Some(&file), None).unwrap_err();
        assert!(
            format!("{e:#}").contains(":4: bob@01ac8894 has no key path"),
            "{e:#}"
        );
        let got = from_args(&["carol@01ac8894".into()], Some(&file), Some(&key_path)).unwrap();
        let names: Vec<_> = got.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["carol@01ac8894", "alice@01ac8894", "bob@01ac8894"]);
        let e = from_args(&["dave".into()], None, None).unwrap_err();
        assert!(format!("{e:#}").contains("needs --key"), "{e:#}");
        assert!(Logins::new(Vec::new()).is_err());
    }
}
