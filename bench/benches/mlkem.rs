//! ML-KEM-768, the post-quantum half of `mlkem768x25519-sha256`: the two
//! maintained implementations, RustCrypto's `ml-kem` and Cryspen's
//! `libcrux-ml-kem` (the proxy's), doing what one key exchange asks of
//! each side. The proxy is the server on the user's leg (parse and check
//! the client's encapsulation key, encapsulate) and the client on the
//! Studio leg (generate a key pair, decapsulate the server's ciphertext),
//! so every proxied connection with ML-KEM on both legs pays both rows.
#![forbid(unsafe_code)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use libcrux_ml_kem::mlkem768;
use ml_kem::kem::{Decapsulate, Encapsulate, Kem, KeyExport, TryKeyInit};
use ml_kem::{EncapsulationKey, MlKem768};

fn mlkem(c: &mut Criterion) {
    let mut group = c.benchmark_group("mlkem768");

    // RustCrypto: the encapsulation key as it arrives on the wire.
    let (_, ek) = MlKem768::generate_keypair();
    let ek_bytes = ek.to_bytes();
    group.bench_function("server/rustcrypto", |b| {
        b.iter(|| {
            let ek = EncapsulationKey::<MlKem768>::new_from_slice(black_box(ek_bytes.as_slice()))
                .expect("a key it made");
            black_box(ek.encapsulate())
        })
    });
    // A ciphertext made for another key: decapsulation does the same work
    // whether or not it matches (implicit rejection is constant-time).
    let (ct, _) = ek.encapsulate();
    group.bench_function("client/rustcrypto", |b| {
        b.iter(|| {
            let (dk, ek) = MlKem768::generate_keypair();
            black_box(ek.to_bytes());
            black_box(dk.decapsulate(black_box(&ct)))
        })
    });

    // libcrux: seeds are arguments; the proxy fills them from ring's
    // SystemRandom (not measured here, ~1 µs).
    let pair = mlkem768::generate_key_pair([7; 64]);
    let pk_bytes = *pair.public_key().as_slice();
    group.bench_function("server/libcrux", |b| {
        b.iter(|| {
            let pk = mlkem768::MlKem768PublicKey::from(black_box(&pk_bytes));
            assert!(mlkem768::validate_public_key(&pk));
            black_box(mlkem768::encapsulate(&pk, [9; 32]))
        })
    });
    let (ct, _) = mlkem768::encapsulate(pair.public_key(), [9; 32]);
    let mut seed = 0u8;
    group.bench_function("client/libcrux", |b| {
        b.iter(|| {
            seed = seed.wrapping_add(1);
            let pair = mlkem768::generate_key_pair([seed; 64]);
            black_box(pair.public_key().as_slice());
            black_box(mlkem768::decapsulate(pair.private_key(), black_box(&ct)))
        })
    });
    group.finish();
}

criterion_group!(benches, mlkem);
criterion_main!(benches);
