//! A peer's KEXINIT payload: `KexInit::decode`, then, when it decodes,
//! negotiation against our server KEXINIT with the peer as the client and
//! as the server. Checks that what decodes re-encodes to the same lists,
//! and that whatever is negotiated is on both sides' lists.

#![no_main]

use dataplane::ssh::kex::{self, KexInit, Negotiated};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(theirs) = KexInit::decode(data) else {
        return;
    };
    let again = KexInit::decode(&theirs.encode()).expect("our encoding of it decodes");
    assert_eq!(again, theirs, "lists changed through encode and decode");

    let ours = KexInit::ours(true, true, &["ssh-ed25519"]);
    if let Ok(n) = kex::negotiate(&theirs, &ours) {
        agreed(&n, &theirs, &ours);
    }
    if let Ok(n) = kex::negotiate(&ours, &theirs) {
        agreed(&n, &ours, &theirs);
    }
});

/// What was agreed is on both lists, for every field.
fn agreed(n: &Negotiated, client: &KexInit, server: &KexInit) {
    let both = |c: &[String], s: &[String], name: &str| {
        c.iter().any(|x| x == name) && s.iter().any(|x| x == name)
    };
    assert!(both(&client.kex, &server.kex, n.kex), "{n:?}");
    assert!(
        both(&client.host_key, &server.host_key, &n.host_key),
        "{n:?}"
    );
    assert!(
        both(&client.cipher_c2s, &server.cipher_c2s, n.c2s.name()),
        "{n:?}"
    );
    assert!(
        both(&client.cipher_s2c, &server.cipher_s2c, n.s2c.name()),
        "{n:?}"
    );
    if n.strict {
        assert!(
            client.kex.iter().any(|k| k == kex::STRICT_C)
                && server.kex.iter().any(|k| k == kex::STRICT_S),
            "{n:?}"
        );
    }
}
