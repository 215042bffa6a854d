//! SSH public key fingerprints, byte for byte as `ssh-keygen -lf` prints
//! them: `SHA256:` followed by the unpadded standard base64 of the SHA-256
//! of the key blob, for example `SHA256:Usp026a/6YXYwGertDiDHxv834Xqf2gb/MYFKk3d/G0`.
//!
//! The key blob is the SSH wire encoding of the public key: the base64 field
//! in the middle of an `authorized_keys` or `.pub` line, decoded. Keys are
//! named by fingerprint in logs, in the control plane's records and in what
//! users paste from `ssh-keygen`, so every one of them must produce exactly
//! the same text; the tests compare against the real `ssh-keygen`.
//!
//! Parsing accepts the `SHA256:` form only. MD5 fingerprints (`MD5:aa:bb:…`)
//! are refused with an error saying so: MD5 is broken, and OpenSSH stopped
//! showing it by default in 2015. Base64 padding (`=`) after the 43
//! characters is tolerated, because some tools add it and it is unambiguous;
//! [`Display`](fmt::Display) always writes the unpadded form.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::display::Base64Display;
use base64::engine::general_purpose::{
    STANDARD_NO_PAD, STANDARD_NO_PAD_INDIFFERENT, STANDARD_PAD_INDIFFERENT,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every fingerprint's text starts with.
const PREFIX: &str = "SHA256:";

/// The SHA-256 fingerprint of an SSH public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

/// Why a fingerprint could not be read or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// The text does not start with `SHA256:`.
    #[error("a key fingerprint starts with \"SHA256:\", as `ssh-keygen -lf` prints it")]
    MissingPrefix,
    /// The text is an MD5 fingerprint.
    #[error(
        "MD5 fingerprints are not supported; use the SHA256: form that `ssh-keygen -lf` prints"
    )]
    Md5NotSupported,
    /// What follows `SHA256:` is not base64.
    #[error("the fingerprint after \"SHA256:\" is not valid base64: {0}")]
    BadBase64(base64::DecodeError),
    /// What follows `SHA256:` is base64, but not of 32 bytes.
    #[error("a SHA256 fingerprint is 32 bytes, but this one decodes to {len}")]
    WrongLength {
        /// The number of bytes decoded.
        len: usize,
    },
    /// The public key line is empty or blank.
    #[error("the public key line is empty")]
    EmptyKeyLine,
    /// The public key line has a key type but no key data after it.
    #[error("the public key line has no key data after the key type")]
    MissingKeyBlob,
    /// The key data of the public key line is not base64.
    #[error("the key data in the public key line is not valid base64: {0}")]
    BadKeyBlobBase64(base64::DecodeError),
    /// The key data is too short to hold the key type it must start with.
    #[error("the key data in the public key line is truncated: it does not hold a key type")]
    TruncatedKeyBlob,
    /// The key type written on the line is not the one inside the key data.
    #[error("the public key line says {line:?} but its key data is of type {blob:?}")]
    KeyTypeMismatch {
        /// The key type written as the line's first field.
        line: String,
        /// The key type inside the key data, lossily decoded as UTF-8.
        blob: String,
    },
}

impl Fingerprint {
    /// The fingerprint of a key blob: the SSH wire encoding of a public key.
    pub fn of_key_blob(blob: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, blob);
        let mut bytes = [0u8; 32];
        // A SHA-256 digest is always 32 bytes.
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }

    /// The fingerprint of an OpenSSH public key line, as found in a `.pub`
    /// file: `ssh-ed25519 AAAAC3Nza... comment`.
    ///
    /// The comment is optional and ignored, as is surrounding whitespace
    /// (so a whole one-key `.pub` file may be passed). `authorized_keys`
    /// options before the key type are not supported. The blob must start
    /// with the key type written on the line, which catches lines whose
    /// fields were pasted from different keys.
    pub fn of_public_key_line(line: &str) -> Result<Fingerprint, FingerprintError> {
        let mut fields = line.split_whitespace();
        let key_type = fields.next().ok_or(FingerprintError::EmptyKeyLine)?;
        let encoded = fields.next().ok_or(FingerprintError::MissingKeyBlob)?;
        // OpenSSH writes padding here; tolerate its absence all the same.
        let blob = STANDARD_PAD_INDIFFERENT
            .decode(encoded)
            .map_err(FingerprintError::BadKeyBlobBase64)?;
        let blob_type = leading_ssh_string(&blob).ok_or(FingerprintError::TruncatedKeyBlob)?;
        if blob_type != key_type.as_bytes() {
            return Err(FingerprintError::KeyTypeMismatch {
                line: key_type.to_owned(),
                blob: String::from_utf8_lossy(blob_type).into_owned(),
            });
        }
        Ok(Fingerprint::of_key_blob(&blob))
    }

    /// The 32 bytes of the SHA-256 digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The first SSH `string` of a blob (RFC 4251 section 5: a big-endian `u32`
/// length, then that many bytes), or `None` if the blob is too short.
fn leading_ssh_string(blob: &[u8]) -> Option<&[u8]> {
    let (len, rest) = blob.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    rest.get(..len)
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Reads `SHA256:` and 43 base64 characters, optionally padded with `=`.
    fn from_str(s: &str) -> Result<Fingerprint, FingerprintError> {
        let Some(encoded) = s.strip_prefix(PREFIX) else {
            return Err(if s.starts_with("MD5:") {
                FingerprintError::Md5NotSupported
            } else {
                FingerprintError::MissingPrefix
            });
        };
        let bytes = STANDARD_NO_PAD_INDIFFERENT
            .decode(encoded)
            .map_err(FingerprintError::BadBase64)?;
        let bytes = <[u8; 32]>::try_from(bytes)
            .map_err(|bytes| FingerprintError::WrongLength { len: bytes.len() })?;
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}",
            Base64Display::new(&self.0, &STANDARD_NO_PAD)
        )
    }
}

/// Shows the fingerprint as `ssh-keygen` does, not as 32 numbers.
impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fingerprint, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
