//! Reading configuration from environment variables, the same way in every
//! program.
//!
//! Each program's `config.rs` reads its variables through [`Env`], which
//! wraps a [`Source`]: the process environment in production, a map in
//! tests (so tests never mutate the real environment). Every failure is a
//! [`ConfigError`] naming the variable, which `main` turns into exit code 64
//! (`EX_USAGE`).

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Exit code for bad configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Where variables come from.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| (*v).to_owned())
    }
}

/// A configuration variable that could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The variable's name, so the operator knows what to fix.
    pub var: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &str, reason: impl Display) -> Self {
        Self {
            var: var.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// Typed access to a [`Source`].
#[derive(Debug, Clone, Copy)]
pub struct Env<S> {
    source: S,
}

impl<S: Source> Env<S> {
    pub fn new(source: S) -> Self {
        Self { source }
    }

    /// The raw value; `None` when unset. An empty value is returned as set.
    pub fn raw(&self, name: &str) -> Option<String> {
        self.source.get(name)
    }

    /// The value, or `None` when unset or empty.
    pub fn non_empty(&self, name: &str) -> Option<String> {
        self.raw(name).filter(|v| !v.trim().is_empty())
    }

    /// A required value.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.non_empty(name)
            .ok_or_else(|| ConfigError::new(name, "is required but not set"))
    }

    /// Parses the value with `FromStr`; `None` when unset or empty.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.non_empty(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::new(name, format!("invalid value {v:?}: {e}"))),
        }
    }

    /// A duration such as `30s`, `1m`, `1h30m` or `0` (humantime syntax).
    pub fn duration(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        match self.non_empty(name) {
            None => Ok(None),
            Some(v) => humantime::parse_duration(v.trim()).map(Some).map_err(|e| {
                ConfigError::new(
                    name,
                    format!("invalid duration {v:?} ({e}); use e.g. 30s, 1m, 0"),
                )
            }),
        }
    }

    /// A listen address: `host:port` with an IP literal or `localhost`, or
    /// Go-style `:port` for every interface (the seed's `CONNECT_SSH_ADDR=:2222`).
    pub fn listen_addr(&self, name: &str) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(v) = self.non_empty(name) else {
            return Ok(None);
        };
        parse_listen_addr(v.trim()).map(Some).ok_or_else(|| {
            ConfigError::new(
                name,
                format!("invalid listen address {v:?}; use :PORT, IP:PORT or [IPv6]:PORT"),
            )
        })
    }

    /// `true` or `false` (also `1`/`0`, `yes`/`no`); anything else is an error.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        match self.non_empty(name) {
            None => Ok(None),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(true)),
                "false" | "0" | "no" | "off" => Ok(Some(false)),
                _ => Err(ConfigError::new(
                    name,
                    format!("invalid boolean {v:?}; use true or false"),
                )),
            },
        }
    }
}

fn parse_listen_addr(v: &str) -> Option<SocketAddr> {
    if let Some(port) = v.strip_prefix(':') {
        return port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)));
    }
    if let Some(port) = v.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> Env<HashMap<&'static str, &'static str>> {
        Env::new(pairs.iter().copied().collect())
    }

    #[test]
    fn unset_and_empty_mean_absent_for_typed_reads() {
        let e = env(&[("A", ""), ("B", "  ")]);
        assert_eq!(e.parse::<u32>("A"), Ok(None));
        assert_eq!(e.parse::<u32>("B"), Ok(None));
        assert_eq!(e.parse::<u32>("C"), Ok(None));
        assert_eq!(e.raw("A").as_deref(), Some(""));
        assert!(e.required("A").unwrap_err().to_string().starts_with("A: "));
    }

    #[test]
    fn errors_name_the_variable_and_value() {
        let e = env(&[("N", "12x"), ("D", "soon"), ("F", "maybe")]);
        let err = e.parse::<u32>("N").unwrap_err();
        assert_eq!(err.var, "N");
        assert!(err.reason.contains("12x"), "{err}");
        assert!(
            e.duration("D")
                .unwrap_err()
                .to_string()
                .starts_with("D: invalid duration")
        );
        assert!(e.bool("F").is_err());
    }

    #[test]
    fn listen_addresses_accept_go_style_port_only() {
        let e = env(&[
            ("A", ":2222"),
            ("B", "127.0.0.1:0"),
            ("C", "[::1]:22"),
            ("D", "localhost:9"),
            ("E", "host:1"),
            ("F", ":99999"),
        ]);
        assert_eq!(
            e.listen_addr("A"),
            Ok(Some(SocketAddr::from(([0, 0, 0, 0], 2222))))
        );
        assert_eq!(
            e.listen_addr("B"),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
        );
        assert!(matches!(e.listen_addr("C"), Ok(Some(a)) if a.is_ipv6()));
        assert_eq!(
            e.listen_addr("D"),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 9))))
        );
        assert_eq!(e.listen_addr("E").unwrap_err().var, "E");
        assert!(e.listen_addr("F").is_err());
    }

    #[test]
    fn durations_use_humantime_syntax() {
        let e = env(&[("A", "1m"), ("B", "0"), ("C", "1h30m"), ("D", "250ms")]);
        assert_eq!(e.duration("A"), Ok(Some(Duration::from_secs(60))));
        assert_eq!(e.duration("B"), Ok(Some(Duration::ZERO)));
        assert_eq!(e.duration("C"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(e.duration("D"), Ok(Some(Duration::from_millis(250))));
    }
}
