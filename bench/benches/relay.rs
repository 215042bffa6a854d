//! The relay's per-packet work, without sockets: a CHANNEL_DATA packet of
//! 32 KiB (OpenSSH's channel max-packet) opened from one leg's cipher and
//! sealed with the other's, as `dataplane::relay` does for every data
//! packet, for each cipher the proxy negotiates. Throughput is payload
//! bytes; the inverse is the proxy's crypto CPU per GiB relayed (both legs'
//! work: one open and one seal per packet).
//!
//! `seal` and `open` alone are timed too, to compare AES-GCM with
//! chacha20-poly1305 (ring's implementation of OpenSSH's construction).
#![forbid(unsafe_code)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::ssh::cipher::{Cipher, Opener, Sealer};

const PAYLOAD: usize = 32 * 1024;

fn packet() -> Vec<u8> {
    // CHANNEL_DATA: type, recipient, data length, data.
    let mut p = Vec::with_capacity(PAYLOAD + 9);
    p.push(94);
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&(PAYLOAD as u32).to_be_bytes());
    p.extend((0..PAYLOAD).map(|i| i as u8));
    p
}

fn keys(c: Cipher, salt: u8) -> (Vec<u8>, Vec<u8>) {
    (vec![salt; c.key_len()], vec![salt ^ 0x5a; 12])
}

fn relay(c: &mut Criterion) {
    let payload = packet();
    let mut group = c.benchmark_group("relay_packet");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    for cipher in Cipher::ALL {
        // The user's client seals; the proxy opens it, reseals it for the
        // Studio; (the Studio's opening is not the proxy's work).
        let (ku, iu) = keys(cipher, 1);
        let (ks, is) = keys(cipher, 2);
        let mut client = Sealer::new(cipher, &ku, &iu);
        let mut proxy_in = Opener::new(cipher, &ku, &iu);
        let mut proxy_out = Sealer::new(cipher, &ks, &is);
        let mut seq = 0u32;
        let mut wire = Vec::with_capacity(PAYLOAD + 128);
        let mut out = Vec::with_capacity(PAYLOAD + 128);
        group.bench_function(BenchmarkId::new("open_and_reseal", cipher.name()), |b| {
            b.iter(|| {
                wire.clear();
                client.seal(seq, &payload, &mut wire);
                // Only the proxy's part is what we want, but the client's
                // seal must happen to keep nonces in step; it is timed
                // separately below and subtracted in docs/benchmarks.md.
                let range = proxy_in.open(seq, &mut wire).expect("opens");
                out.clear();
                proxy_out.seal(seq, &wire[range], &mut out);
                seq = seq.wrapping_add(1);
                black_box(out.len())
            })
        });
        let mut sealer = Sealer::new(cipher, &ku, &iu);
        let mut seq = 0u32;
        group.bench_function(BenchmarkId::new("seal", cipher.name()), |b| {
            b.iter(|| {
                out.clear();
                sealer.seal(seq, &payload, &mut out);
                seq = seq.wrapping_add(1);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
