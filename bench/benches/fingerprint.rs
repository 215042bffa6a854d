//! SHA-256 key fingerprints (`model::Fingerprint`) of the three key types
//! users bring: ed25519, ecdsa-p256 and rsa-4096. The proxy computes one
//! for every public key a client offers, before the authorization decision.
//!
//! Keys are made once by the real `ssh-keygen` in a temporary directory,
//! and each computed fingerprint is checked against `ssh-keygen -lf` before
//! it is timed. Three paths per key type:
//!
//! - `blob`: [`Fingerprint::of_key_blob`] on the wire encoding (the hash);
//! - `public_key`: encode a parsed russh public key and hash it, what the
//!   proxy's handler does with the key a client offers;
//! - `pub_line`: [`Fingerprint::of_public_key_line`] on a `.pub` line
//!   (base64 decoding included).
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use model::Fingerprint;
use russh::keys::PublicKey;
use testkit::{KeyPair, KeyType};

fn fingerprints(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = [
        ("ed25519", KeyType::Ed25519),
        ("ecdsa_p256", KeyType::Ecdsa),
        ("rsa_4096", KeyType::Rsa4096),
    ]
    .map(|(name, kind)| (name, KeyPair::generate(dir.path(), name, kind)));

    let mut group = c.benchmark_group("fingerprint");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    for (name, key) in &keys {
        let public = PublicKey::from_openssh(&key.public_line).expect("parse .pub");
        let blob = public.to_bytes().expect("encode key");
        let via_line = Fingerprint::of_public_key_line(&key.public_line).expect("fingerprint line");
        assert_eq!(via_line.to_string(), key.fingerprint, "{name}");
        assert_eq!(Fingerprint::of_key_blob(&blob), via_line, "{name}");

        // Bytes hashed, so rsa's longer blob shows as throughput too.
        group.throughput(Throughput::Bytes(blob.len() as u64));
        group.bench_with_input(BenchmarkId::new("blob", name), &blob, |b, blob| {
            b.iter(|| Fingerprint::of_key_blob(black_box(blob)))
        });
        group.bench_with_input(
            BenchmarkId::new("public_key", name),
            &public,
            |b, public| {
                b.iter(|| {
                    black_box(public)
                        .to_bytes()
                        .map(|blob| Fingerprint::of_key_blob(&blob))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("pub_line", name),
            &key.public_line,
            |b, line| b.iter(|| Fingerprint::of_public_key_line(black_box(line))),
        );
    }
    group.finish();
}

criterion_group!(benches, fingerprints);
criterion_main!(benches);
