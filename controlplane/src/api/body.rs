//! Request parsing with errors that name the field: JSON bodies (size
//! limited, parsed with `serde_path_to_error` so a type error says which
//! field), path segments and query parameters.

use std::str::FromStr;

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body of type `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| ApiError::TooLarge { limit: BODY_LIMIT })?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest {
                field: None,
                message: "request body is empty; expected JSON".into(),
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(JsonBody)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path == "." || path.is_empty() {
                    ApiError::BadRequest {
                        field: None,
                        message: format!("invalid JSON body: {inner}"),
                    }
                } else {
                    ApiError::field(&path, format!("{path}: {inner}"))
                }
            })
    }
}

/// Parses a path segment or query value, naming it on failure.
pub fn parse<T>(name: &str, value: &str) -> Result<T, ApiError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| ApiError::field(name, format!("{name} {value:?}: {e}")))
}
