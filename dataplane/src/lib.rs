//! connect-proxy: the SSH front door. It terminates users' SSH transport and
//! authentication, decides who may reach which Studio on its own copy of
//! the routing state, opens its own SSH connection to the Studio and then
//! relays the connection protocol between the two legs packet by packet.
//!
//! Layout, in the order a connection meets it:
//! - [`config`] and [`key`]: `CONNECT_*` variables and the proxy key;
//! - [`io_backend`] and [`uring_stream`]: io_uring or epoll under one stream
//!   type (the workspace's only `unsafe` lives in `uring_stream`);
//! - [`core`]: one thread per core and the accept phase; [`admission`]:
//!   caps on connections not yet authenticated;
//! - [`connection`]: the phases of one connection, in order;
//! - [`ssh`]: the proxy's own SSH transport (both roles);
//! - [`userauth`]: publickey authentication on the user's leg;
//! - [`authorize`]: the decision on the state [`routes`] keeps per core;
//! - [`upstream`]: the Studio leg; [`stranded`]: when it can't be made;
//! - [`relay`] and [`channels`]: packets between the legs, and policy;
//! - [`error`]: why a connection ended, by whose fault;
//! - [`control`]: the control thread (watch, activity, management);
//! - [`activity`], [`metrics`]; [`dev`]: `connect-proxy --dev`.
#![deny(unsafe_code)]

pub mod activity;
pub mod admission;
pub mod authorize;
pub mod channels;
pub mod config;
pub mod connection;
pub mod control;
pub mod core;
pub mod dev;
pub mod error;
pub mod io_backend;
pub mod key;
pub mod metrics;
pub mod relay;
pub mod routes;
pub mod ssh;
pub mod stranded;
pub mod upstream;
pub mod uring_stream;
pub mod userauth;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use model::env::ConfigError;
use tracing::{info, warn};

pub use config::Config;

/// Why the proxy stopped or refused to start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration the operator must fix (exit 64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The proxy key is not the one the platform trusts (exit 64): Studios
    /// would refuse it and users would see "closed by remote host".
    #[error(
        "the proxy key ({ours}) is not the platform's TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT ({platform}); \
         refusing to serve: Studios would reject this proxy"
    )]
    KeyMismatch { ours: String, platform: String },
    #[error("the embedded control plane failed to start: {0}")]
    Control(#[from] controlplane::StartError),
    #[error("{0}")]
    Io(String),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::KeyMismatch { .. } => model::env::EXIT_CONFIG,
            Self::Control(e) => e.exit_code(),
            Self::Io(_) => 1,
        }
    }
}

/// A running proxy.
pub struct Running {
    pub ssh_addr: Option<SocketAddr>,
    pub management_addr: SocketAddr,
    /// The embedded control plane's address, if it runs in-process.
    pub control_addr: Option<SocketAddr>,
    pub fanout: Arc<control::Fanout>,
    /// The control thread's runtime (one worker): follow, report, manage.
    pub runtime: tokio::runtime::Runtime,
}

/// What [`start`] needs beyond [`Config`].
pub struct Options {
    /// The embedded control plane's configuration (ignored with a remote
    /// one); `None` reads it from the environment.
    pub control: Option<controlplane::Config>,
}

