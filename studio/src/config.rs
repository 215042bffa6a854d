//! connect-client's configuration: every `CONNECT_CLIENT_*` variable, parsed
//! once into [`Config`].
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CONNECT_CLIENT_SSH_KEY_FINGERPRINT` | required | the proxy key's `SHA256:` fingerprint; the only key accepted |
//! | `CONNECT_CLIENT_SSH_ADDR` | `0.0.0.0:2223` | where the SSH server listens (`:PORT` or `IP:PORT`) |
//! | `CONNECT_CLIENT_HOST_KEY_PATH` | generated | OpenSSH private host key; else a fresh ed25519 key |
//! | `CONNECT_CLIENT_KEEPALIVE_INTERVAL` | `30s` | send a keepalive after this much silence; `0` disables |
//! | `CONNECT_CLIENT_KEEPALIVE_MAX` | `3` | unanswered keepalives before the connection is dropped |
//! | `CONNECT_CLIENT_IDLE_TIMEOUT` | `0` (off) | drop a connection after this long without traffic |
//! | `CONNECT_CLIENT_MAX_CHANNELS` | `64` | channels one connection may hold open |
//! | `CONNECT_CLIENT_HANDSHAKE_TIMEOUT` | `15s` | accept to authenticated; a connection not authenticated by then is closed |
//! | `CONNECT_CLIENT_MAX_STARTUPS` | `128` | unauthenticated connections at once; past it the oldest is closed |
//! | `CONNECT_CLIENT_ACCEPT_ENV` | `LANG,LC_*,TERM,COLORTERM` | `env` requests applied (names, `*` at the end matches a prefix); others get a failure reply; empty: none |
//! | `CONNECT_CLIENT_AGENT_FORWARDING` | `true` | `false` refuses `auth-agent-req@openssh.com` |
//! | `CONNECT_CLIENT_TCP_FORWARDING` | `true` | `false` refuses `direct-tcpip` (administratively prohibited) and `tcpip-forward` |
//! | `CONNECT_CLIENT_LOG_LEVEL` | `info` | off, error, warn, info, debug, trace |
//! | `CONNECT_CLIENT_CONTROL_URL` | unset | connect-control's `http://` URL; set to register and heartbeat |
//! | `CONNECT_CLIENT_SESSION_ID` | required with a control URL | this Studio's session id |
//! | `CONNECT_CLIENT_TOKEN` | required with a control URL | the session's registration token |
//! | `CONNECT_CLIENT_ADVERTISE_ADDR` | the listen address | `host:port` the proxy dials; required when listening on all interfaces |
//!
//! With a control URL the fingerprint comes from registration, so
//! `CONNECT_CLIENT_SSH_KEY_FINGERPRINT` is optional (until the first
//! registration succeeds, no key is accepted unless it is set).
//!
//! `TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT`, the platform's name for
//! the same fingerprint, is accepted when `CONNECT_CLIENT_SSH_KEY_FINGERPRINT`
//! is unset, so a Studio image can be handed the platform's variable as is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use model::env::{ConfigError, Env, Source};
use model::logging::LogLevel;
use model::{Fingerprint, Secret, SessionId};

use crate::accept_env::AcceptEnv;

pub const FINGERPRINT_VAR: &str = "CONNECT_CLIENT_SSH_KEY_FINGERPRINT";
const PLATFORM_FINGERPRINT_VAR: &str = "TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT";

/// Everything connect-client needs to start, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub ssh_addr: SocketAddr,
    /// The only client key the server accepts, until registration says
    /// otherwise. Invariant: `Some` unless `registration` is.
    pub proxy_fingerprint: Option<Fingerprint>,
    pub host_key_path: Option<PathBuf>,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_max: usize,
    pub idle_timeout: Option<Duration>,
    pub max_channels: usize,
    /// From accept until authenticated, at most this long.
    pub handshake_timeout: Duration,
    /// Unauthenticated connections at once. Invariant: at least 1.
    pub max_startups: usize,
    /// The `env` requests a session may apply.
    pub accept_env: AcceptEnv,
    /// Whether `auth-agent-req@openssh.com` is granted.
    pub agent_forwarding: bool,
    /// Whether `direct-tcpip` and `tcpip-forward` are served.
    pub tcp_forwarding: bool,
    pub log_level: LogLevel,
    pub registration: Option<Registration>,
}

