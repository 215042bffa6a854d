//! Where load goes, and from where. A load generator pointed at the wrong
//! host is a denial-of-service tool, so every address must be on loopback
//! unless the operator says otherwise; and one source address has only
//! ~28,000 ephemeral ports, so connections to a loopback target are spread
//! over 127.0.0.1, 127.0.0.2, ...

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Resolves `HOST:PORT` (or `HOST`, port 22) to one address; refuses a
/// non-loopback address unless `allow_remote`. `what` names the option in
/// errors.
pub fn resolve(what: &str, text: &str, allow_remote: bool) -> Result<SocketAddr, String> {
    let with_port = if text.parse::<IpAddr>().is_ok() || !text.contains(':') {
        // A bare IPv4/IPv6 address or host name.
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:22"),
            _ => format!("{text}:22"),
        }
    } else {
        text.to_owned()
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{what} {text:?}: cannot resolve: {e}"))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        return Err(format!("{what} {text:?}: no address"));
    };
    if !allow_remote && let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "{what} {text:?} resolves to {}, which is not a loopback address; \
             pass --allow-remote to load-test another host",
            remote.ip()
        ));
    }
    Ok(first)
}

/// An `http://HOST:PORT` URL's host must be on loopback unless
/// `allow_remote` (the control-plane API used to create users).
pub fn check_url(what: &str, url: &str, allow_remote: bool) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{what} {url:?}: must start with http:// or https://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    resolve(what, &host_port, allow_remote).map(|_| ())
}

/// `127.0.0.1`, `127.0.0.2`, ...: `n` source addresses; `[None]` (the
/// kernel's choice) when `n <= 1`.
pub fn loopback_sources(n: u32) -> Vec<Option<IpAddr>> {
    if n <= 1 {
        return vec![None];
    }
    (1..=n)
        .map(|i| {
            Some(IpAddr::from([
                127,
                ((i >> 16) & 0xff) as u8,
                ((i >> 8) & 0xff) as u8,
                (i & 0xff) as u8,
            ]))
        })
        .collect()
}

/// Source addresses handed out round-robin.
#[derive(Debug)]
pub struct Sources {
    addrs: Vec<Option<IpAddr>>,
    next: AtomicUsize,
}

impl Sources {
    /// `n` loopback source addresses for a loopback `target`; the kernel's
    /// choice otherwise (other source addresses cannot reach a remote host).
    pub fn new(target: SocketAddr, n: u32) -> Self {
        let addrs = if target.ip().is_loopback() && target.is_ipv4() {
            loopback_sources(n)
        } else {
            vec![None]
        };
        Self {
            addrs,
            next: AtomicUsize::new(0),
        }
    }

    pub fn next(&self) -> Option<IpAddr> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.addrs[i % self.addrs.len()]
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_resolve_and_others_are_refused_by_default() {
        assert_eq!(
            resolve("--target", "127.0.0.1:2222", false).unwrap().port(),
            2222
        );
        assert_eq!(resolve("--target", "127.0.0.1", false).unwrap().port(), 22);
        assert_eq!(
            resolve("--target", "localhost:2222", false).unwrap().port(),
            2222
        );
        assert!(
            resolve("--target", "[::1]:2222", false)
                .unwrap()
                .ip()
                .is_loopback()
        );
        let e = resolve("--target", "10.1.2.3:22", false).unwrap_err();
        assert!(
            e.contains("not a loopback address") && e.contains("--allow-remote"),
            "{e}"
        );
        assert_eq!(resolve("--target", "10.1.2.3:22", true).unwrap().port(), 22);
        assert!(resolve("--target", "127.0.0.1:notaport", false).is_err());
        assert!(check_url("--control-url", "http://127.0.0.1:8080/", false).is_ok());
        assert!(check_url("--control-url", "http://192.0.2.1:8080", false).is_err());
        assert!(check_url("--control-url", "ftp://127.0.0.1", false).is_err());
    }

    #[test]
    fn sources_rotate_over_loopback_and_stay_default_for_remote_targets() {
        let s = Sources::new("127.0.0.1:22".parse().unwrap(), 3);
        let got: Vec<_> = (0..4).map(|_| s.next()).collect();
        assert_eq!(
            got,
            ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"].map(|a| Some(a.parse().unwrap()))
        );
        assert_eq!(
            loopback_sources(300)[299],
            Some("127.0.1.44".parse().unwrap())
        );
        let remote = Sources::new("192.0.2.1:22".parse().unwrap(), 8);
        assert_eq!((remote.len(), remote.next()), (1, None));
    }
}
