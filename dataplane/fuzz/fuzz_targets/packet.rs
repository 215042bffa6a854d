//! The packet decoder: bytes off the wire through `Opener::wire_len` and
//! `Opener::open`, as `Rx::next_packet` drives them, for `none` and for
//! each AEAD cipher under a fixed key (so the length, alignment and tag
//! checks all run on garbage). A second mode seals a fuzzer-chosen payload
//! and checks that it opens to the same bytes, and that one flipped bit
//! anywhere in the sealed packet is refused.
//!
//! Input: `mode`, `seq` (4 bytes, big-endian), then the rest.
//! - `mode & 3` picks the cipher: none, then `Cipher::ALL` in order;
//! - `mode & 4` clear: the rest is a stream of wire packets;
//! - `mode & 4` set: the rest is `flip_at` (2 bytes), `flip_mask`,
//!   `split` (2 bytes), then a payload sealed as two packets split there.

#![no_main]

use dataplane::ssh::cipher::{Cipher, MAX_PACKET, OVERHEAD, Opener, Sealer};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 64] = [0x42; 64];
const IV: [u8; 12] = [0x24; 12];
/// The most a packet takes on the wire: length, body, tag.
const MAX_WIRE: usize = 4 + MAX_PACKET + 16;

fuzz_target!(|data: &[u8]| {
    let [mode, s0, s1, s2, s3, rest @ ..] = data else {
        return;
    };
    let cipher = match mode & 3 {
        0 => None,
        n => Some(Cipher::ALL[usize::from(n - 1)]),
    };
    let seq = u32::from_be_bytes([*s0, *s1, *s2, *s3]);
    if mode & 4 == 0 {
        let mut stream = rest.to_vec();
        decode_stream(&mut opener(cipher), seq, &mut stream);
    } else {
        round_trip(cipher, seq, rest);
    }
});

fn opener(cipher: Option<Cipher>) -> Opener {
    match cipher {
        None => Opener::None,
        Some(c) => Opener::new(c, &KEY[..c.key_len()], &IV[..c.iv_len()]),
    }
}

fn sealer(cipher: Option<Cipher>) -> Sealer {
    match cipher {
        None => Sealer::None,
        Some(c) => Sealer::new(c, &KEY[..c.key_len()], &IV[..c.iv_len()]),
    }
}

/// What `Rx::next_packet` does with a buffer: the length from the first
/// four bytes, then, once the whole packet is there, open it in place.
/// Returns the number of packets opened.
fn decode_stream(opener: &mut Opener, mut seq: u32, mut buf: &mut [u8]) -> usize {
    let mut opened = 0;
    while let [a, b, c, d, ..] = *buf {
        let Ok(wire) = opener.wire_len(seq, [a, b, c, d]) else {
            break;
        };
        assert!(
            (9..=MAX_WIRE).contains(&wire),
            "wire length {wire} out of range"
        );
        if buf.len() < wire {
            break; // the transport would wait for more bytes
        }
        let (packet, rest) = std::mem::take(&mut buf).split_at_mut(wire);
        let Ok(payload) = opener.open(seq, packet) else {
            break; // the connection ends
        };
        assert!(
            5 <= payload.start && payload.start <= payload.end && payload.end <= packet.len(),
            "payload {payload:?} outside a {wire}-byte packet"
        );
        buf = rest;
        seq = seq.wrapping_add(1);
        opened += 1;
    }
    opened
}

fn round_trip(cipher: Option<Cipher>, seq: u32, rest: &[u8]) {
    let [f0, f1, mask, p0, p1, payload @ ..] = rest else {
        return;
    };
    let payload = &payload[..payload.len().min(MAX_PACKET - OVERHEAD)];
    let split = usize::from(u16::from_be_bytes([*p0, *p1])) % (payload.len() + 1);
    let (one, two) = payload.split_at(split);

    let mut s = sealer(cipher);
    let mut wire = Vec::new();
    s.seal(seq, one, &mut wire);
    let first_len = wire.len();
    s.seal(seq.wrapping_add(1), two, &mut wire);

    // Both open, in order, to exactly what was sealed.
    let mut o = opener(cipher);
    let mut copy = wire.clone();
    let (a, b) = copy.split_at_mut(first_len);
    for (i, (packet, sent)) in [(a, one), (b, two)].into_iter().enumerate() {
        let s = seq.wrapping_add(i as u32);
        let head = [packet[0], packet[1], packet[2], packet[3]];
        assert_eq!(o.wire_len(s, head), Ok(packet.len()), "{cipher:?}");
        let range = o.open(s, packet).expect("a sealed packet opens");
        assert_eq!(&packet[range], sent, "{cipher:?}");
    }

    // One flipped bit in the first packet: never accepted (AEAD only;
    // `none` has nothing to check).
    if cipher.is_none() || *mask == 0 {
        return;
    }
    let at = usize::from(u16::from_be_bytes([*f0, *f1])) % first_len;
    wire[at] ^= mask;
    let mut o = opener(cipher);
    let head = [wire[0], wire[1], wire[2], wire[3]];
    match o.wire_len(seq, head) {
        Err(_) => {}
        Ok(n) if n > wire.len() => {} // would wait for bytes that never verify
        Ok(n) => assert!(
            o.open(seq, &mut wire[..n]).is_err(),
            "{cipher:?} accepted a packet with byte {at} flipped by {mask:#x}"
        ),
    }
}
