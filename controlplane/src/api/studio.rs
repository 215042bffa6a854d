//! `/v1/sessions/{id}/register` and `/heartbeat`: what connect-client
//! calls, with the session's registration token.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use model::Fingerprint;
use serde::Deserialize;

use super::App;
use super::body::{JsonBody, parse};
use crate::error::ApiError;
use crate::token;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Register {
    endpoint: String,
    host_key_fingerprint: Fingerprint,
}

fn registration_token(headers: &HeaderMap) -> Result<[u8; 32], ApiError> {
    token::bearer(headers)
        .map(token::hash)
        .ok_or(ApiError::Unauthorized)
}

pub async fn register(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Register>,
) -> Result<impl IntoResponse, ApiError> {
    let token = registration_token(&headers)?;
    let id = parse("id", &id)?;
    let endpoint = model::endpoint::parse(&body.endpoint)
        .map_err(|e| ApiError::field("endpoint", e.to_string()))?;
    let proxy: Fingerprint = app
        .registry
        .register(id, token, endpoint, body.host_key_fingerprint)
        .await?;
    let heartbeat_seconds = app.registry.config().heartbeat_interval.as_secs();
    Ok(Json(serde_json::json!({
        "proxyKeyFingerprint": proxy.to_string(),
        "heartbeatSeconds": heartbeat_seconds,
    })))
}

pub async fn heartbeat(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let token = registration_token(&headers)?;
    app.registry.heartbeat(parse("id", &id)?, token).await?;
    Ok(StatusCode::NO_CONTENT)
}
