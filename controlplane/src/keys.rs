//! Users' SSH public keys as the API receives them: one OpenSSH `.pub` line
//! (`ssh-ed25519 AAAA… comment`), parsed, checked and fingerprinted.
//!
//! Accepted: ed25519, ECDSA (P-256, P-384, P-521) and RSA of at least 2048
//! bits: what the proxy can verify. Refused with a reason: DSA, security-key
//! (`sk-…`) keys, certificates, short RSA, anything unparsable.

use model::Fingerprint;
use russh::keys::ssh_key::{Algorithm, PublicKey};

/// Most bytes of a key line we look at (an RSA-16384 line is ~2.8 KB).
const MAX_LINE: usize = 16 * 1024;
/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: u32 = 2048;

/// A validated public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub fingerprint: Fingerprint,
    pub key_type: String,
    pub comment: String,
    /// Normalised `.pub` line: type, base64 blob and comment.
    pub line: String,
}

/// Why a key line was refused; the message is what the API caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("key is not an OpenSSH public key line (\"ssh-ed25519 AAAA… comment\"): {0}")]
    Unparsable(String),
    #[error(
        "key type {0} is not supported; use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (2048 bits or more)"
    )]
    Unsupported(String),
    #[error("RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")]
    RsaTooShort { bits: u32 },
}

/// Parses and checks one key line.
pub fn parse(line: &str) -> Result<ParsedKey, KeyError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(KeyError::Empty);
    }
    if line.len() > MAX_LINE {
        return Err(KeyError::TooLong);
    }
    let first = line.split_whitespace().next().unwrap_or_default();
    if first.contains("-cert-v01@openssh.com") {
        return Err(KeyError::Unsupported(format!("{first} (certificates)")));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| KeyError::Unparsable(e.to_string()))?;
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => {}
        Algorithm::Rsa { .. } => {
            let bits = key.key_data().rsa().map(|k| k.key_size()).unwrap_or(0);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::RsaTooShort { bits });
            }
        }
        other => return Err(KeyError::Unsupported(other.as_str().to_owned())),
    }
    let blob = key
        .to_bytes()
        .map_err(|e| KeyError::Unparsable(e.to_string()))?;
    let comment = key.comment().as_str_lossy().to_string();
    let mut normalised = key
        .to_openssh()
        .map_err(|e| KeyError::Unparsable(e.to_string()))?;
    if comment.is_empty() {
        normalised = normalised.trim_end().to_owned();
    }
    Ok(ParsedKey {
        fingerprint: Fingerprint::of_key_blob(&blob),
        key_type: key.algorithm().as_str().to_owned(),
        comment,
        line: normalised,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::{KeyPair, KeyType};

    #[test]
    fn real_keys_parse_with_ssh_keygen_fingerprints() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, kind) in [KeyType::Ed25519, KeyType::Ecdsa, KeyType::Rsa2048]
            .into_iter()
            .enumerate()
        {
            let pair = KeyPair::generate(dir.path(), &format!("k{i}"), kind);
            let parsed = parse(&pair.public_line).expect("valid key");
            assert_eq!(parsed.fingerprint.to_string(), pair.fingerprint);
            assert_eq!(parsed.comment, format!("k{i}"));
        }
    }

    #[test]
    fn short_rsa_dsa_and_garbage_are_refused_with_reasons() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = testkit::sh(&format!(
            "ssh-keygen -t rsa -b 1024 -N '' -q -f {0}/short && cat {0}/short.pub",
            dir.path().display()
        ));
        assert_eq!(parse(&short), Err(KeyError::RsaTooShort { bits: 1024 }));
        assert_eq!(parse("  "), Err(KeyError::Empty));
        assert!(matches!(
            parse("ssh-ed25519 !!!! x"),
            Err(KeyError::Unparsable(_))
        ));
        assert!(matches!(parse("hello"), Err(KeyError::Unparsable(_))));
        assert!(matches!(
            parse("ssh-ed25519-cert-v01@openssh.com AAAA x"),
            Err(KeyError::Unsupported(_))
        ));
    }
}
