//! Publickey authentication's untrusted input:
//!
//! - `mode & 1` clear: the rest is a USERAUTH_REQUEST payload, read by the
//!   proxy's own parser (`userauth::parse_request`), then the key checked
//!   and the signature verified over the session identifier and the signed
//!   prefix, as the proxy does;
//! - `mode & 1` set: `alg` (an index into the supported names, or past
//!   them "ssh-rsa" and a name we do not know), then `u16` lengths of the
//!   key blob and of the signature, then the blob, the signature and the
//!   signed data: `check_key` and `verify` on arbitrary bytes.
//!
//! Checks: neither panics; a signature never verifies with a key that
//! `check_key` refuses, nor for an algorithm we do not support.

#![no_main]

use dataplane::ssh::sig::{self, USER_ALGORITHMS};
use dataplane::ssh::wire::{Put, Reader};
use dataplane::userauth::{self, Request};
use libfuzzer_sys::fuzz_target;

/// The session identifier the seeds' signatures cover.
const SESSION_ID: [u8; 32] = [0x5a; 32];
/// Algorithms tried in the second mode beyond [`USER_ALGORITHMS`].
const UNSUPPORTED: [&str; 2] = ["ssh-rsa", "ssh-dss"];

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        request(rest);
    } else {
        chosen(rest);
    }
});

/// A USERAUTH_REQUEST payload (RFC 4252 §7), as the proxy reads one.
fn request(p: &[u8]) {
    let Ok(Request::Publickey {
        alg, blob, signed, ..
    }) = userauth::parse_request(p)
    else {
        return;
    };
    let key_ok = sig::supported(alg) && sig::check_key(alg, blob).is_ok();
    let Some((signature, covered)) = signed else {
        return;
    };
    assert!(
        covered <= p.len(),
        "the signed prefix is inside the request"
    );
    let mut data = Vec::with_capacity(covered + 40);
    data.put_string(&SESSION_ID);
    data.put_raw(&p[..covered]);
    check(alg, blob, &data, signature, key_ok);
}

/// An algorithm the fuzzer picks, and arbitrary key, signature and data.
fn chosen(rest: &[u8]) -> Option<()> {
    let (&pick, rest) = rest.split_first()?;
    let names = USER_ALGORITHMS.len() + UNSUPPORTED.len();
    let pick = usize::from(pick) % names;
    let alg = match USER_ALGORITHMS.get(pick) {
        Some(alg) => alg,
        None => UNSUPPORTED[pick - USER_ALGORITHMS.len()],
    };
    let mut r = Reader::new(rest);
    let head = r.take(4, "lengths").ok()?;
    let blob_len = usize::from(u16::from_be_bytes([head[0], head[1]]));
    let sig_len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let rest = r.rest();
    let blob = &rest[..blob_len.min(rest.len())];
    let rest = &rest[blob.len()..];
    let signature = &rest[..sig_len.min(rest.len())];
    let data = &rest[signature.len()..];
    let key_ok = sig::check_key(alg, blob).is_ok();
    assert!(
        !key_ok || sig::supported(alg),
        "check_key accepted a key for unsupported {alg}"
    );
    check(alg, blob, data, signature, key_ok);
    Some(())
}

fn check(alg: &str, blob: &[u8], data: &[u8], signature: &[u8], key_ok: bool) {
    let verified = sig::verify(alg, blob, data, signature);
    if verified.is_ok() {
        assert!(
            sig::supported(alg),
            "a signature verified for unsupported {alg}"
        );
        assert!(key_ok, "a signature verified with a key check_key refuses");
    }
}
