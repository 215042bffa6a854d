//! Users and sessions created for a run through the control plane's API,
//! and removed again afterwards: nothing of a load test stays behind in the
//! platform unless `--keep-provisioned`.
//!
//! - users `PREFIX-0001`, ... each get a fresh ed25519 key;
//! - they become members of the existing sessions named (the original
//!   member lists are put back at the end);
//! - new sessions can be created that the Studio of the first named session
//!   serves: registered with its endpoint and host key, and kept alive with
//!   heartbeats for the run. One connect-client then answers for thousands
//!   of session ids, which is how the proxy's routing state is loaded up
//!   without thousands of containers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::logins::{Login, generate_key};

/// What to create.
#[derive(Debug, Clone)]
pub struct Provision {
    /// `http://HOST:PORT` of connect-control (or of `connect-proxy --dev`).
    pub url: String,
    pub admin_token: String,
    /// Users to create: `PREFIX-0001`, ...
    pub users: usize,
    pub prefix: String,
    /// Existing sessions the users become members of.
    pub sessions: Vec<String>,
    /// New sessions to create, served by the first of `sessions`' Studio.
    pub new_sessions: usize,
}

/// What was created, to log in with and to undo.
#[derive(Debug, Default)]
pub struct Provisioned {
    pub logins: Vec<Login>,
    /// Existing sessions whose members were changed, as they were.
    restore: Vec<(String, Value)>,
    /// Sessions created, with their registration tokens (for heartbeats).
    created: Vec<(String, String)>,
    /// Keys added: (user, `SHA256:` fingerprint).
    keys: Vec<(String, String)>,
    pub heartbeat: Duration,
}

/// The control plane's API with the admin token.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    admin: String,
}

impl Api {
    pub fn new(url: &str, admin_token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: url.trim_end_matches('/').to_owned(),
            admin: admin_token.to_owned(),
        }
    }

    /// `method path` with `body`; the JSON answer, or an error naming what
    /// was being done and the control plane's reason. `Ok(None)` for 404.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        doing: &str,
    ) -> Result<Option<Value>> {
        self.call_as(&self.admin, method, path, body, doing).await
    }

    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        doing: &str,
    ) -> Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{doing}: {method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let why = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{doing}: the control plane answered {status}: {why}");
        }
        Ok(Some(serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

/// Creates what `p` asks for. On an error part-way, what was created so
/// far is removed before the error is returned.
pub async fn provision(api: &Api, p: &Provision) -> Result<Provisioned> {
    if p.sessions.is_empty() {
        bail!(
            "--provision-users needs --provision-sessions ID[,ID...]: the sessions the users log in to \
             (and whose Studio serves any --provision-new-sessions)"
        );
    }
    if p.users == 0 {
        bail!("--provision-new-sessions needs --provision-users N: someone must log in to them");
    }
    let mut done = Provisioned {
        heartbeat: Duration::from_secs(15),
        ..Provisioned::default()
    };
    match fill(api, p, &mut done).await {
        Ok(()) => Ok(done),
        Err(e) => {
            cleanup(api, &done).await;
            Err(e)
        }
    }
}

async fn fill(api: &Api, p: &Provision, done: &mut Provisioned) -> Result<()> {
    // The existing sessions, as they are now.
    let mut existing = Vec::new();
    for id in &p.sessions {
        let s = api
            .call(
                Method::GET,
                &format!("/v1/sessions/{id}"),
                None,
                &format!("reading session {id}"),
            )
            .await?
            .with_context(|| format!("--provision-sessions: session {id} does not exist"))?;
        existing.push((id.clone(), s));
    }

    // Users and keys.
    let mut users = Vec::with_capacity(p.users);
    for i in 0..p.users {
        let user = format!("{}-{:04}", p.prefix, i + 1);
        let key = generate_key()?;
        let public = key
            .public_key()
            .to_openssh()
            .context("encoding a public key")?;
        let added = api
            .call(
                Method::POST,
                &format!("/v1/users/{user}/keys"),
                Some(json!({ "key": public })),
                &format!("adding a key for {user}"),
            )
            .await?
            .unwrap_or(Value::Null);
        if let Some(fp) = added["fingerprint"].as_str() {
            done.keys.push((user.clone(), fp.to_owned()));
        }
        users.push((user, Arc::new(key)));
    }

    // New sessions served by the first existing session's Studio.
    let mut new_ids = Vec::new();
    if p.new_sessions > 0 {
        let (template_id, template) = &existing[0];
        let (Some(endpoint), Some(host_key)) = (
            template["endpoint"].as_str(),
            template["hostKeyFingerprint"].as_str(),
        ) else {
            bail!(
                "--provision-new-sessions: session {template_id} has no registered Studio \
                 (state {}); its Studio's endpoint and host key are what new sessions use",
                template["state"]
            );
        };
        let mut next = random_u32()?;
        for n in 0..p.new_sessions {
            // A free id: never overwrite someone's session.
            let id = loop {
                let id = format!("{next:08x}");
                next = next.wrapping_add(1);
                let path = format!("/v1/sessions/{id}");
                if api
                    .call(Method::GET, &path, None, "looking for a free session id")
                    .await?
                    .is_none()
                {
                    break id;
                }
            };
            // Users log in to new session `i % new_sessions`: the first of
            // them owns it, the others are members (with fewer users than
            // sessions, owners repeat over the rest).
            let mut assigned = users
                .iter()
                .enumerate()
                .filter(|(i, _)| i % p.new_sessions == n)
                .map(|(_, (u, _))| u.clone());
            let owner = assigned
                .next()
                .unwrap_or_else(|| users[n % users.len()].0.clone());
            let members: Vec<String> = assigned.collect();
            let created = api
                .call(
                    Method::PUT,
                    &format!("/v1/sessions/{id}?rotateToken=true"),
                    Some(json!({
                        "workspaceId": template["workspaceId"],
                        "owner": owner,
                        "members": members,
                        "sshEnabled": true,
                    })),
                    &format!("creating session {id}"),
                )
                .await?
                .unwrap_or(Value::Null);
            let token = created["registrationToken"]
                .as_str()
                .with_context(|| {
                    format!("creating session {id}: no registration token in {created}")
                })?
                .to_owned();
            done.created.push((id.clone(), token.clone()));
            let registered = api
                .call_as(
                    &token,
                    Method::POST,
                    &format!("/v1/sessions/{id}/register"),
                    Some(json!({ "endpoint": endpoint, "hostKeyFingerprint": host_key })),
                    &format!("registering session {id}"),
                )
                .await?
                .unwrap_or(Value::Null);
            if let Some(every) = registered["heartbeatSeconds"].as_u64() {
                done.heartbeat = Duration::from_secs(every.max(1));
            }
            new_ids.push(id);
        }
    }

    // Users to sessions: each new session's owner logs in to it; the rest
    // are spread over the existing sessions as members.
    let mut members: Vec<Vec<String>> = vec![Vec::new(); existing.len()];
    for (i, (user, key)) in users.iter().enumerate() {
        let session = if new_ids.is_empty() {
            let s = i % existing.len();
            members[s].push(user.clone());
            existing[s].0.clone()
        } else {
            new_ids[i % new_ids.len()].clone()
        };
        done.logins.push(Login {
            name: format!("{user}@{session}"),
            key: key.clone(),
        });
    }
    // New sessions beyond the number of users are owned but unused by
    // this run's logins; with more users than sessions, owners repeat.
    for ((id, current), new) in existing.iter().zip(members) {
        if new.is_empty() {
            continue;
        }
        let mut all: Vec<Value> = current["members"].as_array().cloned().unwrap_or_default();
        all.extend(new.into_iter().map(Value::String));
        done.restore.push((id.clone(), current.clone()));
        api.call(
            Method::PUT,
            &format!("/v1/sessions/{id}"),
            Some(spec(current, all)),
            &format!("adding members to session {id}"),
        )
        .await?;
    }
    Ok(())
}

/// A session's writable fields with `members`.
fn spec(session: &Value, members: Vec<Value>) -> Value {
    json!({
        "workspaceId": session["workspaceId"],
        "owner": session["owner"],
        "members": members,
        "sshEnabled": session["sshEnabled"],
    })
}

fn random_u32() -> Result<u32> {
    let mut b = [0u8; 4];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(u32::from_be_bytes(b))
}

/// Heartbeats for the created sessions until dropped (the control plane
/// marks a session `stopped` when they stop).
pub fn keep_alive(api: &Api, done: &Provisioned) -> Option<tokio::task::JoinHandle<()>> {
    if done.created.is_empty() {
        return None;
    }
    let (api, created, every) = (api.clone(), done.created.clone(), done.heartbeat);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every / 2);
        loop {
            tick.tick().await;
            for (id, token) in &created {
                let path = format!("/v1/sessions/{id}/heartbeat");
                if let Err(e) = api
                    .call_as(token, Method::POST, &path, None, "heartbeat")
                    .await
                {
                    eprintln!("connect-loadtest: session {id}: {e:#}");
                }
            }
        }
    }))
}

