//! SSH public-key signatures: checking the keys users authenticate with,
//! verifying their signatures (RFC 4252 §7, RFC 5656, RFC 8332, RFC 8709),
//! and signing with the proxy's own Ed25519 key.
//!
//! All cryptography is `ring`'s: it is already in the build (russh uses it),
//! its primitives are constant-time and misuse-resistant, it refuses RSA
//! moduli under 2048 bits, and it has no SHA-1 signature path at all, so the
//! legacy `ssh-rsa` algorithm cannot be accepted by accident. This module only
//! translates between SSH's wire forms and ring's, reading untrusted bytes
//! through [`Reader`] so that no input can make it panic.

use super::wire::{self, Put, Reader};
use ring::signature::{self as rs, EcdsaVerificationAlgorithm, RsaParameters, UnparsedPublicKey};

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The key or signature blob does not parse.
    #[error(transparent)]
    Malformed(#[from] wire::Malformed),
    /// The requested public key algorithm is not one we verify.
    #[error("unsupported public key algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The key's type, its curve, or the signature's algorithm is not the
    /// requested algorithm's.
    #[error("{what} {found:?} does not match the requested algorithm {requested:?}")]
    AlgorithmMismatch {
        requested: String,
        /// "key type", "curve" or "signature algorithm".
        what: &'static str,
        found: String,
    },
    /// The RSA modulus is below the 2048-bit minimum.
    #[error("RSA key of {bits} bits is too short; at least 2048 bits are required")]
    RsaTooShort { bits: usize },
    /// The RSA modulus is above the 8192-bit maximum ring verifies.
    #[error("RSA key of {bits} bits is too long; at most 8192 bits are supported")]
    RsaTooLong { bits: usize },
    /// The signature is well-formed but does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The seed and public key given to [`Ed25519Signer`] are not a key pair.
    #[error("Ed25519 private key rejected: {0}")]
    PrivateKeyRejected(String),
}

/// Public-key algorithms a client may authenticate with, in the order the
/// server advertises them in EXT_INFO server-sig-algs.
pub const USER_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

/// Whether `alg` (the public key algorithm name in a userauth request) is one
/// we verify. "ssh-rsa" (SHA-1) is not.
pub fn supported(alg: &str) -> bool {
    USER_ALGORITHMS.contains(&alg)
}

/// A parsed public key, borrowing from its blob.
enum Key<'a> {
    Ed25519(&'a [u8]),
    Ecdsa {
        ring: &'static EcdsaVerificationAlgorithm,
        field: usize,
        point: &'a [u8],
    },
    Rsa {
        params: &'static RsaParameters,
        n: &'a [u8],
        e: &'a [u8],
    },
}

/// Untrusted bytes as text for an error message, cut to a sane length.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(64).collect()
}

fn mismatch(requested: &str, what: &'static str, found: &[u8]) -> SigError {
    SigError::AlgorithmMismatch {
        requested: requested.to_owned(),
        what,
        found: shown(found),
    }
}

/// Parses `blob` as a key that `alg` may sign with.
fn parse_key<'a>(alg: &str, blob: &'a [u8]) -> Result<Key<'a>, SigError> {
    let key_type = match alg {
        "rsa-sha2-256" | "rsa-sha2-512" => "ssh-rsa",
        _ if supported(alg) => alg,
        _ => return Err(SigError::UnsupportedAlgorithm(shown(alg.as_bytes()))),
    };
    let mut r = Reader::new(blob);
    let found = r.string("public key type")?;
    if found != key_type.as_bytes() {
        return Err(mismatch(alg, "key type", found));
    }
    let key = match alg {
        "ssh-ed25519" => {
            let pk = r.string("ed25519 public key")?;
            if pk.len() != 32 {
                return Err(wire::Malformed("ed25519 public key").into());
            }
            Key::Ed25519(pk)
        }
        "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" => {
            let (curve, field, ring): (_, _, &'static EcdsaVerificationAlgorithm) =
                if alg == "ecdsa-sha2-nistp256" {
                    ("nistp256", 32, &rs::ECDSA_P256_SHA256_FIXED)
                } else {
                    ("nistp384", 48, &rs::ECDSA_P384_SHA384_FIXED)
                };
            let found = r.string("ecdsa curve")?;
            if found != curve.as_bytes() {
                return Err(mismatch(alg, "curve", found));
            }
            let point = r.string("ecdsa public point")?;
            // Uncompressed SEC1 form: 0x04 || x || y.
            if point.len() != 1 + 2 * field || point.first() != Some(&4) {
                return Err(wire::Malformed("ecdsa public point").into());
            }
            Key::Ecdsa { ring, field, point }
        }
        _ => {
            let e = r.mpint_positive("rsa exponent")?;
            let n = r.mpint_positive("rsa modulus")?;
            let bits = n
                .first()
                .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
            if bits < 2048 {
                return Err(SigError::RsaTooShort { bits });
            }
            if bits > 8192 {
                return Err(SigError::RsaTooLong { bits });
            }
            let params = if alg == "rsa-sha2-256" {
                &rs::RSA_PKCS1_2048_8192_SHA256
            } else {
                &rs::RSA_PKCS1_2048_8192_SHA512
            };
            Key::Rsa { params, n, e }
        }
    };
    r.end("public key")?;
    Ok(key)
}

