//! The HTTP API: routes, authentication, request parsing and metrics.
//!
//! JSON in camelCase; `Authorization: Bearer` with the admin token (platform
//! endpoints), the proxy token (watch, activity) or a session's
//! registration token (register, heartbeat). Every error is JSON naming the
//! problem (see [`ApiError`]). The OpenAPI document is served at
//! `GET /v1/openapi.json`.

mod body;
mod keys;
mod observe;
mod sessions;
mod studio;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

pub use body::BODY_LIMIT;

use crate::error::ApiError;
use crate::registry::Registry;
use crate::token;

/// Everything a handler needs.
#[derive(Clone)]
pub struct App {
    pub registry: Arc<Registry>,
    pub prometheus: prometheus::Registry,
    admin_token: [u8; 32],
    proxy_token: [u8; 32],
}

impl App {
    pub fn new(registry: Arc<Registry>, prometheus: prometheus::Registry) -> Self {
        let config = registry.config();
        let admin_token = token::hash(config.admin_token.expose());
        let proxy_token = token::hash(config.proxy_token.expose());
        Self {
            registry,
            prometheus,
            admin_token,
            proxy_token,
        }
    }

    fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        token::require(headers, &self.admin_token)
    }

    fn proxy(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        token::require(headers, &self.proxy_token)
    }
}

/// Every route: (method, path) as in the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("post", "/v1/users/{user}/keys"),
    ("get", "/v1/users/{user}/keys"),
    ("delete", "/v1/users/{user}/keys/{fingerprint}"),
    ("put", "/v1/sessions/{id}"),
    ("get", "/v1/sessions/{id}"),
    ("delete", "/v1/sessions/{id}"),
    ("post", "/v1/sessions/{id}/register"),
    ("post", "/v1/sessions/{id}/heartbeat"),
    ("get", "/v1/sessions/{id}/ssh"),
    ("post", "/v1/activity"),
    ("get", "/v1/watch"),
];

pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .route("/metrics", get(observe::metrics))
        .route("/v1/openapi.json", get(observe::openapi))
        .route("/v1/users/{user}/keys", post(keys::add).get(keys::list))
        .route(
            "/v1/users/{user}/keys/{fingerprint}",
            axum::routing::delete(keys::remove),
        )
        .route(
            "/v1/sessions/{id}",
            axum::routing::put(sessions::put)
                .get(sessions::get)
                .delete(sessions::delete),
        )
        .route("/v1/sessions/{id}/register", post(studio::register))
        .route("/v1/sessions/{id}/heartbeat", post(studio::heartbeat))
        .route("/v1/sessions/{id}/ssh", get(sessions::ssh_info))
        .route("/v1/activity", post(watch::activity))
        .route("/v1/watch", get(watch::watch))
        .fallback(|| async {
            ApiError::NotFound("no such endpoint; see GET /v1/openapi.json".into())
        })
        .layer(middleware::from_fn_with_state(app.clone(), record))
        .with_state(app)
}

/// Counts and times every request by its route template.
async fn record(
    State(app): State<App>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_ascii_lowercase();
    let start = Instant::now();
    let response = next.run(request).await;
    let metrics = app.registry.metrics();
    metrics
        .request_duration
        .with_label_values(&[&route])
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    response
}
