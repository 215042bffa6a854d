//! chacha20-poly1305@openssh.com, the cipher OpenSSH clients prefer: the
//! proxy's implementation (ring's `chacha20_poly1305_openssh`, through
//! `dataplane::ssh::cipher::Sealer`) against RustCrypto's (`ssh-cipher`:
//! the `chacha20` and `poly1305` crates with their runtime-detected SIMD
//! backends), sealing one 32 KiB CHANNEL_DATA packet each: length
//! encrypted under K_1, body under K_2, Poly1305 over both. Both include
//! copying the payload into the packet buffer, as the relay does.
#![forbid(unsafe_code)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::ssh::cipher::{Cipher, Sealer};
use ssh_cipher::aead::{AeadInOut, KeyInit};
use ssh_cipher::cipher::{KeyIvInit, StreamCipher};
use ssh_cipher::{ChaCha20, ChaCha20Poly1305, ChaChaKey, ChaChaNonce};

const PAYLOAD: usize = 32 * 1024;

/// Seals `payload` as one packet with RustCrypto's primitives, framed as
/// the relay frames it: length, padding length, payload, padding (8-byte
/// aligned, at least 4; zeros), then the tag.
fn seal_rustcrypto(
    k1: &ChaChaKey,
    body: &ChaCha20Poly1305,
    seq: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let mut nonce = ChaChaNonce::default();
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    let padding = 8 - (1 + payload.len()) % 8;
    let padding = if padding < 4 { padding + 8 } else { padding };
    let len = (1 + payload.len() + padding) as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_be_bytes());
    out.push(padding as u8);
    out.extend_from_slice(payload);
    out.resize(start + 4 + len as usize, 0);
    let (head, rest) = out[start..].split_at_mut(4);
    ChaCha20::new(k1, &nonce).apply_keystream(head);
    let tag = body
        .encrypt_inout_detached(&nonce, head, rest.into())
        .expect("packet far below the limit");
    out.extend_from_slice(&tag);
}

fn chacha(c: &mut Criterion) {
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| i as u8).collect();
    let key = [7u8; 64];
    let mut group = c.benchmark_group("chacha20_poly1305_seal");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));

    let mut ring = Sealer::new(Cipher::Chacha20Poly1305, &key, &[]);
    let mut out = Vec::with_capacity(PAYLOAD + 64);
    let mut seq = 0u32;
    group.bench_function(BenchmarkId::new("ring", PAYLOAD), |b| {
        b.iter(|| {
            out.clear();
            ring.seal(seq, &payload, &mut out);
            seq = seq.wrapping_add(1);
            black_box(out.len())
        })
    });

    let k1 = ChaChaKey::try_from(&key[..32]).expect("32 bytes");
    let body = ChaCha20Poly1305::new(&ChaChaKey::try_from(&key[32..]).expect("32 bytes"));
    // Both must produce the same packet, or the comparison means nothing.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    Sealer::new(Cipher::Chacha20Poly1305, &key, &[]).seal(5, &payload, &mut a);
    seal_rustcrypto(&k1, &body, 5, &payload, &mut b);
    assert!(a == b, "ring and RustCrypto seal differently");
    let mut seq = 0u32;
    group.bench_function(BenchmarkId::new("rustcrypto", PAYLOAD), |b| {
        b.iter(|| {
            out.clear();
            seal_rustcrypto(&k1, &body, seq, &payload, &mut out);
            seq = seq.wrapping_add(1);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, chacha);
criterion_main!(benches);