/// How to register with the control plane.
#[derive(Debug, Clone)]
pub struct Registration {
    /// `http://host:port`, without a trailing slash.
    pub control_url: String,
    pub session: SessionId,
    pub token: Secret,
    /// `host:port` the proxy dials; `None`: the bound listen address.
    pub advertise: Option<String>,
}

impl Config {
    pub fn from_env(source: impl Source) -> Result<Self, ConfigError> {
        let env = Env::new(source);
        let ssh_addr = env
            .listen_addr("CONNECT_CLIENT_SSH_ADDR")?
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 2223)));
        let registration = registration(&env, ssh_addr)?;

        let proxy_fingerprint = match env.non_empty(FINGERPRINT_VAR) {
            Some(v) => Some((FINGERPRINT_VAR, v)),
            None => env
                .non_empty(PLATFORM_FINGERPRINT_VAR)
                .map(|v| (PLATFORM_FINGERPRINT_VAR, v)),
        };
        let proxy_fingerprint = match proxy_fingerprint {
            Some((var, raw)) => {
                Some(raw.trim().parse::<Fingerprint>().map_err(|e| {
                    ConfigError::new(var, format!("invalid fingerprint {raw:?}: {e}"))
                })?)
            }
            None if registration.is_some() => None,
            None => {
                return Err(ConfigError::new(
                    FINGERPRINT_VAR,
                    "is required (or CONNECT_CLIENT_CONTROL_URL to get it by registration): the SHA256 \
                     fingerprint of the connect-proxy key (`ssh-keygen -lf proxy-key`), e.g. \
                     SHA256:NEu6MAPGJpImFJ3raQzv6+NubCPy/92hqR+CVyMjKvM",
                ));
            }
        };

        let keepalive_interval = env
            .duration("CONNECT_CLIENT_KEEPALIVE_INTERVAL")?
            .unwrap_or(Duration::from_secs(30));
        let keepalive_max = env
            .parse::<usize>("CONNECT_CLIENT_KEEPALIVE_MAX")?
            .unwrap_or(3);
        if keepalive_max == 0 {
            return Err(ConfigError::new(
                "CONNECT_CLIENT_KEEPALIVE_MAX",
                "must be at least 1",
            ));
        }
        let idle_timeout = env
            .duration("CONNECT_CLIENT_IDLE_TIMEOUT")?
            .unwrap_or(Duration::ZERO);
        let max_channels = env
            .parse::<usize>("CONNECT_CLIENT_MAX_CHANNELS")?
            .unwrap_or(64);
        if max_channels < 1 {
            return Err(ConfigError::new(
                "CONNECT_CLIENT_MAX_CHANNELS",
                "must be at least 1",
            ));
        }

        let handshake_timeout = env
            .duration("CONNECT_CLIENT_HANDSHAKE_TIMEOUT")?
            .unwrap_or(Duration::from_secs(15));
        if handshake_timeout.is_zero() {
            return Err(ConfigError::new(
                "CONNECT_CLIENT_HANDSHAKE_TIMEOUT",
                "must be more than 0: an unauthenticated connection may not stay forever",
            ));
        }
        let max_startups = env
            .parse::<usize>("CONNECT_CLIENT_MAX_STARTUPS")?
            .unwrap_or(128);
        if max_startups < 1 {
            return Err(ConfigError::new(
                "CONNECT_CLIENT_MAX_STARTUPS",
                "must be at least 1",
            ));
        }
        let accept_env = match env.raw("CONNECT_CLIENT_ACCEPT_ENV") {
            Some(list) => list
                .parse::<AcceptEnv>()
                .map_err(|e| ConfigError::new("CONNECT_CLIENT_ACCEPT_ENV", e))?,
            None => AcceptEnv::default(),
        };

        Ok(Self {
            ssh_addr,
            handshake_timeout,
            max_startups,
            accept_env,
            agent_forwarding: env.bool("CONNECT_CLIENT_AGENT_FORWARDING")?.unwrap_or(true),
            tcp_forwarding: env.bool("CONNECT_CLIENT_TCP_FORWARDING")?.unwrap_or(true),
            proxy_fingerprint,
            host_key_path: env
                .non_empty("CONNECT_CLIENT_HOST_KEY_PATH")
                .map(PathBuf::from),
            keepalive_interval: non_zero(keepalive_interval),
            keepalive_max,
            idle_timeout: non_zero(idle_timeout),
            max_channels,
            log_level: env
                .parse::<LogLevel>("CONNECT_CLIENT_LOG_LEVEL")?
                .unwrap_or(LogLevel::Info),
            registration,
        })
    }
}

