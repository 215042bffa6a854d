//! A Studio's network endpoint, `host:port`, as connect-client registers it
//! and the proxy dials it: an IPv4 literal, a bracketed IPv6 literal or a
//! DNS name, and a port from 1 to 65535. Never a URL.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A validated `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The host as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0:?} is a URL; an endpoint is host:port")]
    Url(String),
    #[error("{0:?} has no port; an endpoint is host:port")]
    MissingPort(String),
    #[error("{0:?} has an invalid port; use 1-65535")]
    BadPort(String),
    #[error("{0:?} has an invalid host; use an IP address or a DNS name")]
    BadHost(String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains("://") || s.contains('/') {
            return Err(EndpointError::Url(s.to_owned()));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| EndpointError::MissingPort(s.to_owned()))?;
            v6.parse::<Ipv6Addr>()
                .map_err(|_| EndpointError::BadHost(s.to_owned()))?;
            (v6, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| EndpointError::MissingPort(s.to_owned()))?;
            if host.parse::<Ipv4Addr>().is_err() && !is_dns_name(host) {
                return Err(EndpointError::BadHost(s.to_owned()));
            }
            (host, port)
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| EndpointError::BadPort(s.to_owned()))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Validates `s` and returns its canonical text.
pub fn parse(s: &str) -> Result<String, EndpointError> {
    s.trim().parse::<Endpoint>().map(|e| e.to_string())
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ips_and_names() {
        assert_eq!(parse("10.0.0.1:2223"), Ok("10.0.0.1:2223".into()));
        assert_eq!(parse("[::1]:22"), Ok("[::1]:22".into()));
        assert_eq!(
            parse("studio-01ac8894.ns.svc.cluster.local:2223"),
            Ok("studio-01ac8894.ns.svc.cluster.local:2223".into())
        );
    }

    #[test]
    fn refuses_urls_missing_ports_and_bad_hosts() {
        assert!(matches!(parse("http://x:1"), Err(EndpointError::Url(_))));
        assert!(matches!(parse("host"), Err(EndpointError::MissingPort(_))));
        assert!(matches!(parse("host:0"), Err(EndpointError::BadPort(_))));
        assert!(matches!(
            parse("host:99999"),
            Err(EndpointError::BadPort(_))
        ));
        assert!(matches!(
            parse("bad host:22"),
            Err(EndpointError::BadHost(_))
        ));
        assert!(matches!(parse(":22"), Err(EndpointError::BadHost(_))));
        assert!(matches!(parse("::1:22"), Err(EndpointError::BadHost(_))));
    }
}