/// Checks that `key_blob` (an SSH public key blob, RFC 4253 §6.6 form) is a key
/// of a type that `alg` may sign with (ssh-ed25519 -> "ssh-ed25519" blob;
/// ecdsa-sha2-nistpXXX -> same name blob with matching curve identifier and a
/// valid uncompressed point length; rsa-sha2-256/512 -> "ssh-rsa" blob, modulus
/// of 2048 to 8192 bits).
pub fn check_key(alg: &str, key_blob: &[u8]) -> Result<(), SigError> {
    parse_key(alg, key_blob).map(|_| ())
}

/// Copies `value` into the end of `out`, zero-filling the front; fails if it
/// does not fit.
fn left_pad(out: &mut [u8], value: &[u8], what: &'static str) -> Result<(), wire::Malformed> {
    let start = out
        .len()
        .checked_sub(value.len())
        .ok_or(wire::Malformed(what))?;
    out[start..].copy_from_slice(value);
    Ok(())
}

/// Verifies `signature` (the SSH signature blob: string sig-alg, string
/// sig-bytes) over `data` with the key `key_blob`, for the requested algorithm
/// `alg`. The sig-alg inside the signature must equal `alg`.
///
/// ECDSA signature bytes are `mpint r, mpint s`; RSA signatures shorter than
/// the modulus are zero-padded on the left, as OpenSSH accepts them.
pub fn verify(alg: &str, key_blob: &[u8], data: &[u8], signature: &[u8]) -> Result<(), SigError> {
    let key = parse_key(alg, key_blob)?;
    let mut r = Reader::new(signature);
    let sig_alg = r.string("signature algorithm")?;
    let sig = r.string("signature")?;
    r.end("signature")?;
    if sig_alg != alg.as_bytes() {
        return Err(mismatch(alg, "signature algorithm", sig_alg));
    }
    let verified = match key {
        Key::Ed25519(pk) => {
            if sig.len() != 64 {
                return Err(wire::Malformed("ed25519 signature").into());
            }
            UnparsedPublicKey::new(&rs::ED25519, pk).verify(data, sig)
        }
        Key::Ecdsa { ring, field, point } => {
            let mut r = Reader::new(sig);
            let (sig_r, sig_s) = (r.mpint_positive("ecdsa r")?, r.mpint_positive("ecdsa s")?);
            r.end("ecdsa signature")?;
            let mut fixed = vec![0; 2 * field];
            let (out_r, out_s) = fixed.split_at_mut(field);
            left_pad(out_r, sig_r, "ecdsa r")?;
            left_pad(out_s, sig_s, "ecdsa s")?;
            UnparsedPublicKey::new(ring, point).verify(data, &fixed)
        }
        Key::Rsa { params, n, e } => {
            let mut padded = vec![0; n.len()];
            left_pad(&mut padded, sig, "rsa signature")?;
            rs::RsaPublicKeyComponents { n, e }.verify(params, data, &padded)
        }
    };
    verified.map_err(|_| SigError::BadSignature)
}

/// The proxy's own Ed25519 key, for signing (host key signatures on the
/// user's leg, userauth on the Studio leg).
pub struct Ed25519Signer {
    pair: rs::Ed25519KeyPair,
    blob: Vec<u8>,
}