fn registration<S: Source>(
    env: &Env<S>,
    ssh_addr: SocketAddr,
) -> Result<Option<Registration>, ConfigError> {
    let url_var = "CONNECT_CLIENT_CONTROL_URL";
    let Some(url) = env.non_empty(url_var) else {
        return Ok(None);
    };
    let url = url.trim().trim_end_matches('/').to_owned();
    if url.starts_with("https://") {
        return Err(ConfigError::new(
            url_var,
            "https is not supported by this build; reach connect-control over http inside the cluster",
        ));
    }
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        return Err(ConfigError::new(
            url_var,
            format!("{url:?} is not an http:// URL"),
        ));
    }
    let session = env
        .parse::<SessionId>("CONNECT_CLIENT_SESSION_ID")?
        .ok_or_else(|| {
            ConfigError::new(
                "CONNECT_CLIENT_SESSION_ID",
                "is required with CONNECT_CLIENT_CONTROL_URL",
            )
        })?;
    let token = Secret::new(env.required("CONNECT_CLIENT_TOKEN")?.trim().to_owned());
    let advertise_var = "CONNECT_CLIENT_ADVERTISE_ADDR";
    let advertise = match env.non_empty(advertise_var) {
        Some(a) => {
            Some(model::endpoint::parse(&a).map_err(|e| ConfigError::new(advertise_var, e))?)
        }
        None if ssh_addr.ip().is_unspecified() => {
            return Err(ConfigError::new(
                advertise_var,
                format!(
                    "is required when CONNECT_CLIENT_SSH_ADDR listens on all interfaces ({ssh_addr}): \
                     the proxy needs an address it can reach"
                ),
            ));
        }
        None => None,
    };
    Ok(Some(Registration {
        control_url: url,
        session,
        token,
        advertise,
    }))
}

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FP: &str = "SHA256:NEu6MAPGJpImFJ3raQzv6+NubCPy/92hqR+CVyMjKvM";

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(pairs.iter().copied().collect::<HashMap<_, _>>())
    }

    #[test]
    fn defaults() {
        let c = config(&[(FINGERPRINT_VAR, FP)]).expect("valid");
        assert_eq!(c.ssh_addr, "0.0.0.0:2223".parse().expect("addr"));
        assert_eq!(
            c.proxy_fingerprint.map(|f| f.to_string()).as_deref(),
            Some(FP)
        );
        assert_eq!(c.keepalive_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.handshake_timeout, Duration::from_secs(15));
        assert_eq!(c.max_startups, 128);
        assert!(c.agent_forwarding && c.tcp_forwarding);
        assert!(c.accept_env.allows("LC_ALL") && !c.accept_env.allows("LD_PRELOAD"));
    }

    #[test]
    fn missing_fingerprint_names_the_variable() {
        let err = config(&[]).unwrap_err();
        assert_eq!(err.var, FINGERPRINT_VAR);
    }

    #[test]
    fn malformed_fingerprint_names_the_variable() {
        let err = config(&[(FINGERPRINT_VAR, "MD5:aa:bb")]).unwrap_err();
        assert_eq!(err.var, FINGERPRINT_VAR);
        let err = config(&[(PLATFORM_FINGERPRINT_VAR, "SHA256:short")]).unwrap_err();
        assert_eq!(err.var, PLATFORM_FINGERPRINT_VAR);
    }

    #[test]
    fn platform_variable_is_a_fallback() {
        let c = config(&[(PLATFORM_FINGERPRINT_VAR, FP)]).expect("valid");
        assert_eq!(
            c.proxy_fingerprint.map(|f| f.to_string()).as_deref(),
            Some(FP)
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("CONNECT_CLIENT_SSH_ADDR", "studio:2223"),
            ("CONNECT_CLIENT_KEEPALIVE_INTERVAL", "often"),
            ("CONNECT_CLIENT_KEEPALIVE_MAX", "0"),
            ("CONNECT_CLIENT_IDLE_TIMEOUT", "-1s"),
            ("CONNECT_CLIENT_MAX_CHANNELS", "many"),
            ("CONNECT_CLIENT_LOG_LEVEL", "verbose"),
            ("CONNECT_CLIENT_HANDSHAKE_TIMEOUT", "0"),
            ("CONNECT_CLIENT_MAX_STARTUPS", "0"),
            ("CONNECT_CLIENT_ACCEPT_ENV", "LANG,LC_*X"),
            ("CONNECT_CLIENT_AGENT_FORWARDING", "maybe"),
            ("CONNECT_CLIENT_TCP_FORWARDING", "perhaps"),
        ] {
            let err = config(&[(FINGERPRINT_VAR, FP), (var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn registration_needs_session_token_and_a_reachable_address() {
        let url = ("CONNECT_CLIENT_CONTROL_URL", "http://control:8080/");
        let base = [
            url,
            ("CONNECT_CLIENT_SESSION_ID", "01ac8894"),
            ("CONNECT_CLIENT_TOKEN", "t0k3n"),
        ];
        let err = config(&base).unwrap_err();
        assert_eq!(
            err.var, "CONNECT_CLIENT_ADVERTISE_ADDR",
            "0.0.0.0 is not reachable: {err}"
        );
        let c = config(&[
            base[0],
            base[1],
            base[2],
            ("CONNECT_CLIENT_SSH_ADDR", "10.1.2.3:2223"),
        ])
        .expect("valid");
        let r = c.registration.expect("registration");
        assert_eq!(r.control_url, "http://control:8080");
        assert_eq!(r.advertise, None, "the bound address, known once listening");
        assert!(c.proxy_fingerprint.is_none(), "comes from registration");
        assert_eq!(config(&[url]).unwrap_err().var, "CONNECT_CLIENT_SESSION_ID");
        assert_eq!(
            config(&[url, base[1]]).unwrap_err().var,
            "CONNECT_CLIENT_TOKEN"
        );
        let https = ("CONNECT_CLIENT_CONTROL_URL", "https://control");
        assert_eq!(
            config(&[https, base[1], base[2]]).unwrap_err().var,
            "CONNECT_CLIENT_CONTROL_URL"
        );
        let bad = ("CONNECT_CLIENT_ADVERTISE_ADDR", "http://x:1");
        assert_eq!(
            config(&[url, base[1], base[2], bad]).unwrap_err().var,
            "CONNECT_CLIENT_ADVERTISE_ADDR"
        );
    }

    #[test]
    fn zero_disables_timers() {
        let c = config(&[
            (FINGERPRINT_VAR, FP),
            ("CONNECT_CLIENT_KEEPALIVE_INTERVAL", "0"),
            ("CONNECT_CLIENT_IDLE_TIMEOUT", "10m"),
        ])
        .expect("valid");
        assert_eq!(c.keepalive_interval, None);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(600)));
    }
}
