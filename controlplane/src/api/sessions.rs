//! `/v1/sessions/{id}`: Studio sessions as the platform manages them (admin
//! token), and the `ssh` line users are given.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use model::{SessionId, UserName, WorkspaceId};
use serde::{Deserialize, Serialize};

use super::App;
use super::body::{JsonBody, parse};
use crate::error::ApiError;
use crate::registry::{SessionSpec, SessionView};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutSession {
    workspace_id: WorkspaceId,
    owner: UserName,
    #[serde(default)]
    members: BTreeSet<UserName>,
    ssh_enabled: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutQuery {
    #[serde(default)]
    rotate_token: bool,
}

/// A session as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionJson {
    id: String,
    workspace_id: WorkspaceId,
    owner: String,
    members: Vec<String>,
    ssh_enabled: bool,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_key_fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_activity: Option<String>,
    active_connections: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration_token: Option<String>,
}

impl SessionJson {
    fn new(view: SessionView, token: Option<String>) -> Self {
        let s = view.session;
        Self {
            id: s.id.to_string(),
            workspace_id: s.workspace_id,
            owner: s.owner.to_string(),
            members: s.members.iter().map(ToString::to_string).collect(),
            ssh_enabled: s.ssh_enabled,
            state: s.state.to_string(),
            endpoint: s.endpoint,
            host_key_fingerprint: s.host_key_fingerprint.map(|f| f.to_string()),
            last_activity: view.last_activity_ms.map(rfc3339),
            active_connections: view.active_connections,
            registration_token: token,
        }
    }
}

/// Unix milliseconds as an RFC 3339 UTC timestamp.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn session_id(id: &str) -> Result<SessionId, ApiError> {
    parse("id", id)
}

pub async fn put(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<PutQuery>,
    JsonBody(body): JsonBody<PutSession>,
) -> Result<impl IntoResponse, ApiError> {
    app.admin(&headers)?;
    let id = session_id(&id)?;
    let spec = SessionSpec {
        workspace_id: body.workspace_id,
        owner: body.owner,
        members: body.members,
        ssh_enabled: body.ssh_enabled,
    };
    let outcome = app
        .registry
        .put_session(id, spec, query.rotate_token)
        .await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(SessionJson::new(outcome.view, outcome.token))))
}

pub async fn get(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    app.admin(&headers)?;
    let view = app.registry.get_session(session_id(&id)?).await?;
    Ok(Json(SessionJson::new(view, None)))
}

pub async fn delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    app.admin(&headers)?;
    app.registry.delete_session(session_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct SshQuery {
    user: Option<String>,
}

pub async fn ssh_info(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<SshQuery>,
) -> Result<impl IntoResponse, ApiError> {
    app.admin(&headers)?;
    let id = session_id(&id)?;
    let user = query
        .user
        .ok_or_else(|| ApiError::field("user", "query parameter user is required"))?;
    let user: UserName = parse("user", &user)?;
    let (command, ssh_config) = app.registry.ssh_info(id, &user).await?;
    Ok(Json(
        serde_json::json!({ "command": command, "sshConfig": ssh_config }),
    ))
}
