//! connect-control's configuration: the platform's `TOWER_*` variables with
//! the seed's exact semantics, and its own `CONNECT_CONTROL_*` settings.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES` | unset = SSH off | `""` every workspace; `"1,2"` only those |
//! | `TOWER_SSH_KEYS_MANAGEMENT_ENABLED` | `false` | `true` enables the user-key endpoints |
//! | `TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT` | required when SSH is on | the proxy key's `SHA256:` fingerprint |
//! | `TOWER_DATA_STUDIO_CONNECT_SSH_PORT` | `2222` | the port users are told to connect to |
//! | `TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS` | the host of `TOWER_DATA_STUDIO_CONNECT_URL` | the host name users are told to connect to |
//! | `CONNECT_CONTROL_ADDR` | `127.0.0.1:8080` | HTTP listen address |
//! | `CONNECT_CONTROL_DB` | `connect-control.sqlite3` | SQLite file |
//! | `CONNECT_CONTROL_ADMIN_TOKEN` | required | bearer token of the platform/admin API (16+ characters) |
//! | `CONNECT_CONTROL_PROXY_TOKEN` | required | bearer token of proxies' watch and activity (16+ characters) |
//! | `CONNECT_CONTROL_HEARTBEAT_INTERVAL` | `15s` | how often Studios heartbeat |
//! | `CONNECT_CONTROL_MISSED_HEARTBEATS` | `3` | missed heartbeats before a session is `stopped` |
//! | `CONNECT_CONTROL_LOG_RETAIN` | `100000` | changes kept for watchers to resume from |
//! | `CONNECT_CONTROL_LOG_LEVEL` | `info` | off, error, warn, info, debug, trace |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use model::env::{ConfigError, Env, Source};
use model::logging::LogLevel;
use model::{Fingerprint, Secret, SshAccess};

/// Shortest accepted bearer token.
const MIN_TOKEN_LEN: usize = 16;

/// What users are told to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshEndpoint {
    /// `None` when neither the SSH address nor the connect URL is set; the
    /// connection-info endpoint then explains what to configure.
    pub host: Option<String>,
    pub port: u16,
}

/// Platform settings and the control plane's own.
#[derive(Debug, Clone)]
pub struct Config {
    pub access: SshAccess,
    pub keys_management: bool,
    /// Invariant: `Some` whenever `access` is on.
    pub proxy_fingerprint: Option<Fingerprint>,
    pub ssh_endpoint: SshEndpoint,
    pub addr: SocketAddr,
    pub db: PathBuf,
    pub admin_token: Secret,
    pub proxy_token: Secret,
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: u32,
    pub log_retain: usize,
    pub log_level: LogLevel,
}

