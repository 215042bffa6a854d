//! Key exchange (RFC 4253 §7-8, RFC 8731, draft-ietf-sshm-mlkem-hybrid-kex):
//! KEXINIT lists and their negotiation, the two exchanges we implement
//! (`mlkem768x25519-sha256`, `curve25519-sha256`) on both sides, the
//! exchange hash and key derivation. Messages are built and parsed here;
//! when to send them is [`crate::ssh::transport`]'s business.
//!
//! Strict KEX (OpenSSH's answer to CVE-2023-48795) is negotiated with the
//! `kex-strict-{c,s}-v00@openssh.com` pseudo-algorithms in the first
//! KEXINIT only.

use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest::{self, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use super::cipher::Cipher;
use super::msg;
use super::wire::{Malformed, Put, Reader};

pub const MLKEM768X25519: &str = "mlkem768x25519-sha256";
pub const CURVE25519: &str = "curve25519-sha256";
pub const CURVE25519_LIBSSH: &str = "curve25519-sha256@libssh.org";
pub const STRICT_C: &str = "kex-strict-c-v00@openssh.com";
pub const STRICT_S: &str = "kex-strict-s-v00@openssh.com";
pub const EXT_INFO_C: &str = "ext-info-c";
pub const EXT_INFO_S: &str = "ext-info-s";

const MLKEM_PK: usize = 1184;
const MLKEM_CT: usize = 1088;

/// Why a key exchange failed; the connection ends with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KexError {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("no common {0} algorithm")]
    NoCommon(&'static str),
    #[error("the peer's key-exchange value is invalid")]
    BadPublic,
    #[error("the system's random number generator failed")]
    Random,
    #[error("the server's host key signature does not verify")]
    BadSignature,
    #[error("the server's host key is not the registered one")]
    HostKey,
}

/// The name lists of one KEXINIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KexInit {
    pub kex: Vec<String>,
    pub host_key: Vec<String>,
    pub cipher_c2s: Vec<String>,
    pub cipher_s2c: Vec<String>,
    pub first_kex_follows: bool,
}

impl KexInit {
    /// Ours. `server` picks which strict/ext-info markers we add; the
    /// markers go only into the first KEXINIT of a connection.
    pub fn ours(server: bool, first: bool, host_key: &[&str]) -> Self {
        let mut kex: Vec<String> = [MLKEM768X25519, CURVE25519, CURVE25519_LIBSSH]
            .map(String::from)
            .to_vec();
        if first {
            kex.push(if server { STRICT_S } else { STRICT_C }.into());
            if server {
                kex.push(EXT_INFO_S.into());
            }
        }
        let ciphers: Vec<String> = Cipher::ALL.iter().map(|c| c.name().to_owned()).collect();
        Self {
            kex,
            host_key: host_key.iter().map(|s| (*s).to_owned()).collect(),
            cipher_c2s: ciphers.clone(),
            cipher_s2c: ciphers,
            first_kex_follows: false,
        }
    }

    /// The message payload (a fresh random cookie).
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(512);
        p.put_u8(msg::KEXINIT);
        let mut cookie = [0u8; 16];
        let _ = SystemRandom::new().fill(&mut cookie);
        p.put_raw(&cookie);
        let list = |v: &[String]| v.join(",");
        p.put_str(&list(&self.kex));
        p.put_str(&list(&self.host_key));
        p.put_str(&list(&self.cipher_c2s));
        p.put_str(&list(&self.cipher_s2c));
        // AEAD ciphers carry their own MAC; we offer no MAC and no compression.
        p.put_str("hmac-sha2-256-etm@openssh.com");
        p.put_str("hmac-sha2-256-etm@openssh.com");
        p.put_str("none");
        p.put_str("none");
        p.put_str("");
        p.put_str("");
        p.put_bool(self.first_kex_follows);
        p.put_u32(0);
        p
    }

    pub fn decode(payload: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload);
        if r.u8("kexinit")? != msg::KEXINIT {
            return Err(Malformed("kexinit"));
        }
        r.take(16, "kexinit cookie")?;
        let mut list = |what| -> Result<Vec<String>, Malformed> {
            Ok(r.name_list(what)?.into_iter().map(String::from).collect())
        };
        let kex = list("kex algorithms")?;
        let host_key = list("host key algorithms")?;
        let cipher_c2s = list("ciphers")?;
        let cipher_s2c = list("ciphers")?;
        for what in [
            "macs",
            "macs",
            "compression",
            "compression",
            "languages",
            "languages",
        ] {
            list(what)?;
        }
        let first_kex_follows = r.bool("first_kex_packet_follows")?;
        r.u32("kexinit reserved")?;
        Ok(Self {
            kex,
            host_key,
            cipher_c2s,
            cipher_s2c,
            first_kex_follows,
        })
    }
}

