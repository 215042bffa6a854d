//! Every metric connect-proxy exports, declared in one place and
//! registered on a registry passed in. Data-path counters carry a `core`
//! label: each core increments its own child, so cores never contend on a
//! cache line; dashboards sum over `core`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    /// `connect_proxy_handshake_duration_seconds`: accept to authenticated.
    pub handshake: Histogram,
    /// `connect_proxy_auth_total{result,reason}`
    pub auth: IntCounterVec,
    /// `connect_proxy_sessions_active{core}`: authenticated connections.
    pub sessions: IntGaugeVec,
    /// `connect_proxy_channels_active{core}`
    pub channels: IntGaugeVec,
    /// `connect_proxy_channel_bytes_total{core,direction}`: `up` is user to
    /// Studio, `down` Studio to user.
    pub bytes: IntCounterVec,
    /// `connect_proxy_upstream_connect_duration_seconds{result}`
    pub upstream_connect: HistogramVec,
    /// `connect_proxy_upstream_failures_total{reason}`
    pub upstream_failures: IntCounterVec,
    /// `connect_proxy_connections_refused_total{reason}`: before any SSH.
    pub refused: IntCounterVec,
    /// `connect_proxy_connections_closed_total{reason}`: authenticated
    /// connections by why they ended (`revoked`, `studio_closed`, ...).
    pub closed: IntCounterVec,
    /// `connect_proxy_rekeys_total{leg}`: key exchanges after the first,
    /// on the `user` and `studio` legs, counted when a connection ends.
    pub rekeys: IntCounterVec,
    /// `connect_proxy_io_backend{backend}`: 1 for the backend in use.
    pub io_backend: IntGaugeVec,
    /// `connect_proxy_state_revision`: the latest complete state received
    /// from the control plane (published to the cores, maybe not yet
    /// installed by all of them).
    pub state_revision: IntGauge,
    /// `connect_proxy_core_state_revision{core}`: the state revision each
    /// core routes with; a login on that core sees every change up to it.
    /// Tests wait for the minimum over cores to reach the control plane's.
    pub core_state_revision: IntGaugeVec,
    /// `connect_proxy_state_age_seconds`: since the last line from the
    /// control plane (heartbeats every 15 s keep it low while connected).
    pub state_age: IntGauge,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Self {
            handshake: Histogram::with_opts(
                HistogramOpts::new(
                    "connect_proxy_handshake_duration_seconds",
                    "From accept to authenticated",
                )
                .buckets(latency.clone()),
            )?,
            auth: IntCounterVec::new(
                Opts::new(
                    "connect_proxy_auth_total",
                    "Authentication decisions by result and reason",
                ),
                &["result", "reason"],
            )?,
            sessions: IntGaugeVec::new(
                Opts::new(
                    "connect_proxy_sessions_active",
                    "Authenticated connections by core",
                ),
                &["core"],
            )?,
            channels: IntGaugeVec::new(
                Opts::new(
                    "connect_proxy_channels_active",
                    "Open relayed channels by core",
                ),
                &["core"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "connect_proxy_channel_bytes_total",
                    "Channel payload bytes by core and direction",
                ),
                &["core", "direction"],
            )?,
            upstream_connect: HistogramVec::new(
                HistogramOpts::new(
                    "connect_proxy_upstream_connect_duration_seconds",
                    "TCP connect, SSH handshake and authentication to the Studio",
                )
                .buckets(latency),
                &["result"],
            )?,
            upstream_failures: IntCounterVec::new(
                Opts::new(
                    "connect_proxy_upstream_failures_total",
                    "Failed upstream connections by reason",
                ),
                &["reason"],
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "connect_proxy_connections_refused_total",
                    "Connections dropped before or during the handshake",
                ),
                &["reason"],
            )?,
            closed: IntCounterVec::new(
                Opts::new(
                    "connect_proxy_connections_closed_total",
                    "Authenticated connections by why they ended",
                ),
                &["reason"],
            )?,
            rekeys: IntCounterVec::new(
                Opts::new(
                    "connect_proxy_rekeys_total",
                    "Key exchanges after the first, by leg (counted at close)",
                ),
                &["leg"],
            )?,
            io_backend: IntGaugeVec::new(
                Opts::new("connect_proxy_io_backend", "The I/O backend in use (1)"),
                &["backend"],
            )?,
            state_revision: IntGauge::new(
                "connect_proxy_state_revision",
                "Routing state revision in use",
            )?,
            core_state_revision: IntGaugeVec::new(
                Opts::new(
                    "connect_proxy_core_state_revision",
                    "Routing state revision each core has installed",
                ),
                &["core"],
            )?,
            state_age: IntGauge::new(
                "connect_proxy_state_age_seconds",
                "Seconds since the last line from the control plane",
            )?,
        };
        registry.register(Box::new(m.handshake.clone()))?;
        registry.register(Box::new(m.auth.clone()))?;
        registry.register(Box::new(m.sessions.clone()))?;
        registry.register(Box::new(m.channels.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.upstream_connect.clone()))?;
        registry.register(Box::new(m.upstream_failures.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.closed.clone()))?;
        registry.register(Box::new(m.rekeys.clone()))?;
        registry.register(Box::new(m.io_backend.clone()))?;
        registry.register(Box::new(m.state_revision.clone()))?;
        registry.register(Box::new(m.core_state_revision.clone()))?;
        registry.register(Box::new(m.state_age.clone()))?;
        Ok(m)
    }
}

/// One core's handles to its own metric children, resolved once.
#[derive(Clone)]
pub struct CoreMetrics {
    pub all: Metrics,
    pub sessions: IntGauge,
    pub channels: IntGauge,
    pub bytes_up: prometheus::IntCounter,
    pub bytes_down: prometheus::IntCounter,
    pub state_revision: IntGauge,
}

impl CoreMetrics {
    pub fn new(all: &Metrics, core: usize) -> Self {
        let label = core.to_string();
        Self {
            sessions: all.sessions.with_label_values(&[&label]),
            channels: all.channels.with_label_values(&[&label]),
            bytes_up: all.bytes.with_label_values(&[&label, "up"]),
            bytes_down: all.bytes.with_label_values(&[&label, "down"]),
            state_revision: all.core_state_revision.with_label_values(&[&label]),
            all: all.clone(),
        }
    }
}
