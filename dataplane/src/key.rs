//! The proxy key: the host key users see and the client key Studios accept.
//! Every replica loads the same one (`CONNECT_SSH_KEY_PATH` or
//! `CONNECT_SSH_KEY_VALUE_BASE64`), so users never meet a host-key warning.
//!
//! Refused with the reason (exit 64): unreadable, not an OpenSSH private
//! key, passphrase-protected, a type other than ed25519 (the transport signs
//! with ring's Ed25519), and
//! a key file readable by group or others (as OpenSSH refuses it).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use model::Fingerprint;
use model::env::ConfigError;
use ssh_key::{Algorithm, PrivateKey};

use crate::config::KeySource;
use crate::ssh::sig::Ed25519Signer;

/// Loads and checks the key; errors name the variable at fault.
pub fn load(source: &KeySource) -> Result<PrivateKey, ConfigError> {
    match source {
        KeySource::Path(path) => {
            let var = "CONNECT_SSH_KEY_PATH";
            check_permissions(path).map_err(|e| ConfigError::new(var, e))?;
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(var, format!("cannot read {}: {e}", path.display()))
            })?;
            parse(&text).map_err(|e| ConfigError::new(var, format!("{}: {e}", path.display())))
        }
        KeySource::Base64(value) => {
            let var = "CONNECT_SSH_KEY_VALUE_BASE64";
            let compact: String = value.expose().split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| ConfigError::new(var, format!("not base64: {e}")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| ConfigError::new(var, "decodes to binary, not an OpenSSH key"))?;
            parse(&text).map_err(|e| ConfigError::new(var, e))
        }
    }
}

fn check_permissions(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "permissions {mode:04o} for {} are too open: a private key must not be readable by group or others \
             (chmod 600, or defaultMode: 0400 on a Kubernetes secret volume)",
            path.display()
        ));
    }
    Ok(())
}

fn parse(text: &str) -> Result<PrivateKey, String> {
    let key = PrivateKey::from_openssh(text.trim())
        .map_err(|e| format!("not an OpenSSH private key: {e}"))?;
    if key.is_encrypted() {
        return Err("the key is passphrase-protected; the proxy must load it unattended".into());
    }
    match key.algorithm() {
        Algorithm::Ed25519 => Ok(key),
        other => Err(format!(
            "key type {} is not supported; use ed25519 (ssh-keygen -t ed25519)",
            other.as_str()
        )),
    }
}

/// The signer the transport uses: the host key on users' legs, the client
/// key on Studio legs. Only ed25519 reaches here ([`load`] refuses others).
pub fn signer(key: &PrivateKey) -> Result<Ed25519Signer, ConfigError> {
    let bad = |why: String| ConfigError::new("CONNECT_SSH_KEY_PATH", why);
    let pair = key
        .key_data()
        .ed25519()
        .ok_or_else(|| bad("the proxy key must be ed25519".into()))?;
    Ed25519Signer::from_seed_and_public(pair.private.as_ref(), pair.public.as_ref())
        .map_err(|e| bad(format!("the proxy key is unusable: {e}")))
}

/// The key's `SHA256:` fingerprint, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PrivateKey) -> Fingerprint {
    key.public_key()
        .to_bytes()
        .map(|b| Fingerprint::of_key_blob(&b))
        .unwrap_or_else(|_| Fingerprint::of_key_blob(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::{KeyPair, KeyType};

    #[test]
    fn loads_from_path_and_base64_with_the_ssh_keygen_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pair = KeyPair::generate(dir.path(), "proxy", KeyType::Ed25519);
        let key = load(&KeySource::Path(pair.private.clone())).expect("loads");
        assert_eq!(fingerprint(&key).to_string(), pair.fingerprint);
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(&pair.private).expect("read"));
        let key = load(&KeySource::Base64(model::Secret::new(b64))).expect("loads");
        assert_eq!(fingerprint(&key).to_string(), pair.fingerprint);
    }

    #[test]
    fn refuses_open_permissions_passphrases_and_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pair = KeyPair::generate(dir.path(), "proxy", KeyType::Ed25519);
        std::fs::set_permissions(&pair.private, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let err = load(&KeySource::Path(pair.private.clone())).unwrap_err();
        assert!(err.reason.contains("too open"), "{err}");

        let locked = dir.path().join("locked");
        testkit::sh(&format!(
            "ssh-keygen -t ed25519 -N secret -q -f {}",
            locked.display()
        ));
        let err = load(&KeySource::Path(locked)).unwrap_err();
        assert!(err.reason.contains("passphrase"), "{err}");

        let err = load(&KeySource::Base64(model::Secret::new(
            "bm90IGEga2V5".into(),
        )))
        .unwrap_err();
        assert_eq!(err.var, "CONNECT_SSH_KEY_VALUE_BASE64");
        let err = load(&KeySource::Path(dir.path().join("missing"))).unwrap_err();
        assert_eq!(err.var, "CONNECT_SSH_KEY_PATH");
    }
}
