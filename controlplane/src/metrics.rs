//! Every metric connect-control exports, declared in one place and
//! registered on a registry passed in (no globals).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

#[derive(Clone)]
pub struct Metrics {
    /// `connect_control_http_requests_total{route,method,status}`
    pub requests: IntCounterVec,
    /// `connect_control_http_request_duration_seconds{route}`
    pub request_duration: HistogramVec,
    /// `connect_control_revision`: the last committed revision.
    pub revision: IntGauge,
    /// `connect_control_watchers`: proxies following the watch stream.
    pub watchers: IntGauge,
    /// `connect_control_sessions{state}`
    pub sessions: IntGaugeVec,
    /// `connect_control_keys`: registered user keys.
    pub keys: IntGauge,
    /// `connect_control_registrations_total`
    pub registrations: IntCounter,
    /// `connect_control_heartbeats_total{result}`: ok, unauthorized (unknown
    /// session or wrong token), not_registered, error.
    pub heartbeats: IntCounterVec,
    /// `connect_control_sessions_expired_total`: sessions stopped for missed heartbeats.
    pub expired: IntCounter,
    /// `connect_control_commit_duration_seconds`: one durable commit of a
    /// group of writes.
    pub commit_seconds: Histogram,
    /// `connect_control_commit_writes`: writes sharing one commit.
    pub commit_writes: Histogram,
    /// `connect_control_catch_ups_total`: times this replica read other
    /// replicas' commits from the store.
    pub catch_ups: IntCounter,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "connect_control_http_requests_total",
                    "HTTP requests by route, method and status",
                ),
                &["route", "method", "status"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "connect_control_http_request_duration_seconds",
                    "HTTP request latency by route",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["route"],
            )?,
            revision: IntGauge::new("connect_control_revision", "Last committed state revision")?,
            watchers: IntGauge::new("connect_control_watchers", "Connected watch streams")?,
            sessions: IntGaugeVec::new(
                Opts::new("connect_control_sessions", "Sessions by state"),
                &["state"],
            )?,
            keys: IntGauge::new("connect_control_keys", "Registered user SSH keys")?,
            registrations: IntCounter::new(
                "connect_control_registrations_total",
                "Studio registrations",
            )?,
            heartbeats: IntCounterVec::new(
                Opts::new(
                    "connect_control_heartbeats_total",
                    "Studio heartbeats by result",
                ),
                &["result"],
            )?,
            expired: IntCounter::new(
                "connect_control_sessions_expired_total",
                "Sessions marked stopped after missed heartbeats",
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "connect_control_commit_duration_seconds",
                    "Durable commits of a group of writes",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )?,
            commit_writes: Histogram::with_opts(
                HistogramOpts::new("connect_control_commit_writes", "Writes sharing one commit")
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                    ]),
            )?,
            catch_ups: IntCounter::new(
                "connect_control_catch_ups_total",
                "Times this replica read other replicas' commits from the store",
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.revision.clone()))?;
        registry.register(Box::new(m.watchers.clone()))?;
        registry.register(Box::new(m.sessions.clone()))?;
        registry.register(Box::new(m.keys.clone()))?;
        registry.register(Box::new(m.registrations.clone()))?;
        registry.register(Box::new(m.heartbeats.clone()))?;
        registry.register(Box::new(m.expired.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.commit_writes.clone()))?;
        registry.register(Box::new(m.catch_ups.clone()))?;
        Ok(m)
    }
}
