//! connect-control: the control plane. It holds who may SSH where (the SSH
//! switch and workspace allowlist, users' keys, Studio sessions and where
//! they run) and feeds every proxy over a watch stream.
//!
//! It is a binary (`connect-control`) and a library: [`open`] loads a
//! [`store::Store`] into a registry and [`serve`] answers HTTP on a
//! given listener, so `connect-proxy` embeds it as the single-node default.
//!
//! Layout:
//! - [`config`]: `TOWER_*` and `CONNECT_CONTROL_*` variables;
//! - [`store`]: durable storage (trait) and [`store::sqlite`];
//! - [`registry`]: the live state and its one write path;
//! - [`hub`]: fan-out of state versions and changes to watchers;
//! - [`api`]: HTTP routes; [`keys`]: public key validation;
//!   [`token`]: bearer tokens; [`metrics`]; [`error`].
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod error;
pub mod hub;
pub mod keys;
pub mod metrics;
pub mod registry;
pub mod store;
pub mod token;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use api::App;
pub use config::Config;
pub use error::StartError;

use crate::store::Store;

/// Loads `store` and prepares the API, registering metrics on `prometheus`.
pub async fn open(
    config: Config,
    store: Arc<dyn Store>,
    prometheus: prometheus::Registry,
) -> Result<App, StartError> {
    let metrics = metrics::Metrics::new(&prometheus)
        .map_err(|e| StartError::Store(store::StoreError::Backend(format!("metrics: {e}"))))?;
    let registry = registry::Registry::open(store, Arc::new(config), metrics).await?;
    Ok(App::new(registry, prometheus))
}

/// Serves the API on `listener` until `shutdown` resolves; also runs the
/// heartbeat expiry.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = app.registry.clone();
    let expiry = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = registry.expire().await {
                tracing::error!(error = %e, "heartbeat expiry failed");
            }
        }
    });
    let result = axum::serve(listener, api::router(app))
        .with_graceful_shutdown(shutdown)
        .await;
    expiry.abort();
    result
}