/// What one key exchange agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub kex: &'static str,
    pub host_key: String,
    pub c2s: Cipher,
    pub s2c: Cipher,
    /// Both sides sent the strict-KEX marker (meaningful in the first KEX).
    pub strict: bool,
    /// The client asked for EXT_INFO.
    pub ext_info: bool,
    /// The peer sent a guessed KEX packet that guessed wrong: drop it.
    pub ignore_guess: bool,
}

fn first_common<'a>(client: &'a [String], server: &[String]) -> Option<&'a String> {
    client.iter().find(|c| server.contains(c))
}

/// RFC 4253 §7.1: the client's first choice the server also supports.
pub fn negotiate(client: &KexInit, server: &KexInit) -> Result<Negotiated, KexError> {
    let kex = first_common(&client.kex, &server.kex)
        .and_then(|k| match k.as_str() {
            MLKEM768X25519 => Some(MLKEM768X25519),
            CURVE25519 => Some(CURVE25519),
            CURVE25519_LIBSSH => Some(CURVE25519_LIBSSH),
            _ => None,
        })
        .ok_or(KexError::NoCommon("key exchange"))?;
    let host_key = first_common(&client.host_key, &server.host_key)
        .ok_or(KexError::NoCommon("host key"))?
        .clone();
    let cipher = |c: &[String], s: &[String]| {
        first_common(c, s)
            .and_then(|n| Cipher::from_name(n))
            .ok_or(KexError::NoCommon("cipher"))
    };
    let c2s = cipher(&client.cipher_c2s, &server.cipher_c2s)?;
    let s2c = cipher(&client.cipher_s2c, &server.cipher_s2c)?;
    let has = |v: &[String], name: &str| v.iter().any(|x| x == name);
    let ignore_guess = (client.first_kex_follows || server.first_kex_follows)
        && (client.kex.first() != server.kex.first()
            || client.host_key.first() != server.host_key.first());
    Ok(Negotiated {
        kex,
        host_key,
        c2s,
        s2c,
        strict: has(&client.kex, STRICT_C) && has(&server.kex, STRICT_S),
        ext_info: has(&client.kex, EXT_INFO_C),
        ignore_guess,
    })
}

/// The shared secret as the exchange hash encodes it: an mpint for
/// curve25519, a string for the ML-KEM hybrid.
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The inputs of the exchange hash besides the two ephemeral values.
pub struct HashInput<'a> {
    pub client_version: &'a [u8],
    pub server_version: &'a [u8],
    pub client_kexinit: &'a [u8],
    pub server_kexinit: &'a [u8],
    pub host_key: &'a [u8],
}

fn exchange_hash(input: &HashInput<'_>, q_c: &[u8], q_s: &[u8], k: &Secret) -> Vec<u8> {
    let mut h = Vec::with_capacity(3000);
    h.put_string(input.client_version);
    h.put_string(input.server_version);
    h.put_string(input.client_kexinit);
    h.put_string(input.server_kexinit);
    h.put_string(input.host_key);
    h.put_string(q_c);
    h.put_string(q_s);
    h.put_raw(&k.0);
    digest::digest(&SHA256, &h).as_ref().to_vec()
}

