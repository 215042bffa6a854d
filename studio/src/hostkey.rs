//! The Studio's SSH host key: loaded from `CONNECT_CLIENT_HOST_KEY_PATH`, or
//! a fresh ed25519 key for this run. The control plane pins its fingerprint
//! at registration, so a generated key is safe: a restarted Studio registers
//! its new key before the proxy connects again.

use std::path::Path;

use model::Fingerprint;
use ring::rand::{SecureRandom, SystemRandom};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;

use crate::error::Error;

/// Loads the OpenSSH private key at `path`.
pub fn load(path: &Path) -> Result<PrivateKey, Error> {
    let fail = |reason: String| Error::HostKey {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let key = PrivateKey::from_openssh(text.trim()).map_err(|e| fail(e.to_string()))?;
    if key.is_encrypted() {
        return Err(fail(
            "the key is passphrase-protected; a host key must be readable unattended".into(),
        ));
    }
    Ok(key)
}

/// A new ed25519 key from the system's secure random source.
pub fn generate() -> Result<PrivateKey, Error> {
    let mut seed = [0u8; 32];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| Error::Internal("the system random source failed".into()))?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

/// The `SHA256:` fingerprint of a key's public half, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PrivateKey) -> Result<Fingerprint, Error> {
    let blob = key
        .public_key()
        .to_bytes()
        .map_err(|e| Error::Internal(format!("cannot encode host public key: {e}")))?;
    Ok(Fingerprint::of_key_blob(&blob))
}
