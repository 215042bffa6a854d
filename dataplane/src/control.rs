//! The control thread: an ordinary tokio runtime beside the cores. It
//! follows the control plane's watch stream and hands each new state
//! version to every core, reports activity back, and serves the management
//! endpoints. With no `CONNECT_CONTROL_URL` it also runs the control plane
//! itself (the single-node default) and follows it over loopback, so both
//! setups share one code path.
//!
//! When the control plane is unreachable the cores keep routing with the
//! last state; the follower reconnects from its last revision.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use model::Secret;
use model::state::{Follower, State, WatchLine};
use tracing::{info, warn};

use crate::activity::Table;
use crate::metrics::Metrics;
use crate::routes::Publisher;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Where to follow the routing state from.
#[derive(Clone, Debug)]
pub struct Source {
    pub url: String,
    pub token: Secret,
}

/// The latest state and everyone who must get it.
#[derive(Default)]
pub struct Fanout {
    inner: Mutex<FanoutInner>,
    synced: Condvar,
}

#[derive(Default)]
struct FanoutInner {
    latest: Option<Arc<State>>,
    publishers: Vec<Publisher>,
    activity: Vec<Arc<Table>>,
    last_line: Option<Instant>,
}

impl Fanout {
    fn publish(&self, state: Arc<State>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for p in &inner.publishers {
            p.publish(state.clone());
        }
        inner.latest = Some(state);
        self.synced.notify_all();
    }

    fn heard(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.last_line = Some(Instant::now());
        }
    }

    /// Adds a core: it gets the latest state now and every later one.
    pub fn add_core(&self, publisher: Publisher, activity: Arc<Table>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(latest) = &inner.latest {
            publisher.publish(latest.clone());
        }
        inner.publishers.push(publisher);
        inner.activity.push(activity);
    }

    /// Blocks until the first complete state arrives; logs while waiting.
    pub fn wait_synced(&self) -> Arc<State> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(latest) = &inner.latest {
                return latest.clone();
            }
            let (guard, timeout) = self
                .synced
                .wait_timeout(inner, Duration::from_secs(10))
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            inner = guard;
            if timeout.timed_out() && inner.latest.is_none() {
                warn!("still waiting for the first state from the control plane");
            }
        }
    }

    pub fn latest(&self) -> Option<Arc<State>> {
        self.inner.lock().ok().and_then(|i| i.latest.clone())
    }

    fn state_age(&self) -> Option<Duration> {
        self.inner
            .lock()
            .ok()
            .and_then(|i| i.last_line.map(|t| t.elapsed()))
    }

    fn activity_tables(&self) -> Vec<Arc<Table>> {
        self.inner
            .lock()
            .map(|i| i.activity.clone())
            .unwrap_or_default()
    }
}

/// Follows the watch stream forever.
pub async fn follow(source: Source, fanout: Arc<Fanout>, metrics: Metrics) {
    let http = reqwest::Client::new();
    let mut follower = Follower::default();
    let mut backoff = Duration::from_millis(200);
    loop {
        let from = follower.state().revision;
        let url = if follower.is_synced() && fanout.latest().is_some() {
            format!("{}/v1/watch?from={from}", source.url)
        } else {
            format!("{}/v1/watch", source.url)
        };
        match stream_once(&http, &url, &source.token, &mut follower, &fanout, &metrics).await {
            Ok(()) => warn!("watch stream ended; reconnecting"),
            Err(e) => {
                warn!(error = %e, revision = %follower.state().revision, "watch stream failed; serving from the last state")
            }
        }
        if follower.state().revision > from {
            backoff = Duration::from_millis(200);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn stream_once(
    http: &reqwest::Client,
    url: &str,
    token: &Secret,
    follower: &mut Follower,
    fanout: &Fanout,
    metrics: &Metrics,
) -> Result<(), String> {
    let resp = http
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("control plane answered {}", resp.status()));
    }
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        let mut changed = false;
        let mut consumed = 0;
        while let Some(pos) = buf[consumed..].iter().position(|b| *b == b'\n') {
            let line = &buf[consumed..consumed + pos];
            consumed += pos + 1;
            let line: WatchLine =
                serde_json::from_slice(line).map_err(|e| format!("bad watch line: {e}"))?;
            changed |= follower.apply(&line).map_err(|e| e.to_string())?;
        }
        buf.drain(..consumed);
        fanout.heard();
        // Publish once per chunk, and only complete states.
        if changed && follower.is_synced() {
            let state = Arc::new(follower.state().clone());
            metrics.state_revision.set(state.revision.0 as i64);
            fanout.publish(state);
        }
    }
    Ok(())
}

/// Reports every core's sessions to the control plane, forever.
pub async fn report_activity(source: Source, name: String, every: Duration, fanout: Arc<Fanout>) {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut reports = HashMap::new();
        for table in fanout.activity_tables() {
            table.collect(&mut reports);
        }
        if reports.is_empty() {
            continue;
        }
        let sessions: Vec<serde_json::Value> = reports
            .values()
            .map(|r| {
                let at = std::time::UNIX_EPOCH + Duration::from_secs(r.last_activity.max(0) as u64);
                serde_json::json!({
                    "id": r.session.to_string(),
                    "lastActivity": humantime::format_rfc3339_seconds(at).to_string(),
                    "activeConnections": r.connections,
                })
            })
            .collect();
        let body = serde_json::json!({ "proxy": name, "sessions": sessions });
        let sent = http
            .post(format!("{}/v1/activity", source.url))
            .bearer_auth(source.token.expose())
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => warn!(status = %r.status(), "activity report refused"),
            Err(e) => warn!(error = %e, "activity report failed"),
        }
    }
}

/// Keeps `connect_proxy_state_age_seconds` current.
pub async fn track_state_age(fanout: Arc<Fanout>, metrics: Metrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Some(age) = fanout.state_age() {
            metrics.state_age.set(age.as_secs() as i64);
        }
    }
}

/// `/metrics`, `/healthz`, `/readyz` for Prometheus and probes.
pub async fn serve_management(
    listener: tokio::net::TcpListener,
    registry: prometheus::Registry,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let metrics = move || {
        let registry = registry.clone();
        async move {
            let mut out = Vec::new();
            let _ = prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &registry.gather(),
                &mut out,
            );
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                out,
            )
        }
    };
    let readyz = move || {
        let ready = ready.clone();
        async move {
            if ready.load(std::sync::atomic::Ordering::Relaxed) {
                (StatusCode::OK, "ready\n")
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for the control plane\n",
                )
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "management server stopped");
    }
}

/// Logged once the cores serve.
pub fn log_listening(
    addr: std::net::SocketAddr,
    management: std::net::SocketAddr,
    cores: usize,
    backend: &str,
    fingerprint: &model::Fingerprint,
) {
    info!(
        addr = %addr,
        management = %management,
        cores,
        io_backend = backend,
        key_fingerprint = %fingerprint,
        "connect-proxy listening"
    );
}
