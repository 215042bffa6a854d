//! Bearer tokens: the configured admin and proxy tokens, and the per-session
//! registration tokens handed to Studios.
//!
//! Registration tokens are 32 random bytes, URL-safe base64, returned once
//! at session creation and stored only as their SHA-256. Comparisons hash
//! both sides first and compare the hashes in constant time.

use axum::http::HeaderMap;
use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::ApiError;

/// SHA-256 of a token.
pub fn hash(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether two token hashes are equal, in time independent of where they
/// differ.
pub fn hashes_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

/// A new registration token and its hash.
pub fn generate() -> Result<(String, [u8; 32]), ApiError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::Internal("system random source failed".into()))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let h = hash(&token);
    Ok((token, h))
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the request's bearer token against `expected_hash`.
pub fn require(headers: &HeaderMap, expected_hash: &[u8; 32]) -> Result<(), ApiError> {
    match bearer(headers) {
        Some(t) if hashes_match(&hash(t), expected_hash) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_unique_and_verify() {
        let (a, ha) = generate().expect("token");
        let (b, _) = generate().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            format!("Bearer {a}").parse().expect("header"),
        );
        assert!(require(&headers, &ha).is_ok());
        headers.insert(
            "authorization",
            format!("bearer {b}").parse().expect("header"),
        );
        assert!(matches!(
            require(&headers, &ha),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            require(&HeaderMap::new(), &ha),
            Err(ApiError::Unauthorized)
        ));
    }
}
