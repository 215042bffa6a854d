//! Why an operation failed, classified into a small set of kinds so the
//! report can count them ("handshake: disconnected" ×12), with the detail
//! kept for the log.

use std::io;

/// A failed operation: `kind` is what the report counts, `detail` what a
/// person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct Failure {
    pub kind: String,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    /// An I/O error at `stage` ("connect", "bind", ...).
    pub fn io(stage: &str, e: &io::Error) -> Self {
        Self::new(format!("{stage}: {}", io_kind(e)), e.to_string())
    }

    /// A russh error at `stage` ("handshake", "authentication", "exec").
    pub fn russh(stage: &str, e: &russh::Error) -> Self {
        let kind = match e {
            russh::Error::IO(io) => io_kind(io),
            russh::Error::Disconnect
            | russh::Error::HUP
            | russh::Error::SendError
            | russh::Error::RecvError => "disconnected",
            russh::Error::ChannelOpenFailure(_) => "channel refused",
            russh::Error::NoCommonAlgo { .. } => "no common algorithm",
            russh::Error::ConnectionTimeout
            | russh::Error::KeepaliveTimeout
            | russh::Error::InactivityTimeout
            | russh::Error::Elapsed(_) => "timed out",
            russh::Error::RequestDenied => "request denied",
            _ => "protocol error",
        };
        Self::new(format!("{stage}: {kind}"), e.to_string())
    }

    /// The operation did not finish within its time limit.
    pub fn timeout(stage: &str, limit: std::time::Duration) -> Self {
        Self::new(
            format!("{stage}: timed out"),
            format!("no answer within {}", humantime::format_duration(limit)),
        )
    }
}

fn io_kind(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(23 | 24) => return "too many open files", // ENFILE, EMFILE
        Some(99) => return "source ports exhausted",   // EADDRNOTAVAIL
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "connection reset",
        io::ErrorKind::UnexpectedEof => "disconnected",
        io::ErrorKind::TimedOut => "timed out",
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => "source ports exhausted",
        _ => "i/o error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_by_what_an_operator_would_fix() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            Failure::io("connect", &refused).kind,
            "connect: connection refused"
        );
        let emfile = io::Error::from_raw_os_error(24);
        assert_eq!(
            Failure::io("connect", &emfile).kind,
            "connect: too many open files"
        );
        let ports = io::Error::from_raw_os_error(99);
        assert_eq!(
            Failure::io("bind", &ports).kind,
            "bind: source ports exhausted"
        );
    }

    #[test]
    fn russh_errors_keep_the_stage() {
        let f = Failure::russh("handshake", &russh::Error::Disconnect);
        assert_eq!(f.kind, "handshake: disconnected");
        let f = Failure::timeout("exec", std::time::Duration::from_secs(30));
        assert_eq!(f.kind, "exec: timed out");
        assert_eq!(f.detail, "no answer within 30s");
    }
}
