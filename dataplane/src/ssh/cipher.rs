//! Packet protection for one direction of one leg (RFC 4253 §6, OpenSSH's
//! PROTOCOL.chacha20poly1305 and RFC 5647 as OpenSSH implements it):
//! `none` until the first NEWKEYS, then AES-GCM or chacha20-poly1305, all
//! from ring. Packets are opened and sealed in place.
//!
//! Wire layout of one packet: `u32 packet_length`, `u8 padding_length`,
//! payload, padding, then the 16-byte tag (none: no tag). AES-GCM sends the
//! length in clear as additional data and increments the nonce's low 64
//! bits per packet; chacha20-poly1305 encrypts the length with its own key
//! and uses the leg's sequence number as the nonce.

use ring::aead::chacha20_poly1305_openssh as chacha;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

/// The largest `packet_length` accepted on either leg: OpenSSH's 256 KiB.
pub const MAX_PACKET: usize = 256 * 1024;
/// Room a sealed packet needs beyond its payload: length, padding length,
/// at most 4 + 16 bytes of padding, and the tag.
pub const OVERHEAD: usize = 4 + 1 + 20 + TAG;
const TAG: usize = 16;

/// The ciphers we negotiate, in our order of preference: AES-GCM runs at
/// several GB/s with AES-NI; chacha20-poly1305 for clients that prefer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes256Gcm,
    Aes128Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    pub const ALL: [Cipher; 3] = [Self::Aes256Gcm, Self::Aes128Gcm, Self::Chacha20Poly1305];

    pub fn name(self) -> &'static str {
        match self {
            Self::Aes256Gcm => "aes256-gcm@openssh.com",
            Self::Aes128Gcm => "aes128-gcm@openssh.com",
            Self::Chacha20Poly1305 => "chacha20-poly1305@openssh.com",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Key bytes to derive (RFC 4253 §7.2 letters C/D).
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes256Gcm => 32,
            Self::Aes128Gcm => 16,
            Self::Chacha20Poly1305 => chacha::KEY_LEN,
        }
    }

    /// IV bytes to derive (letters A/B); chacha uses none.
    pub fn iv_len(self) -> usize {
        match self {
            Self::Aes256Gcm | Self::Aes128Gcm => 12,
            Self::Chacha20Poly1305 => 0,
        }
    }
}

/// A packet that cannot be accepted; the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet length {0} out of range")]
    Length(usize),
    #[error("packet failed authentication (corrupted, or keys out of step)")]
    Mac,
    #[error("bad padding")]
    Padding,
}

pub struct Gcm {
    key: LessSafeKey,
    /// Fixed 4 bytes then the 64-bit invocation counter (RFC 5647 §7.1).
    iv: [u8; 12],
}

impl Gcm {
    fn new(cipher: Cipher, key: &[u8], iv: &[u8]) -> Self {
        let alg = match cipher {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            _ => &aead::AES_256_GCM,
        };
        let mut fixed = [0u8; 12];
        fixed.copy_from_slice(&iv[..12]);
        Self {
            key: LessSafeKey::new(
                UnboundKey::new(alg, key).expect("AES key of the negotiated length"),
            ),
            iv: fixed,
        }
    }

    fn next_nonce(&mut self) -> Nonce {
        let nonce = Nonce::assume_unique_for_key(self.iv);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&self.iv[4..]);
        let next = u64::from_be_bytes(counter).wrapping_add(1);
        self.iv[4..].copy_from_slice(&next.to_be_bytes());
        nonce
    }
}

/// Opens packets arriving on a leg.
#[allow(
    clippy::large_enum_variant,
    reason = "one per leg direction, used on every packet: no indirection"
)]
pub enum Opener {
    None,
    Gcm(Gcm),
    Chacha(chacha::OpeningKey),
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "Opener(none)",
            Self::Gcm(_) => "Opener(aes-gcm)",
            Self::Chacha(_) => "Opener(chacha20-poly1305)",
        })
    }
}

impl Opener {
    pub fn new(cipher: Cipher, key: &[u8], iv: &[u8]) -> Self {
        match cipher {
            Cipher::Chacha20Poly1305 => {
                let mut k = [0u8; chacha::KEY_LEN];
                k.copy_from_slice(&key[..chacha::KEY_LEN]);
                Self::Chacha(chacha::OpeningKey::new(&k))
            }
            gcm => Self::Gcm(Gcm::new(gcm, key, iv)),
        }
    }

    /// The number of bytes the whole packet takes on the wire, from its
    /// first four bytes; checks the length's range and block alignment.
    pub fn wire_len(&self, seq: u32, first: [u8; 4]) -> Result<usize, PacketError> {
        let (len, tag, align, aligned) = match self {
            Self::None => {
                let n = u32::from_be_bytes(first) as usize;
                (n, 0, 8, n + 4)
            }
            Self::Gcm(_) => {
                let n = u32::from_be_bytes(first) as usize;
                (n, TAG, 16, n)
            }
            Self::Chacha(k) => {
                // Like GCM, the length is outside the aligned part.
                let n = u32::from_be_bytes(k.decrypt_packet_length(seq, first)) as usize;
                (n, TAG, 8, n)
            }
        };
        if !(5..=MAX_PACKET).contains(&len) || aligned % align != 0 {
            return Err(PacketError::Length(len));
        }
        Ok(4 + len + tag)
    }