impl Config {
    pub fn from_env(source: impl Source) -> Result<Self, ConfigError> {
        let env = Env::new(source);
        let access_var = "TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES";
        let access = SshAccess::from_env_value(env.raw(access_var).as_deref())
            .map_err(|e| ConfigError::new(access_var, e))?;

        let keys_var = "TOWER_SSH_KEYS_MANAGEMENT_ENABLED";
        let keys_management = env.bool(keys_var)?.unwrap_or(false);

        let fp_var = "TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT";
        let proxy_fingerprint = env.parse::<Fingerprint>(fp_var)?;
        if access.is_on() && proxy_fingerprint.is_none() {
            return Err(ConfigError::new(
                fp_var,
                "is required when SSH is enabled (TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES is set): \
                 Studios accept only the key with this fingerprint (`ssh-keygen -lf proxy-key`)",
            ));
        }

        let port_var = "TOWER_DATA_STUDIO_CONNECT_SSH_PORT";
        let port = env.parse::<u16>(port_var)?.unwrap_or(2222);
        if port == 0 {
            return Err(ConfigError::new(
                port_var,
                "must be a port between 1 and 65535",
            ));
        }
        let host = match env.non_empty("TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS") {
            Some(h) => Some(
                ssh_host(h.trim())
                    .map_err(|e| ConfigError::new("TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS", e))?,
            ),
            None => match env.non_empty("TOWER_DATA_STUDIO_CONNECT_URL") {
                Some(url) => Some(
                    url_host(url.trim())
                        .map_err(|e| ConfigError::new("TOWER_DATA_STUDIO_CONNECT_URL", e))?,
                ),
                None => None,
            },
        };

        let heartbeat_interval = env
            .duration("CONNECT_CONTROL_HEARTBEAT_INTERVAL")?
            .unwrap_or(Duration::from_secs(15));
        if heartbeat_interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "CONNECT_CONTROL_HEARTBEAT_INTERVAL",
                "must be at least 1s",
            ));
        }
        let missed_heartbeats = env
            .parse::<u32>("CONNECT_CONTROL_MISSED_HEARTBEATS")?
            .unwrap_or(3);
        if missed_heartbeats == 0 {
            return Err(ConfigError::new(
                "CONNECT_CONTROL_MISSED_HEARTBEATS",
                "must be at least 1",
            ));
        }
        let log_retain = env
            .parse::<usize>("CONNECT_CONTROL_LOG_RETAIN")?
            .unwrap_or(100_000);
        if log_retain == 0 {
            return Err(ConfigError::new(
                "CONNECT_CONTROL_LOG_RETAIN",
                "must be at least 1",
            ));
        }

        Ok(Self {
            access,
            keys_management,
            proxy_fingerprint,
            ssh_endpoint: SshEndpoint { host, port },
            addr: env
                .listen_addr("CONNECT_CONTROL_ADDR")?
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            db: env
                .non_empty("CONNECT_CONTROL_DB")
                .map(PathBuf::from)
                .unwrap_or_else(|| "connect-control.sqlite3".into()),
            admin_token: token(&env, "CONNECT_CONTROL_ADMIN_TOKEN")?,
            proxy_token: token(&env, "CONNECT_CONTROL_PROXY_TOKEN")?,
            heartbeat_interval,
            missed_heartbeats,
            log_retain,
            log_level: env
                .parse::<LogLevel>("CONNECT_CONTROL_LOG_LEVEL")?
                .unwrap_or(LogLevel::Info),
        })
    }

    /// How long a registered session may go without a heartbeat.
    pub fn liveness_timeout(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }

    /// Warnings for settings that are valid but probably not what was meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.access.is_on() && !self.keys_management {
            w.push(
                "SSH is enabled but TOWER_SSH_KEYS_MANAGEMENT_ENABLED is not true: users cannot register \
                 keys, so nobody can log in"
                    .to_owned(),
            );
        }
        if self.access.is_on() && self.ssh_endpoint.host.is_none() {
            w.push(
                "SSH is enabled but neither TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS nor TOWER_DATA_STUDIO_CONNECT_URL \
                 is set: the connection-info endpoint cannot tell users where to connect"
                    .to_owned(),
            );
        }
        w
    }
}

fn token<S: Source>(env: &Env<S>, var: &str) -> Result<Secret, ConfigError> {
    let value = env.required(var)?;
    if value.trim().len() < MIN_TOKEN_LEN {
        return Err(ConfigError::new(
            var,
            format!("must be at least {MIN_TOKEN_LEN} characters"),
        ));
    }
    Ok(Secret::new(value.trim().to_owned()))
}