fn x25519_pair(rng: &SystemRandom) -> Result<(EphemeralPrivateKey, [u8; 32]), KexError> {
    let private = EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| KexError::BadPublic)?;
    let public = private
        .compute_public_key()
        .map_err(|_| KexError::BadPublic)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(public.as_ref());
    Ok((private, out))
}

/// Fresh randomness for ML-KEM (libcrux takes its seeds as arguments).
fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], KexError> {
    let mut out = [0u8; N];
    rng.fill(&mut out).map_err(|_| KexError::Random)?;
    Ok(out)
}

fn x25519_agree(private: EphemeralPrivateKey, peer: &[u8]) -> Result<Vec<u8>, KexError> {
    // ring refuses an all-zero result (low-order points), as RFC 8731 asks.
    agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, peer), |k| {
        k.to_vec()
    })
    .map_err(|_| KexError::BadPublic)
}

fn mpint_secret(raw: &[u8]) -> Secret {
    let mut k = Vec::with_capacity(40);
    k.put_mpint(raw);
    Secret(k)
}

fn hybrid_secret(k_pq: &[u8], k_cl: &[u8]) -> Secret {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(k_pq);
    ctx.update(k_cl);
    let mut k = Vec::with_capacity(36);
    k.put_string(ctx.finish().as_ref());
    Secret(k)
}

/// Server side: answers the client's `KEX_ECDH_INIT`/`KEX_HYBRID_INIT`
/// payload. Returns our ephemeral value, the shared secret and the hash.
pub fn server_exchange(
    kex: &str,
    init: &[u8],
    input: &HashInput<'_>,
) -> Result<(Vec<u8>, Secret, Vec<u8>), KexError> {
    let mut r = Reader::new(init);
    if r.u8("kex init")? != msg::KEX_ECDH_INIT {
        return Err(Malformed("kex init").into());
    }
    let q_c = r.string("kex init value")?;
    let rng = SystemRandom::new();
    let (q_s, k) = if kex == MLKEM768X25519 {
        if q_c.len() != MLKEM_PK + 32 {
            return Err(KexError::BadPublic);
        }
        let ek = MlKem768PublicKey::try_from(&q_c[..MLKEM_PK]).map_err(|_| KexError::BadPublic)?;
        // FIPS 203's encapsulation key check (every coefficient reduced).
        if !mlkem768::validate_public_key(&ek) {
            return Err(KexError::BadPublic);
        }
        let (ct, k_pq) = mlkem768::encapsulate(&ek, random(&rng)?);
        let (private, public) = x25519_pair(&rng)?;
        let k_cl = x25519_agree(private, &q_c[MLKEM_PK..])?;
        let mut q_s = Vec::with_capacity(MLKEM_CT + 32);
        q_s.extend_from_slice(ct.as_slice());
        q_s.extend_from_slice(&public);
        (q_s, hybrid_secret(k_pq.as_slice(), &k_cl))
    } else {
        if q_c.len() != 32 {
            return Err(KexError::BadPublic);
        }
        let (private, public) = x25519_pair(&rng)?;
        let k = x25519_agree(private, q_c)?;
        (public.to_vec(), mpint_secret(&k))
    };
    let h = exchange_hash(input, q_c, &q_s, &k);
    Ok((q_s, k, h))
}

/// Client side: our ephemeral secret until the server's reply arrives.
pub enum ClientKex {
    Hybrid {
        dk: Box<MlKem768PrivateKey>,
        x: EphemeralPrivateKey,
        q_c: Vec<u8>,
    },
    Curve {
        x: EphemeralPrivateKey,
        q_c: Vec<u8>,
    },
}

impl std::fmt::Debug for ClientKex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKex(..)")
    }
}

