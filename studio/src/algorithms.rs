//! The algorithms connect-client offers: the proxy's policy, nothing
//! weaker (ssh-audit checks both the same way, `tests/hardening.rs`).
//!
//! - key exchange: `mlkem768x25519-sha256` (post-quantum hybrid) first,
//!   then `curve25519-sha256` (and its libssh name) for older clients; no
//!   finite-field Diffie-Hellman, no NIST curves. Strict KEX (Terrapin) and
//!   `ext-info-s` are markers, not exchanges.
//! - ciphers: AES-GCM (several GB/s with AES-NI, what the proxy prefers) and
//!   chacha20-poly1305; all AEAD, so no encrypt-and-MAC and no CTR.
//! - MACs: only encrypt-then-MAC SHA-2 ones, listed because the KEXINIT
//!   must name some; an AEAD cipher never uses them.
//! - host key and signature algorithms: no `ssh-rsa` (SHA-1). The same
//!   list is the `server-sig-algs` russh announces, and
//!   [`signature_allowed`] refuses a SHA-1 user signature the client
//!   sends anyway.

use std::borrow::Cow;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{Preferred, cipher, compression, kex, mac};

const KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

const CIPHERS: &[cipher::Name] = &[
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::CHACHA20_POLY1305,
];

const MACS: &[mac::Name] = &[mac::HMAC_SHA256_ETM, mac::HMAC_SHA512_ETM];

const KEYS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
];

/// What the server offers, in order of preference.
pub fn preferred() -> Preferred {
    Preferred {
        kex: Cow::Borrowed(KEX),
        key: Cow::Borrowed(KEYS),
        host_key_certificates: Cow::Borrowed(&[]),
        cipher: Cow::Borrowed(CIPHERS),
        mac: Cow::Borrowed(MACS),
        compression: Cow::Borrowed(&[compression::NONE]),
    }
}

/// Whether a user-authentication signature algorithm is acceptable: any
/// of [`KEYS`], never `ssh-rsa` with SHA-1.
pub fn signature_allowed(algorithm: &Algorithm) -> bool {
    KEYS.contains(algorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_rsa_signatures_are_refused() {
        assert!(!signature_allowed(&Algorithm::Rsa { hash: None }));
        assert!(signature_allowed(&Algorithm::Ed25519));
        assert!(signature_allowed(&Algorithm::Rsa {
            hash: Some(HashAlg::Sha256)
        }));
    }
}
