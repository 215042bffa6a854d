//! Who connects: logins given on the command line or in a file, or users
//! created for the run through the control plane's API (a fresh ed25519
//! key each, added as members of existing sessions).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use ring::rand::{SecureRandom, SystemRandom};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use serde_json::{Value, json};

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
    let default_key = key.map(crate::client::load_key).transpose()?;
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

/// What to create through the control plane's API.
#[derive(Debug, Clone)]
pub struct Provision {
    /// `http://HOST:PORT` of connect-control (or of `connect-proxy --dev`).
    pub url: String,
    pub admin_token: String,
    /// Users to create: `PREFIX-0001`, ...
    pub users: usize,
    pub prefix: String,
    /// Existing sessions the users become members of (round-robin).
    pub sessions: Vec<String>,
}

/// Creates the users with one key each, adds them to the sessions, and
/// returns their logins (`PREFIX-0001@SESSION`, ...). Idempotent: running
/// it again adds another key to each user and leaves membership as is.
pub async fn provision(p: &Provision) -> Result<Vec<Login>> {
    if p.sessions.is_empty() {
        bail!(
            "--provision-users needs --provision-sessions ID[,ID...]: the sessions the users will log in to"
        );
    }
    let http = reqwest::Client::new();
    let base = p.url.trim_end_matches('/');
    let mut logins = Vec::with_capacity(p.users);
    let mut members: Vec<Vec<String>> = vec![Vec::new(); p.sessions.len()];
    for i in 0..p.users {
        let user = format!("{}-{:04}", p.prefix, i + 1);
        let key = generate_key()?;
        let public = key
            .public_key()
            .to_openssh()
            .context("encoding a public key")?;
        let resp = http
            .post(format!("{base}/v1/users/{user}/keys"))
            .bearer_auth(&p.admin_token)
            .json(&json!({ "key": public }))
            .send()
            .await
            .with_context(|| format!("POST {base}/v1/users/{user}/keys"))?;
        api_ok(resp, &format!("adding a key for {user}")).await?;
        let s = i % p.sessions.len();
        members[s].push(user.clone());
        logins.push(Login {
            name: format!("{user}@{}", p.sessions[s]),
            key: Arc::new(key),
        });
    }
    for (session, new) in p.sessions.iter().zip(members) {
        if new.is_empty() {
            continue;
        }
        let url = format!("{base}/v1/sessions/{session}");
        let resp = http
            .get(&url)
            .bearer_auth(&p.admin_token)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let current = api_ok(resp, &format!("reading session {session}")).await?;
        let mut all: Vec<Value> = current["members"].as_array().cloned().unwrap_or_default();
        for user in new {
            if !all.iter().any(|m| m.as_str() == Some(&user)) {
                all.push(Value::String(user));
            }
        }
        let body = json!({
            "workspaceId": current["workspaceId"],
            "owner": current["owner"],
            "members": all,
            "sshEnabled": current["sshEnabled"],
        });
        let resp = http
            .put(&url)
            .bearer_auth(&p.admin_token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        api_ok(resp, &format!("adding members to session {session}")).await?;
    }
    Ok(logins)
}

async fn api_ok(resp: reqwest::Response, doing: &str) -> Result<Value> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let why = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{doing}: the control plane answered {status}: {why}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
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
