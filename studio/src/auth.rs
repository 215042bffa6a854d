//! The one authentication rule of a Studio: the client key must be the
//! connect-proxy's key, identified by its SHA256 fingerprint.
//!
//! Every decision is logged as one JSON line that the platform's docs show
//! operators how to read:
//! `{"msg":"SSH fingerprint auth result","authorized":false,"expected":"SHA256:…","incoming":"SHA256:…"}`.

use model::Fingerprint;
use russh::keys::PublicKey;
use tracing::{info, warn};

/// Whether `key` is the proxy key, without logging (for the signature-less
/// probe; the decision is logged once, by [`check`] or on refusal).
pub fn matches(expected: Option<Fingerprint>, key: &PublicKey) -> bool {
    let Some(expected) = expected else {
        return false;
    };
    key.to_bytes()
        .is_ok_and(|blob| Fingerprint::of_key_blob(&blob) == expected)
}

/// Whether `key` is the proxy key; logs the decision.
pub fn check(
    expected: Option<Fingerprint>,
    user: &str,
    peer: std::net::SocketAddr,
    key: &PublicKey,
) -> bool {
    let Ok(blob) = key.to_bytes() else {
        warn!(user, "could not encode an offered public key");
        return false;
    };
    let incoming = Fingerprint::of_key_blob(&blob);
    let authorized = expected == Some(incoming);
    let expected = expected
        .map(|e| e.to_string())
        .unwrap_or_else(|| "none (not registered yet)".into());
    info!(
        authorized,
        expected = %expected,
        incoming = %incoming,
        user,
        peer = %peer,
        "SSH fingerprint auth result"
    );
    authorized
}
