//! Registration with connect-control: tell it where this Studio listens and
//! which host key it has, adopt the proxy key fingerprint it answers with,
//! then heartbeat.
//!
//! The SSH server never waits on this: if the control plane goes away,
//! existing connections and the adopted key stay as they are, heartbeats
//! are retried, and when the control plane says the session is unknown or
//! no longer running (404/409) the client registers again.

use std::sync::Arc;
use std::time::Duration;

use model::Fingerprint;
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::{info, warn};

use crate::config::Registration;
use crate::server::Shared;

/// Longest wait between attempts while the control plane is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    proxy_key_fingerprint: Fingerprint,
    heartbeat_seconds: u64,
}

/// Why one round of registration or heartbeat ended.
enum Outcome {
    /// Register again now (the control plane forgot us or stopped us).
    Reregister(String),
    /// The control plane is unreachable or failing; retry later.
    Unreachable(String),
}

/// Runs forever: register, heartbeat, re-register as needed.
pub async fn run(
    registration: Registration,
    advertise: String,
    host_key: Fingerprint,
    shared: Arc<Shared>,
) {
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot build the HTTP client; not registering");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let outcome = match register(&client, &registration, &advertise, host_key).await {
            Ok(answer) => {
                backoff = Duration::from_secs(1);
                adopt(&shared, answer.proxy_key_fingerprint);
                info!(
                    session = %registration.session,
                    endpoint = %advertise,
                    proxy_fingerprint = %answer.proxy_key_fingerprint,
                    "registered with the control plane"
                );
                heartbeat(
                    &client,
                    &registration,
                    Duration::from_secs(answer.heartbeat_seconds.clamp(1, 300)),
                )
                .await
            }
            Err(outcome) => outcome,
        };
        match outcome {
            Outcome::Reregister(why) => info!(reason = %why, "registering again"),
            Outcome::Unreachable(why) => {
                warn!(error = %why, retry_in = ?backoff, "control plane unreachable; still serving");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn adopt(shared: &Shared, fingerprint: Fingerprint) {
    match shared.accepted() {
        Some(current) if current == fingerprint => {}
        Some(current) => {
            warn!(
                configured = %current,
                registered = %fingerprint,
                "the control plane names a different proxy key than configured; accepting the control plane's"
            );
            shared.set_accepted(fingerprint);
        }
        None => shared.set_accepted(fingerprint),
    }
}

async fn register(
    client: &reqwest::Client,
    r: &Registration,
    advertise: &str,
    host_key: Fingerprint,
) -> Result<Registered, Outcome> {
    let url = format!("{}/v1/sessions/{}/register", r.control_url, r.session);
    let body =
        serde_json::json!({ "endpoint": advertise, "hostKeyFingerprint": host_key.to_string() });
    let response = client
        .post(&url)
        .bearer_auth(r.token.expose())
        .json(&body)
        .send()
        .await
        .map_err(|e| Outcome::Unreachable(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        // Refusals (bad token, unknown session) are retried slowly too: the
        // platform may create the session after the container starts.
        return Err(Outcome::Unreachable(format!(
            "registration refused ({status}): {}",
            text.trim()
        )));
    }
    response
        .json::<Registered>()
        .await
        .map_err(|e| Outcome::Unreachable(format!("bad registration answer: {e}")))
}

async fn heartbeat(client: &reqwest::Client, r: &Registration, every: Duration) -> Outcome {
    let url = format!("{}/v1/sessions/{}/heartbeat", r.control_url, r.session);
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(every).await;
        match client.post(&url).bearer_auth(r.token.expose()).send().await {
            Ok(resp) if resp.status().is_success() => {
                if failures > 0 {
                    info!("control plane reachable again");
                }
                failures = 0;
            }
            Ok(resp) if matches!(resp.status(), StatusCode::NOT_FOUND | StatusCode::CONFLICT) => {
                return Outcome::Reregister(format!("heartbeat answered {}", resp.status()));
            }
            Ok(resp) => {
                failures += 1;
                warn!(status = %resp.status(), "heartbeat refused");
                if resp.status() == StatusCode::UNAUTHORIZED {
                    return Outcome::Unreachable("heartbeat unauthorized: token rotated?".into());
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(error = %e, "heartbeat failed; still serving, retrying");
                }
            }
        }
    }
}