/// A host name or IP literal, not a URL and without a port.
fn ssh_host(value: &str) -> Result<String, String> {
    if value.contains("://") {
        return Err(format!(
            "{value:?} is a URL; give only the host name (e.g. ssh.example.com)"
        ));
    }
    let bracketed = value.starts_with('[') && value.ends_with(']');
    if value.contains('/')
        || (value.contains(':') && !bracketed && value.parse::<std::net::Ipv6Addr>().is_err())
    {
        return Err(format!(
            "{value:?} is not a host name; give only the host (the port is TOWER_DATA_STUDIO_CONNECT_SSH_PORT)"
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{value:?} contains spaces or control characters"));
    }
    Ok(value.to_owned())
}

/// The host part of an `http(s)://host[:port]/...` URL.
fn url_host(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']')
            .next()
            .map(|h| format!("[{h}]"))
            .unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default().to_owned()
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FP: &str = "SHA256:NEu6MAPGJpImFJ3raQzv6+NubCPy/92hqR+CVyMjKvM";
    const TOKENS: [(&str, &str); 2] = [
        ("CONNECT_CONTROL_ADMIN_TOKEN", "admin-token-0123456789"),
        ("CONNECT_CONTROL_PROXY_TOKEN", "proxy-token-0123456789"),
    ];

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<&str, &str> = TOKENS.into_iter().collect();
        map.extend(pairs.iter().copied());
        Config::from_env(map)
    }

    #[test]
    fn allowlist_semantics_follow_the_seed() {
        assert_eq!(config(&[]).expect("off").access, SshAccess::Off);
        let all = config(&[
            ("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", ""),
            ("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT", FP),
        ])
        .expect("all");
        assert_eq!(all.access, SshAccess::AllWorkspaces);
        let some = config(&[
            ("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", "12345, 67890"),
            ("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT", FP),
        ])
        .expect("some");
        assert!(
            some.access.allows(12345.into())
                && some.access.allows(67890.into())
                && !some.access.allows(1.into())
        );
    }

    #[test]
    fn non_numeric_workspace_is_named() {
        let err = config(&[("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", "12345,abc")]).unwrap_err();
        assert_eq!(err.var, "TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES");
        assert!(err.reason.contains("abc"), "{err}");
    }

    #[test]
    fn fingerprint_required_when_ssh_is_on() {
        let err = config(&[("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", "")]).unwrap_err();
        assert_eq!(err.var, "TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT");
        let err = config(&[(
            "TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT",
            "SHA256:nope",
        )])
        .unwrap_err();
        assert_eq!(err.var, "TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT");
    }

    #[test]
    fn keys_management_is_strict_and_warned_about() {
        assert!(!config(&[]).expect("default").keys_management);
        assert!(
            config(&[("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "true")])
                .expect("on")
                .keys_management
        );
        assert_eq!(
            config(&[("TOWER_SSH_KEYS_MANAGEMENT_ENABLED", "ture")])
                .unwrap_err()
                .var,
            "TOWER_SSH_KEYS_MANAGEMENT_ENABLED"
        );
        let c = config(&[
            ("TOWER_DATA_STUDIO_SSH_ALLOWED_WORKSPACES", ""),
            ("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT", FP),
        ])
        .expect("valid");
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("TOWER_SSH_KEYS_MANAGEMENT_ENABLED"))
        );
    }

    #[test]
    fn ssh_address_is_a_host_not_a_url() {
        for bad in ["ssh://host", "host:22", "https://x/y", "a b"] {
            let err = config(&[("TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS", bad)]).unwrap_err();
            assert_eq!(err.var, "TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS", "{bad}");
        }
        let c =
            config(&[("TOWER_DATA_STUDIO_CONNECT_SSH_ADDRESS", "ssh.example.com")]).expect("host");
        assert_eq!(c.ssh_endpoint.host.as_deref(), Some("ssh.example.com"));
        let c = config(&[(
            "TOWER_DATA_STUDIO_CONNECT_URL",
            "https://connect.example.com:8443/x",
        )])
        .expect("url");
        assert_eq!(
            c.ssh_endpoint,
            SshEndpoint {
                host: Some("connect.example.com".into()),
                port: 2222
            }
        );
    }

    #[test]
    fn tokens_are_required_and_not_trivial() {
        let err = Config::from_env(HashMap::<&str, &str>::new()).unwrap_err();
        assert_eq!(err.var, "CONNECT_CONTROL_ADMIN_TOKEN");
        let err = config(&[("CONNECT_CONTROL_PROXY_TOKEN", "short")]).unwrap_err();
        assert_eq!(err.var, "CONNECT_CONTROL_PROXY_TOKEN");
    }

    #[test]
    fn bad_own_settings_name_their_variable() {
        for (var, value) in [
            ("CONNECT_CONTROL_ADDR", "nowhere"),
            ("TOWER_DATA_STUDIO_CONNECT_SSH_PORT", "0"),
            ("TOWER_DATA_STUDIO_CONNECT_SSH_PORT", "70000"),
            ("CONNECT_CONTROL_HEARTBEAT_INTERVAL", "soon"),
            ("CONNECT_CONTROL_MISSED_HEARTBEATS", "0"),
            ("CONNECT_CONTROL_LOG_LEVEL", "loud"),
        ] {
            assert_eq!(
                config(&[(var, value)]).unwrap_err().var,
                var,
                "{var}={value}"
            );
        }
    }
}