    /// Authenticates and decrypts `packet` (the whole wire packet) in place
    /// and returns the payload's range within it.
    pub fn open(
        &mut self,
        seq: u32,
        packet: &mut [u8],
    ) -> Result<std::ops::Range<usize>, PacketError> {
        let body_end = match self {
            Self::None => packet.len(),
            Self::Gcm(g) => {
                let body_end = packet.len() - TAG;
                let (head, rest) = packet.split_at_mut(4);
                let (body, tag) = rest.split_at_mut(body_end - 4);
                let nonce = g.next_nonce();
                let tag = aead::Tag::try_from(&tag[..]).map_err(|_| PacketError::Mac)?;
                g.key
                    .open_in_place_separate_tag(nonce, Aad::from(&head[..]), tag, body, 0..)
                    .map_err(|_| PacketError::Mac)?;
                body_end
            }
            Self::Chacha(k) => {
                let body_end = packet.len() - TAG;
                let (data, tag) = packet.split_at_mut(body_end);
                let mut t = [0u8; TAG];
                t.copy_from_slice(tag);
                k.open_in_place(seq, data, &t)
                    .map_err(|_| PacketError::Mac)?;
                body_end
            }
        };
        let padding = usize::from(packet[4]);
        if padding < 4 || 5 + padding > body_end {
            return Err(PacketError::Padding);
        }
        Ok(5..body_end - padding)
    }
}

/// Seals packets leaving on a leg.
#[allow(
    clippy::large_enum_variant,
    reason = "one per leg direction, used on every packet: no indirection"
)]
pub enum Sealer {
    None,
    Gcm(Gcm),
    Chacha(chacha::SealingKey),
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "Sealer(none)",
            Self::Gcm(_) => "Sealer(aes-gcm)",
            Self::Chacha(_) => "Sealer(chacha20-poly1305)",
        })
    }
}

impl Sealer {
    pub fn new(cipher: Cipher, key: &[u8], iv: &[u8]) -> Self {
        match cipher {
            Cipher::Chacha20Poly1305 => {
                let mut k = [0u8; chacha::KEY_LEN];
                k.copy_from_slice(&key[..chacha::KEY_LEN]);
                Self::Chacha(chacha::SealingKey::new(&k))
            }
            gcm => Self::Gcm(Gcm::new(gcm, key, iv)),
        }
    }

    /// Appends `payload` to `out` as one sealed packet.
    pub fn seal(&mut self, seq: u32, payload: &[u8], out: &mut Vec<u8>) {
        let (align, counted) = match self {
            Self::Gcm(_) => (16, 1 + payload.len()),
            Self::Chacha(_) => (8, 1 + payload.len()),
            Self::None => (8, 4 + 1 + payload.len()),
        };
        let mut padding = align - counted % align;
        if padding < 4 {
            padding += align;
        }
        let len = 1 + payload.len() + padding;
        let start = out.len();
        out.reserve(4 + len + TAG);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(padding as u8);
        out.extend_from_slice(payload);
        out.resize(start + 4 + len, 0);
        match self {
            Self::None => {}
            Self::Gcm(g) => {
                let nonce = g.next_nonce();
                let (head, body) = out[start..].split_at_mut(4);
                let tag = g
                    .key
                    .seal_in_place_separate_tag(nonce, Aad::from(&head[..]), body)
                    .expect("SSH packets are far below AES-GCM's limit");
                out.extend_from_slice(tag.as_ref());
            }
            Self::Chacha(k) => {
                let mut tag = [0u8; TAG];
                k.seal_in_place(seq, &mut out[start..], &mut tag);
                out.extend_from_slice(&tag);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(cipher: Option<Cipher>) {
        let key = [7u8; 64];
        let iv = [9u8; 12];
        let (mut s, mut o) = match cipher {
            None => (Sealer::None, Opener::None),
            Some(c) => (
                Sealer::new(c, &key[..c.key_len()], &iv),
                Opener::new(c, &key[..c.key_len()], &iv),
            ),
        };
        for (seq, size) in [0usize, 1, 15, 16, 17, 32768, 100_000]
            .into_iter()
            .enumerate()
        {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut wire = Vec::new();
            s.seal(seq as u32, &payload, &mut wire);
            let first = [wire[0], wire[1], wire[2], wire[3]];
            assert_eq!(
                o.wire_len(seq as u32, first),
                Ok(wire.len()),
                "{cipher:?} {size}"
            );
            let mut copy = wire.clone();
            let range = o.open(seq as u32, &mut copy).expect("opens");
            assert_eq!(&copy[range], &payload[..]);
            if let Some(c) = cipher {
                // Any flipped bit is refused (checked on a fresh opener
                // brought to the same nonce).
                wire[6] ^= 1;
                let mut o2 = Opener::new(c, &key[..c.key_len()], &iv);
                for _ in 0..seq {
                    if let Opener::Gcm(g) = &mut o2 {
                        g.next_nonce();
                    }
                }
                assert_eq!(o2.open(seq as u32, &mut wire), Err(PacketError::Mac));
            }
        }
    }

    #[test]
    fn every_cipher_round_trips_and_refuses_tampering() {
        round_trip(None);
        for c in Cipher::ALL {
            round_trip(Some(c));
        }
    }

    #[test]
    fn lengths_out_of_range_are_refused() {
        let o = Opener::None;
        assert!(
            o.wire_len(0, (MAX_PACKET as u32 + 4).to_be_bytes())
                .is_err()
        );
        assert!(o.wire_len(0, 3u32.to_be_bytes()).is_err());
        assert!(o.wire_len(0, 13u32.to_be_bytes()).is_err(), "unaligned");
    }
}