impl ClientKex {
    /// Starts the exchange; returns the state and the INIT payload.
    pub fn start(kex: &str) -> Result<(Self, Vec<u8>), KexError> {
        let rng = SystemRandom::new();
        let (x, public) = x25519_pair(&rng)?;
        let state = if kex == MLKEM768X25519 {
            let (dk, ek) = mlkem768::generate_key_pair(random(&rng)?).into_parts();
            let mut q_c = Vec::with_capacity(MLKEM_PK + 32);
            q_c.extend_from_slice(ek.as_slice());
            q_c.extend_from_slice(&public);
            Self::Hybrid {
                dk: Box::new(dk),
                x,
                q_c,
            }
        } else {
            Self::Curve {
                x,
                q_c: public.to_vec(),
            }
        };
        let mut p = Vec::with_capacity(1300);
        p.put_u8(msg::KEX_ECDH_INIT);
        p.put_string(state.q_c());
        Ok((state, p))
    }

    fn q_c(&self) -> &[u8] {
        match self {
            Self::Hybrid { q_c, .. } | Self::Curve { q_c, .. } => q_c,
        }
    }

    /// Finishes with the server's reply. `input.host_key` is ignored (the
    /// reply carries it); the caller checks the host key and the signature.
    pub fn finish(self, reply: &[u8], input: &HashInput<'_>) -> Result<ServerReply, KexError> {
        let mut r = Reader::new(reply);
        if r.u8("kex reply")? != msg::KEX_ECDH_REPLY {
            return Err(Malformed("kex reply").into());
        }
        let host_key = r.string("host key")?;
        let q_s = r.string("kex reply value")?;
        let signature = r.string("exchange signature")?.to_vec();
        let (k, q_c) = match self {
            Self::Hybrid { dk, x, q_c } => {
                if q_s.len() != MLKEM_CT + 32 {
                    return Err(KexError::BadPublic);
                }
                let ct = MlKem768Ciphertext::try_from(&q_s[..MLKEM_CT])
                    .map_err(|_| KexError::BadPublic)?;
                let k_pq = mlkem768::decapsulate(&dk, &ct);
                let k_cl = x25519_agree(x, &q_s[MLKEM_CT..])?;
                (hybrid_secret(&k_pq, &k_cl), q_c)
            }
            Self::Curve { x, q_c } => (mpint_secret(&x25519_agree(x, q_s)?), q_c),
        };
        let full = HashInput { host_key, ..*input };
        let hash = exchange_hash(&full, &q_c, q_s, &k);
        Ok(ServerReply {
            host_key: host_key.to_vec(),
            secret: k,
            hash,
            signature,
        })
    }
}

/// What the client learns from the server's exchange reply.
#[derive(Debug)]
pub struct ServerReply {
    /// The server's host key blob.
    pub host_key: Vec<u8>,
    pub secret: Secret,
    /// The exchange hash H.
    pub hash: Vec<u8>,
    /// The server's signature over H.
    pub signature: Vec<u8>,
}

/// Keys for one direction.
pub struct DirectionKeys {
    pub cipher: Cipher,
    pub iv: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirectionKeys({})", self.cipher.name())
    }
}

fn derive_one(k: &Secret, h: &[u8], letter: u8, session_id: &[u8], len: usize) -> Vec<u8> {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(&k.0);
    ctx.update(h);
    ctx.update(&[letter]);
    ctx.update(session_id);
    let mut out = ctx.finish().as_ref().to_vec();
    while out.len() < len {
        let mut ctx = digest::Context::new(&SHA256);
        ctx.update(&k.0);
        ctx.update(h);
        ctx.update(&out);
        out.extend_from_slice(ctx.finish().as_ref());
    }
    out.truncate(len);
    out
}

/// RFC 4253 §7.2: (client to server, server to client) keys.
pub fn derive(
    k: &Secret,
    h: &[u8],
    session_id: &[u8],
    n: &Negotiated,
) -> (DirectionKeys, DirectionKeys) {
    let c2s = DirectionKeys {
        cipher: n.c2s,
        iv: derive_one(k, h, b'A', session_id, n.c2s.iv_len()),
        key: derive_one(k, h, b'C', session_id, n.c2s.key_len()),
    };
    let s2c = DirectionKeys {
        cipher: n.s2c,
        iv: derive_one(k, h, b'B', session_id, n.s2c.iv_len()),
        key: derive_one(k, h, b'D', session_id, n.s2c.key_len()),
    };
    (c2s, s2c)
}