impl Ed25519Signer {
    /// From the 32-byte seed (private scalar seed as in OpenSSH's key file)
    /// and the 32-byte public key; fails unless they belong together.
    pub fn from_seed_and_public(seed: &[u8], public: &[u8]) -> Result<Self, SigError> {
        let pair = rs::Ed25519KeyPair::from_seed_and_public_key(seed, public)
            .map_err(|e| SigError::PrivateKeyRejected(e.to_string()))?;
        let mut blob = Vec::with_capacity(51);
        blob.put_str("ssh-ed25519");
        blob.put_string(public);
        Ok(Self { pair, blob })
    }

    /// The SSH public key blob: string "ssh-ed25519", string pk.
    pub fn public_blob(&self) -> &[u8] {
        &self.blob
    }

    /// The SSH signature blob over `data`: string "ssh-ed25519", string sig(64).
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(83);
        out.put_str("ssh-ed25519");
        out.put_string(self.pair.sign(data).as_ref());
        out
    }
}

/// Shows only the public key, never the secret.
impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self
            .blob
            .iter()
            .skip(19)
            .map(|b| format!("{b:02x}"))
            .collect();
        f.debug_struct("Ed25519Signer")
            .field("public", &hex)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::digest;
    use std::{fs, path::Path, process::Command};

    /// Runs `ssh-keygen` in `dir` with whitespace-separated `args` (`''` is
    /// an empty argument); a missing or failing `ssh-keygen` fails the test.
    fn keygen(dir: &Path, args: &str) {
        let args: Vec<_> = args
            .split_whitespace()
            .map(|a| a.replace("''", ""))
            .collect();
        let out = Command::new("ssh-keygen")
            .args(&args)
            .current_dir(dir)
            .output();
        let out = out.expect("ssh-keygen must be installed to run this test");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ssh-keygen {args:?} failed: {err}");
    }

    fn base64(text: &str) -> Vec<u8> {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
        for c in text.bytes().filter(|c| ABC.contains(c)) {
            acc = (acc << 6) | ABC.iter().position(|a| *a == c).unwrap_or(0) as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    /// The blob in an OpenSSH `.pub` (or `-cert.pub`) file.
    fn pub_blob(path: &Path) -> Vec<u8> {
        base64(fs::read_to_string(path).unwrap().split(' ').nth(1).unwrap())
    }

    /// Makes a key with `ssh-keygen -t kind -b bits`, signs a file with
    /// `ssh-keygen -Y sign`, and unpacks the SSHSIG into (key blob, signed
    /// data, signature blob).
    fn sshsig(kind: &str, bits: u32, hashalg: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), &format!("-q -t {kind} -b {bits} -N '' -f key"));
        let message = b"message to sign\n";
        fs::write(dir.path().join("msg"), message).unwrap();
        keygen(
            dir.path(),
            &format!("-Y sign -f key -n file -O hashalg={hashalg} msg"),
        );
        let armored = fs::read_to_string(dir.path().join("msg.sig")).unwrap();
        let body: String = armored
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let sshsig = base64(&body);
        let mut r = Reader::new(&sshsig);
        assert_eq!(r.take(6, "magic"), Ok(&b"SSHSIG"[..]));
        assert_eq!(r.u32("version"), Ok(1));
        let mut field = |what| r.string(what).unwrap();
        let (key, namespace, reserved) = (field("key"), field("namespace"), field("reserved"));
        let (hash_alg, signature) = (field("hash algorithm"), field("signature"));
        assert!(r.end("sshsig").is_ok() && hash_alg == hashalg.as_bytes());
        let hash = if hashalg == "sha512" {
            &digest::SHA512
        } else {
            &digest::SHA256
        };
        let mut data = b"SSHSIG".to_vec();
        for field in [
            namespace,
            reserved,
            hash_alg,
            digest::digest(hash, message).as_ref(),
        ] {
            data.put_string(field);
        }
        (key.to_vec(), data, signature.to_vec())
    }

    /// The signature blob with its algorithm name replaced.
    fn relabel(signature: &[u8], alg: &str) -> Vec<u8> {
        let mut r = Reader::new(signature);
        r.string("alg").unwrap();
        let mut out = Vec::new();
        out.put_str(alg);
        out.put_string(r.string("sig").unwrap());
        out
    }

    /// Which part mismatched, for an `AlgorithmMismatch`.
    fn mismatched(result: Result<(), SigError>) -> &'static str {
        match result {
            Err(SigError::AlgorithmMismatch { what, .. }) => what,
            other => panic!("expected AlgorithmMismatch, got {other:?}"),
        }
    }

    /// Every way we know to break a good signature is refused, without panics.
    fn check_refusals(alg: &str, key: &[u8], data: &[u8], sig: &[u8]) {
        let mut flipped = data.to_vec();
        flipped[data.len() / 2] ^= 0x10;
        assert_eq!(verify(alg, key, &flipped, sig), Err(SigError::BadSignature));
        let other = USER_ALGORITHMS.iter().find(|a| **a != alg).unwrap();
        let relabelled = relabel(sig, other);
        assert_eq!(
            mismatched(verify(alg, key, data, &relabelled)),
            "signature algorithm"
        );
        let extra = [sig, &[0]].concat();
        assert!(matches!(
            verify(alg, key, data, &extra),
            Err(SigError::Malformed(_))
        ));
        for n in 0..key.len() {
            assert!(check_key(alg, &key[..n]).is_err(), "{alg}: key prefix {n}");
            assert!(verify(alg, &key[..n], data, sig).is_err());
        }
        for n in 0..sig.len() {
            assert!(
                verify(alg, key, data, &sig[..n]).is_err(),
                "{alg}: prefix {n}"
            );
        }
        for garbage in [
            &[0xff; 8][..],
            &[0; 4],
            b"\0\0\0\x0bssh-ed25519\xff\xff\xff\xff",
        ] {
            assert!(check_key(alg, garbage).is_err() && verify(alg, key, data, garbage).is_err());
        }
    }

    #[test]
    fn verifies_ssh_keygen_signatures() {
        for (kind, bits, hashalg, alg) in [
            ("ed25519", 256, "sha512", "ssh-ed25519"),
            ("ecdsa", 256, "sha256", "ecdsa-sha2-nistp256"),
            ("ecdsa", 384, "sha512", "ecdsa-sha2-nistp384"),
            ("rsa", 2048, "sha512", "rsa-sha2-512"),
        ] {
            let (key, data, sig) = sshsig(kind, bits, hashalg);
            assert_eq!(check_key(alg, &key), Ok(()), "{alg}");
            assert_eq!(verify(alg, &key, &data, &sig), Ok(()), "{alg}");
            check_refusals(alg, &key, &data, &sig);
        }
    }

    /// `ssh-keygen -Y sign` always uses rsa-sha2-512 for RSA keys, but
    /// certificate signing takes `-t rsa-sha2-256`: verify a CA's signature.
    #[test]
    fn verifies_rsa_sha2_256_certificate_signature() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "-q -t rsa -b 2048 -N '' -f ca");
        keygen(dir.path(), "-q -t ed25519 -N '' -f user");
        keygen(dir.path(), "-q -s ca -t rsa-sha2-256 -I id user.pub");
        let cert = pub_blob(&dir.path().join("user-cert.pub"));
        let mut r = Reader::new(&cert);
        for _ in 0..3 {
            r.string("type, nonce, pk").unwrap();
        }
        r.take(12, "serial, type").unwrap();
        for _ in 0..2 {
            r.string("key id, principals").unwrap();
        }
        r.take(16, "validity").unwrap();
        for _ in 0..3 {
            r.string("options, extensions, reserved").unwrap();
        }
        let ca = r.string("signature key").unwrap();
        let data = &cert[..cert.len() - r.rest().len()];
        let sig = r.string("signature").unwrap();
        assert!(r.end("cert").is_ok() && ca == pub_blob(&dir.path().join("ca.pub")));
        assert_eq!(verify("rsa-sha2-256", ca, data, sig), Ok(()));
        check_refusals("rsa-sha2-256", ca, data, sig);
    }

    #[test]
    fn refuses_wrong_key_types_and_weak_algorithms() {
        let (key, data, sig) = sshsig("ecdsa", 256, "sha512");
        let p384 = verify("ecdsa-sha2-nistp384", &key, &data, &sig);
        assert_eq!(mismatched(p384), "key type");
        assert_eq!(mismatched(check_key("rsa-sha2-256", &key)), "key type");
        let mut r = Reader::new(&key);
        let (name, _, point) = (r.string("").unwrap(), r.string("").unwrap(), r.rest());
        let mut other_curve = Vec::new();
        other_curve.put_string(name);
        other_curve.put_str("nistp384");
        other_curve.put_raw(point);
        assert_eq!(
            mismatched(check_key("ecdsa-sha2-nistp256", &other_curve)),
            "curve"
        );

        assert!(!supported("ssh-rsa") && USER_ALGORITHMS.iter().all(|a| supported(a)));
        let (rsa, data, sig) = sshsig("rsa", 2048, "sha512");
        let refused = verify("ssh-rsa", &rsa, &data, &relabel(&sig, "ssh-rsa"));
        assert_eq!(
            refused,
            Err(SigError::UnsupportedAlgorithm("ssh-rsa".into()))
        );
    }

    #[test]
    fn refuses_short_rsa_keys() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "-q -t rsa -b 1024 -N '' -f short");
        let key = pub_blob(&dir.path().join("short.pub"));
        let too_short = Err(SigError::RsaTooShort { bits: 1024 });
        assert_eq!(check_key("rsa-sha2-512", &key), too_short);
        let mut crafted = Vec::new();
        crafted.put_str("ssh-rsa");
        crafted.put_mpint(&[1, 0, 1]);
        crafted.put_mpint(&[0xff; 128]);
        let sig = relabel(&[0, 0, 0, 0, 0, 0, 0, 1, 0], "rsa-sha2-256");
        assert_eq!(verify("rsa-sha2-256", &crafted, b"x", &sig), too_short);
    }

    /// An r or s with a leading zero byte arrives as a shorter mpint and must
    /// be left-padded (about 1 signature in 128); a longer one is refused.
    #[test]
    fn ecdsa_pads_short_integers_and_refuses_long_ones() {
        const ALG: &str = "ecdsa-sha2-nistp256";
        let (rng, signing) = (
            ring::rand::SystemRandom::new(),
            &rs::ECDSA_P256_SHA256_FIXED_SIGNING,
        );
        let pkcs8 = rs::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
        let pair = rs::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
        let mut key = Vec::new();
        key.put_str(ALG);
        key.put_str("nistp256");
        key.put_string(rs::KeyPair::public_key(&pair).as_ref());
        let ssh_sig = |r: &[u8], s: &[u8]| {
            let mut inner = Vec::new();
            inner.put_mpint(r);
            inner.put_mpint(s);
            let mut out = Vec::new();
            out.put_str(ALG);
            out.put_string(&inner);
            out
        };
        let padded = (0u32..4096).find(|i| {
            let fixed = pair.sign(&rng, &i.to_be_bytes()).unwrap();
            let (r, s) = fixed.as_ref().split_at(32);
            assert_eq!(verify(ALG, &key, &i.to_be_bytes(), &ssh_sig(r, s)), Ok(()));
            r[0] == 0 || s[0] == 0
        });
        assert!(padded.is_some(), "no signature with a short r or s");
        let too_long = verify(ALG, &key, b"x", &ssh_sig(&[1; 33], &[1; 32]));
        assert_eq!(too_long, Err(wire::Malformed("ecdsa r").into()));
    }

    #[test]
    fn signer_signs_what_verify_accepts() {
        let seed = [7u8; 32];
        let pair = rs::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let public = rs::KeyPair::public_key(&pair).as_ref().to_vec();
        let signer = Ed25519Signer::from_seed_and_public(&seed, &public).unwrap();
        let (blob, sig) = (signer.public_blob(), signer.sign(b"exchange hash"));
        assert_eq!(verify("ssh-ed25519", blob, b"exchange hash", &sig), Ok(()));
        check_refusals("ssh-ed25519", blob, b"exchange hash", &sig);
        let shown = format!("{signer:?}");
        assert!(shown.contains(&format!("{:02x}", public[0])) && !shown.contains("070707"));
        let wrong = Ed25519Signer::from_seed_and_public(&[8u8; 32], &public);
        assert!(matches!(wrong, Err(SigError::PrivateKeyRejected(_))));
    }
}
