//! The proxy's own SSH transport: enough of SSH to authenticate both legs
//! and then carry the connection protocol between them packet by packet.
//!
//! - [`wire`]: the binary encoding; [`msg`]: message numbers;
//! - [`cipher`]: sealing and opening packets (ring's AES-GCM and
//!   chacha20-poly1305); [`kex`]: KEXINIT and the key exchanges;
//! - [`sig`]: signatures (verifying users' and Studios' keys, signing with
//!   the proxy key); [`transport`]: one leg (version exchange, packets,
//!   key exchange and rekeying, either role); [`io`]: how a leg reads and
//!   writes its socket on each backend.

pub mod cipher;
pub mod io;
pub mod kex;
pub mod msg;
pub mod sig;
pub mod transport;
pub mod wire;
