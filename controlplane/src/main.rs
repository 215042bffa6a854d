//! `connect-control`: see the library docs and the README.

use std::sync::Arc;

use controlplane::store::sqlite::SqliteStore;
use controlplane::{Config, StartError};
use model::env::ProcessEnv;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let config = match Config::from_env(ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect-control: {e}");
            std::process::exit(model::env::EXIT_CONFIG);
        }
    };
    model::logging::init(config.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("connect-control: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(config)) {
        tracing::error!(error = %e, "connect-control stopped");
        eprintln!("connect-control: {e}");
        std::process::exit(e.exit_code());
    }
}

async fn run(config: Config) -> Result<(), StartError> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let store = SqliteStore::open(&config.db)?;
    let addr = config.addr;
    let db = config.db.clone();
    let access = config.access.to_string();
    let app = controlplane::open(config, Arc::new(store), prometheus::Registry::new()).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    tracing::info!(addr = %local, db = %db.display(), ssh_access = %access, "connect-control listening");
    controlplane::serve(listener, app, shutdown_signal())
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