/// Starts everything and returns once the proxy serves (or SSH is off).
pub fn start(config: Config, options: Options) -> Result<Running, RunError> {
    let config = Arc::new(config);
    let key = config.key.as_ref().map(key::load).transpose()?;
    let fingerprint = key.as_ref().map(key::fingerprint);
    let key = key.as_ref().map(key::signer).transpose()?;

    let (backend, why) =
        io_backend::choose(config.io).map_err(|e| ConfigError::new("CONNECT_IO", e))?;
    match &why {
        Some(reason) => {
            warn!(backend = %backend, reason = %reason, "io_uring unavailable; using epoll")
        }
        None => info!(backend = %backend, "I/O backend"),
    }
    let registry = prometheus::Registry::new();
    let metrics =
        metrics::Metrics::new(&registry).map_err(|e| RunError::Io(format!("metrics: {e}")))?;
    metrics
        .io_backend
        .with_label_values(&[backend.as_str()])
        .set(1);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("control")
        .build()
        .map_err(|e| RunError::Io(format!("control runtime: {e}")))?;
    let handle = runtime.handle().clone();
    let fanout = Arc::new(control::Fanout::default());
    let ready = Arc::new(AtomicBool::new(false));

    // The control plane: embedded (single node) or remote.
    let (source, control_addr) = match &config.control {
        config::Control::Remote { url, token } => (
            control::Source {
                url: url.clone(),
                token: token.clone(),
            },
            None,
        ),
        config::Control::Embedded => {
            let control_config = match options.control {
                Some(c) => c,
                None => controlplane::Config::from_env(model::env::ProcessEnv)?,
            };
            if let (Some(ours), Some(platform)) = (fingerprint, control_config.proxy_fingerprint)
                && ours != platform
            {
                return Err(RunError::KeyMismatch {
                    ours: ours.to_string(),
                    platform: platform.to_string(),
                });
            }
            let token = control_config.proxy_token.clone();
            let addr = control_config.addr;
            let db = control_config.db.clone();
            let registry = registry.clone();
            let bound = handle.block_on(async move {
                let store = controlplane::store::sqlite::SqliteStore::open(&db)?;
                let app = controlplane::open(control_config, Arc::new(store), registry).await?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| controlplane::StartError::Listen { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| controlplane::StartError::Listen { addr, source })?;
                tokio::spawn(controlplane::serve(listener, app, std::future::pending()));
                Ok::<_, controlplane::StartError>(bound)
            })?;
            info!(addr = %bound, "embedded control plane listening");
            (
                control::Source {
                    url: format!("http://{bound}"),
                    token,
                },
                Some(bound),
            )
        }
    };

    let management = handle
        .block_on(tokio::net::TcpListener::bind(SocketAddr::new(
            config.management_ip,
            config.management_port,
        )))
        .map_err(|e| ConfigError::new("CONNECT_MANAGEMENT_PORT", format!("cannot listen: {e}")))?;
    let management_addr = management
        .local_addr()
        .map_err(|e| RunError::Io(e.to_string()))?;
    handle.spawn(control::serve_management(
        management,
        registry.clone(),
        ready.clone(),
    ));
    handle.spawn(control::follow(
        source.clone(),
        fanout.clone(),
        metrics.clone(),
    ));
    handle.spawn(control::track_state_age(fanout.clone(), metrics.clone()));
    let every = config.activity_interval;
    handle.spawn(control::report_activity(
        source,
        config.name.clone(),
        every,
        fanout.clone(),
    ));

    let initial = fanout.wait_synced();
    if let (Some(ours), Some(platform)) = (fingerprint, initial.proxy_fingerprint)
        && ours != platform
    {
        return Err(RunError::KeyMismatch {
            ours: ours.to_string(),
            platform: platform.to_string(),
        });
    }
    if !initial.access.is_on() {
        warn!(
            "SSH is disabled on the platform (TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES unset): every login will be refused"
        );
    }

    let (Some(key), Some(fingerprint), true) = (key, fingerprint, config.ssh_enabled) else {
        info!("CONNECT_SSH_ENABLED is not true: no SSH listener");
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        return Ok(Running {
            ssh_addr: None,
            management_addr,
            control_addr,
            fanout,
            runtime,
        });
    };

    io_backend::ensure_unused(config.ssh_addr).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AddrInUse {
            "something already listens there (another connect-proxy, or a stale one? \
             it would silently get a share of the connections)"
                .to_owned()
        } else {
            e.to_string()
        };
        ConfigError::new(
            "CONNECT_SSH_ADDR",
            format!("cannot listen on {}: {why}", config.ssh_addr),
        )
    })?;
    let first = io_backend::reuseport_listener(config.ssh_addr).map_err(|e| {
        ConfigError::new(
            "CONNECT_SSH_ADDR",
            format!("cannot listen on {}: {e}", config.ssh_addr),
        )
    })?;
    let ssh_addr = first
        .local_addr()
        .map_err(|e| RunError::Io(e.to_string()))?;
    let mut listeners = vec![first];
    for _ in 1..config.cores {
        listeners.push(
            io_backend::reuseport_listener(ssh_addr).map_err(|e| RunError::Io(e.to_string()))?,
        );
    }
    let cores = core::start(core::Start {
        config: config.clone(),
        key,
        metrics,
        backend,
        listeners,
        initial: fanout.latest().unwrap_or(initial),
    })
    .map_err(|e| RunError::Io(format!("cannot start cores: {e}")))?;
    for c in cores {
        fanout.add_core(c.publisher, c.activity);
    }
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    control::log_listening(
        ssh_addr,
        management_addr,
        config.cores,
        backend.as_str(),
        &fingerprint,
    );
    Ok(Running {
        ssh_addr: Some(ssh_addr),
        management_addr,
        control_addr,
        fanout,
        runtime,
    })
}

/// Waits for SIGTERM or Ctrl-C.
pub fn wait_for_shutdown(running: &Running) {
    let _ = running.runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    });
    info!("shutting down");
}
