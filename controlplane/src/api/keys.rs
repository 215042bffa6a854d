//! `/v1/users/{user}/keys`: users' SSH public keys (admin token).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::App;
use super::body::{JsonBody, parse};
use crate::error::ApiError;
use crate::store::KeyRow;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddKey {
    key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    fingerprint: String,
    #[serde(rename = "type")]
    key_type: String,
    comment: String,
    public_key: String,
    added_at: String,
}

impl From<KeyRow> for KeyView {
    fn from(row: KeyRow) -> Self {
        Self {
            fingerprint: row.fingerprint.to_string(),
            key_type: row.key_type,
            comment: row.comment,
            public_key: row.public_key,
            added_at: super::sessions::rfc3339(row.added_at_ms),
        }
    }
}

pub async fn add(
    State(app): State<App>,
    headers: HeaderMap,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<AddKey>,
) -> Result<impl IntoResponse, ApiError> {
    app.admin(&headers)?;
    let user = parse("user", &user)?;
    let row = app.registry.add_key(user, body.key).await?;
    Ok((StatusCode::CREATED, Json(KeyView::from(row))))
}

pub async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    app.admin(&headers)?;
    let user = parse("user", &user)?;
    let keys: Vec<KeyView> = app
        .registry
        .list_keys(&user)
        .await?
        .into_iter()
        .map(KeyView::from)
        .collect();
    Ok(Json(serde_json::json!({ "keys": keys })))
}

pub async fn remove(
    State(app): State<App>,
    headers: HeaderMap,
    Path((user, fingerprint)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    app.admin(&headers)?;
    let user = parse("user", &user)?;
    let fingerprint = parse("fingerprint", &fingerprint)?;
    app.registry.remove_key(user, fingerprint).await?;
    Ok(StatusCode::NO_CONTENT)
}