/// Puts back what [`provision`] changed: members restored, created
/// sessions and added keys deleted. Failures are reported, not fatal.
pub async fn cleanup(api: &Api, done: &Provisioned) {
    let mut failed = 0;
    for (id, original) in &done.restore {
        let members = original["members"].as_array().cloned().unwrap_or_default();
        let path = format!("/v1/sessions/{id}");
        if let Err(e) = api
            .call(
                Method::PUT,
                &path,
                Some(spec(original, members)),
                "restoring members",
            )
            .await
        {
            eprintln!("connect-loadtest: session {id}: {e:#}");
            failed += 1;
        }
    }
    for (id, _) in &done.created {
        let path = format!("/v1/sessions/{id}");
        if let Err(e) = api
            .call(Method::DELETE, &path, None, "deleting a session")
            .await
        {
            eprintln!("connect-loadtest: session {id}: {e:#}");
            failed += 1;
        }
    }
    for (user, fingerprint) in &done.keys {
        // Base64 holds '/' and '+': percent-encode them in the path.
        let fp = fingerprint.replace('+', "%2B").replace('/', "%2F");
        let path = format!("/v1/users/{user}/keys/{fp}");
        if let Err(e) = api
            .call(Method::DELETE, &path, None, "deleting a key")
            .await
        {
            eprintln!("connect-loadtest: {user}: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("connect-loadtest: {failed} provisioned items could not be removed (see above)");
    }
}

impl Provisioned {
    /// What was created, for the run's report.
    pub fn summary(&self) -> Value {
        json!({
            "users": self.keys.len(),
            "sessions_created": self.created.len(),
            "sessions": self.created.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            "sessions_joined": self.restore.len(),
        })
    }
}
