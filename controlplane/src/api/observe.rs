//! Health, readiness, metrics and the API description: unauthenticated
//! endpoints for load balancers, Kubernetes probes, Prometheus and people.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus::Encoder;

use super::App;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Alive: the process answers.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Ready: the state is loaded (the registry exists only then) and the
/// store answers now; a replica whose database is down says so, and is
/// ready again by itself once it answers.
pub async fn readyz(State(app): State<App>) -> impl IntoResponse {
    let revision = app.registry.hub().state().revision;
    match app.registry.ping().await {
        Ok(()) => (StatusCode::OK, format!("ready at revision {revision}\n")),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the database does not answer\n".to_owned(),
            )
        }
    }
}

pub async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder.encode(&app.prometheus.gather(), &mut out).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            Vec::new(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
