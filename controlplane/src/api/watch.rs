//! What proxies call (proxy token): `GET /v1/watch?from=REV`, the
//! newline-delimited JSON stream of the routing state, and
//! `POST /v1/activity`, their batched activity reports.
//!
//! Each watcher gets its own task writing into a small bounded channel, so
//! a slow proxy slows only its own stream; lines are packed into chunks of
//! about 64 KiB so a million-key snapshot is not a million tiny writes.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use model::SessionId;
use model::state::{Revision, WatchLine};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::App;
use super::body::{JsonBody, parse};
use crate::error::ApiError;
use crate::hub::Catchup;
use crate::registry::ActivityReport;

/// A heartbeat line at least this often.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Chunk size of the stream body.
const CHUNK: usize = 64 * 1024;

#[derive(Deserialize)]
pub struct WatchQuery {
    from: Option<String>,
}

pub async fn watch(
    State(app): State<App>,
    headers: HeaderMap,
    Query(query): Query<WatchQuery>,
) -> Result<Response, ApiError> {
    app.proxy(&headers)?;
    let from = match query.from.as_deref() {
        None | Some("") => None,
        Some(v) => Some(Revision(parse::<u64>("from", v)?)),
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(stream_to(app, from, tx));
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|chunk| chunk.map(Ok::<_, Infallible>))
    }));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Packs lines into chunks; `flush` sends what is pending.
struct Writer {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
}

impl Writer {
    async fn line(&mut self, line: &WatchLine) -> Result<(), ()> {
        let mut w = (&mut self.buf).writer();
        serde_json::to_writer(&mut w, line).map_err(|_| ())?;
        self.buf.put_u8(b'\n');
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx.send(chunk).await.map_err(|_| ())
    }
}

/// Streams to one watcher until it goes away.
async fn stream_to(app: App, from: Option<Revision>, tx: mpsc::Sender<Bytes>) {
    let metrics = app.registry.metrics().clone();
    metrics.watchers.inc();
    let _ = follow(
        &app,
        from,
        Writer {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        },
    )
    .await;
    metrics.watchers.dec();
}

async fn follow(app: &App, from: Option<Revision>, mut w: Writer) -> Result<(), ()> {
    let hub = app.registry.hub();
    let mut changed = hub.subscribe();
    let mut at = from;
    loop {
        match hub.since(at) {
            Catchup::Snapshot(state) => {
                let revision = state.revision;
                w.line(&WatchLine::SnapshotBegin { revision }).await?;
                for change in state.snapshot_changes() {
                    w.line(&WatchLine::Change { revision, change }).await?;
                }
                w.line(&WatchLine::SnapshotEnd { revision }).await?;
                at = Some(revision);
            }
            Catchup::Deltas(deltas) => {
                for (revision, change) in deltas {
                    w.line(&WatchLine::Change {
                        revision,
                        change: (*change).clone(),
                    })
                    .await?;
                    at = Some(revision);
                }
            }
        }
        w.flush().await?;
        tokio::select! {
            r = changed.changed() => r.map_err(|_| ())?,
            () = tokio::time::sleep(HEARTBEAT) => {
                w.line(&WatchLine::Heartbeat { revision: at.unwrap_or_default() }).await?;
                w.flush().await?;
            }
            () = w.tx.closed() => return Err(()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Activity {
    /// The reporting proxy's name (counts are kept per proxy).
    proxy: String,
    sessions: Vec<SessionActivity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionActivity {
    id: SessionId,
    /// RFC 3339 timestamp of the last byte moved.
    last_activity: String,
    active_connections: u64,
}

/// Most sessions in one activity batch.
const MAX_BATCH: usize = 10_000;

pub async fn activity(
    State(app): State<App>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Activity>,
) -> Result<impl IntoResponse, ApiError> {
    app.proxy(&headers)?;
    if body.proxy.is_empty() || body.proxy.len() > 256 {
        return Err(ApiError::field(
            "proxy",
            "proxy must be 1 to 256 characters",
        ));
    }
    if body.sessions.len() > MAX_BATCH {
        return Err(ApiError::field(
            "sessions",
            format!("at most {MAX_BATCH} sessions per batch"),
        ));
    }
    let mut reports = Vec::with_capacity(body.sessions.len());
    for (i, s) in body.sessions.into_iter().enumerate() {
        let at = humantime::parse_rfc3339(&s.last_activity).map_err(|e| {
            ApiError::field(
                &format!("sessions[{i}].lastActivity"),
                format!("sessions[{i}].lastActivity: {e}"),
            )
        })?;
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        reports.push(ActivityReport {
            session: s.id,
            last_activity_ms: ms,
            active_connections: s.active_connections,
        });
    }
    app.registry.record_activity(body.proxy, reports).await?;
    Ok(StatusCode::NO_CONTENT)
}
