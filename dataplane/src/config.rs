//! connect-proxy's configuration: the seed's `CONNECT_*` variables plus
//! the deployed product's, parsed once into [`Config`].
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CONNECT_SSH_ENABLED` | not `true`: no SSH listener | the seed's switch |
//! | `CONNECT_SSH_ADDR` | `:2222` | SSH listen address |
//! | `CONNECT_SSH_KEY_PATH` / `CONNECT_SSH_KEY_VALUE_BASE64` | one required | the proxy's OpenSSH private key |
//! | `CONNECT_SSH_MAX_CONNECTIONS` | `2000` | authenticated SSH connections, all cores together |
//! | `CONNECT_SSH_MAX_CONN_CHANNELS` | `64` | channels per connection, opened from either side |
//! | `CONNECT_SSH_HANDSHAKE_TIMEOUT` | `15s` | from accept to authenticated |
//! | `CONNECT_SSH_MAX_STARTUPS` | `1000:30:4000` | unauthenticated connections, as sshd's MaxStartups `start:rate:full` |
//! | `CONNECT_SSH_MAX_STARTUPS_PER_SOURCE` | `250` | unauthenticated connections from one address |
//! | `CONNECT_SSH_PENALTY` | `30s` | penalty time (5 s per failed login, 1 s per key exchange left without authenticating, 10 s per handshake timeout) above which a source is refused; `0` turns penalties off |
//! | `CONNECT_SSH_REKEY_LIMIT` | `1073741824` | bytes per direction and leg after which the proxy rekeys that leg |
//! | `CONNECT_MANAGEMENT_PORT` | `9090` | `/metrics`, `/healthz`, `/readyz` on all interfaces |
//! | `CONNECT_LOG_LEVEL` | `info` | off, error, warn, info, debug, trace |
//! | `CONNECT_CONTROL_URL` + `CONNECT_CONTROL_TOKEN` | unset: embedded control plane | a remote connect-control |
//! | `CONNECT_CORES` | all CPUs | data-plane threads, one per core |
//! | `CONNECT_IO` | `auto` | `auto`, `uring` or `epoll` |
//! | `CONNECT_PROXY_NAME` | host name | this replica's name in activity reports |
//! | `CONNECT_ACTIVITY_INTERVAL` | `30s` | how often per-session activity is reported |
//!
//! Without `CONNECT_CONTROL_URL`, the control plane runs in-process with
//! its own `TOWER_*`/`CONNECT_CONTROL_*` variables (see connect-control).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use model::Secret;
use model::env::{ConfigError, Env, Source};
use model::logging::LogLevel;

use crate::io_backend::IoChoice;

/// Channels per connection unless `CONNECT_SSH_MAX_CONN_CHANNELS` says
/// otherwise: VS Code's SOCKS forwarding and browsers behind `-L`/`-D`
/// open 30-40 at once, and connect-client serves 64 per connection.
pub const DEFAULT_MAX_CHANNELS: usize = 64;

/// Where the proxy key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    Path(PathBuf),
    /// The variable's value: base64 of the OpenSSH private key file.
    Base64(Secret),
}

/// The control plane to follow.
#[derive(Debug, Clone)]
pub enum Control {
    /// A remote connect-control.
    Remote { url: String, token: Secret },
    /// The control plane in this process (single node).
    Embedded,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ssh_enabled: bool,
    pub ssh_addr: SocketAddr,
    /// `None` only when SSH is disabled.
    pub key: Option<KeySource>,
    pub max_connections: usize,
    pub max_channels: usize,
    pub handshake_timeout: Duration,
    /// Bytes per direction of one leg after which the proxy starts a rekey.
    pub rekey_bytes: u64,
    /// Caps on connections not yet authenticated.
    pub admission: crate::admission::Caps,
    pub management_port: u16,
    /// Where the management port listens: every interface (Prometheus
    /// scrapes it from the cluster); loopback for `--dev`.
    pub management_ip: std::net::IpAddr,
    pub log_level: LogLevel,
    pub control: Control,
    pub cores: usize,
    pub io: IoChoice,
    pub name: String,
    pub activity_interval: Duration,
}

impl Config {
    pub fn from_env(source: impl Source) -> Result<Self, ConfigError> {
        let env = Env::new(source);
        let ssh_enabled = env.bool("CONNECT_SSH_ENABLED")?.unwrap_or(false);
        let key = match (
            env.non_empty("CONNECT_SSH_KEY_PATH"),
            env.non_empty("CONNECT_SSH_KEY_VALUE_BASE64"),
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "CONNECT_SSH_KEY_VALUE_BASE64",
                    "set either CONNECT_SSH_KEY_PATH or CONNECT_SSH_KEY_VALUE_BASE64, not both",
                ));
            }
            (Some(p), None) => Some(KeySource::Path(PathBuf::from(p.trim()))),
            (None, Some(v)) => Some(KeySource::Base64(Secret::new(v.trim().to_owned()))),
            (None, None) if ssh_enabled => {
                return Err(ConfigError::new(
                    "CONNECT_SSH_KEY_PATH",
                    "is required when CONNECT_SSH_ENABLED=true (or give CONNECT_SSH_KEY_VALUE_BASE64)",
                ));
            }
            (None, None) => None,
        };
        let positive =
            |var: &str, v: Option<usize>, default: usize| -> Result<usize, ConfigError> {
                match v {
                    Some(0) => Err(ConfigError::new(var, "must be at least 1")),
                    Some(n) => Ok(n),
                    None => Ok(default),
                }
            };
        let max_connections = positive(
            "CONNECT_SSH_MAX_CONNECTIONS",
            env.parse("CONNECT_SSH_MAX_CONNECTIONS")?,
            2000,
        )?;
        let max_channels = positive(
            "CONNECT_SSH_MAX_CONN_CHANNELS",
            env.parse("CONNECT_SSH_MAX_CONN_CHANNELS")?,
            DEFAULT_MAX_CHANNELS,
        )?;
        let handshake_timeout = env
            .duration("CONNECT_SSH_HANDSHAKE_TIMEOUT")?
            .unwrap_or(Duration::from_secs(15));
        if handshake_timeout.is_zero() {
            return Err(ConfigError::new(
                "CONNECT_SSH_HANDSHAKE_TIMEOUT",
                "must be more than 0",
            ));
        }
        let rekey_bytes = env
            .parse::<u64>("CONNECT_SSH_REKEY_LIMIT")?
            .unwrap_or(crate::ssh::transport::REKEY_BYTES);
        if rekey_bytes < 1 << 16 {
            return Err(ConfigError::new(
                "CONNECT_SSH_REKEY_LIMIT",
                "must be at least 65536 bytes",
            ));
        }
        let mut admission = crate::admission::Caps::default();
        if let Some(v) = env.non_empty("CONNECT_SSH_MAX_STARTUPS") {
            (admission.start, admission.rate, admission.full) =
                crate::admission::parse_startups(&v)
                    .map_err(|e| ConfigError::new("CONNECT_SSH_MAX_STARTUPS", e))?;
        }
        admission.per_source = positive(
            "CONNECT_SSH_MAX_STARTUPS_PER_SOURCE",
            env.parse("CONNECT_SSH_MAX_STARTUPS_PER_SOURCE")?,
            admission.per_source,
        )?;
        if let Some(p) = env.duration("CONNECT_SSH_PENALTY")? {
            admission.penalty = p;
        }
        let control = match env.non_empty("CONNECT_CONTROL_URL") {
            None => Control::Embedded,
            Some(url) => {
                let url = url.trim().trim_end_matches('/').to_owned();
                if !url.starts_with("http://") {
                    return Err(ConfigError::new(
                        "CONNECT_CONTROL_URL",
                        format!(
                            "{url:?} is not an http:// URL (https is not supported by this build)"
                        ),
                    ));
                }
                let token = env.non_empty("CONNECT_CONTROL_TOKEN").ok_or_else(|| {
                    ConfigError::new(
                        "CONNECT_CONTROL_TOKEN",
                        "is required with CONNECT_CONTROL_URL",
                    )
                })?;
                Control::Remote {
                    url,
                    token: Secret::new(token.trim().to_owned()),
                }
            }
        };
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cores = positive("CONNECT_CORES", env.parse("CONNECT_CORES")?, cpus)?;
        let management_port = env.parse::<u16>("CONNECT_MANAGEMENT_PORT")?.unwrap_or(9090);
        let name = env
            .non_empty("CONNECT_PROXY_NAME")
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| "connect-proxy".into());

        let activity_interval = env
            .duration("CONNECT_ACTIVITY_INTERVAL")?
            .unwrap_or(Duration::from_secs(30));
        if activity_interval.is_zero() {
            return Err(ConfigError::new(
                "CONNECT_ACTIVITY_INTERVAL",
                "must be more than 0",
            ));
        }

        Ok(Self {
            ssh_enabled,
            ssh_addr: env
                .listen_addr("CONNECT_SSH_ADDR")?
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 2222))),
            key,
            max_connections,
            max_channels,
            handshake_timeout,
            rekey_bytes,
            admission,
            management_port,
            management_ip: std::net::IpAddr::from([0, 0, 0, 0]),
            log_level: env
                .parse::<LogLevel>("CONNECT_LOG_LEVEL")?
                .unwrap_or(LogLevel::Info),
            control,
            cores,
            io: env
                .parse::<IoChoice>("CONNECT_IO")?
                .unwrap_or(IoChoice::Auto),
            name,
            activity_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(pairs.iter().copied().collect::<HashMap<_, _>>())
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = config(&[
            ("CONNECT_SSH_ENABLED", "true"),
            ("CONNECT_SSH_KEY_PATH", "/secrets/ssh-key"),
        ])
        .expect("valid");
        assert!(c.ssh_enabled);
        assert_eq!(c.ssh_addr, "0.0.0.0:2222".parse().expect("addr"));
        assert_eq!((c.max_connections, c.max_channels), (2000, 64));
        assert_eq!(c.handshake_timeout, Duration::from_secs(15));
        assert!(matches!(c.control, Control::Embedded));
        assert!(matches!(c.io, IoChoice::Auto));
    }

    #[test]
    fn ssh_off_unless_true() {
        assert!(!config(&[]).expect("valid").ssh_enabled);
        assert!(
            !config(&[("CONNECT_SSH_ENABLED", "false")])
                .expect("valid")
                .ssh_enabled
        );
        assert_eq!(
            config(&[("CONNECT_SSH_ENABLED", "maybe")]).unwrap_err().var,
            "CONNECT_SSH_ENABLED"
        );
    }

    #[test]
    fn key_required_when_enabled_and_not_twice() {
        assert_eq!(
            config(&[("CONNECT_SSH_ENABLED", "true")]).unwrap_err().var,
            "CONNECT_SSH_KEY_PATH"
        );
        let both = [
            ("CONNECT_SSH_KEY_PATH", "/k"),
            ("CONNECT_SSH_KEY_VALUE_BASE64", "AAAA"),
        ];
        assert_eq!(
            config(&both).unwrap_err().var,
            "CONNECT_SSH_KEY_VALUE_BASE64"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("CONNECT_SSH_ADDR", "2222"),
            ("CONNECT_SSH_MAX_CONNECTIONS", "0"),
            ("CONNECT_SSH_MAX_CONN_CHANNELS", "x"),
            ("CONNECT_SSH_HANDSHAKE_TIMEOUT", "0"),
            ("CONNECT_MANAGEMENT_PORT", "99999"),
            ("CONNECT_LOG_LEVEL", "chatty"),
            ("CONNECT_CORES", "0"),
            ("CONNECT_IO", "kqueue"),
            ("CONNECT_CONTROL_URL", "https://control"),
        ] {
            assert_eq!(
                config(&[(var, value)]).unwrap_err().var,
                var,
                "{var}={value}"
            );
        }
        assert_eq!(
            config(&[("CONNECT_CONTROL_URL", "http://control:8080")])
                .unwrap_err()
                .var,
            "CONNECT_CONTROL_TOKEN"
        );
    }
}
