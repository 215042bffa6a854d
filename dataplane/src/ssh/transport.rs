//! One SSH leg's transport, in either role: version exchange, packets in
//! and out, the first key exchange and every rekey after it, each leg on
//! its own.
//!
//! A [`Leg`] is three parts so the relay can borrow them apart: [`Rx`]
//! (the socket's read half, the receive buffer and the opening keys),
//! [`Tx`] (the write half, sealed bytes waiting to be written and the
//! sealing keys) and [`Kex`] (the key-exchange state machine). The first
//! key exchange runs sequentially ([`Leg::handshake`]); later ones are
//! driven packet by packet from the relay loop ([`Leg::on_transport`]).
//! While a leg is between our KEXINIT and our NEWKEYS, connection-layer
//! payloads handed to [`Tx::relay`] wait in plaintext and are sealed with
//! the new keys, so a rekey on one leg never waits on the other leg.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use model::Fingerprint;

use super::cipher::{Opener, PacketError, Sealer};
use super::io::{ReadAt, Split, WriteOut};
use super::kex::{self, ClientKex, DirectionKeys, HashInput, KexError, KexInit, Negotiated};
use super::msg;
use super::sig::{self, Ed25519Signer};
use super::wire::{Malformed, Put, Reader};

/// Our identification string (RFC 4253 §4.2), without CR LF.
pub const VERSION: &str = concat!("SSH-2.0-connect-proxy_", env!("CARGO_PKG_VERSION"));
/// Host key algorithms we accept from a Studio, best first.
const STUDIO_HOST_KEYS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "rsa-sha2-512",
    "rsa-sha2-256",
];
/// Bytes in one direction after which we start a rekey (RFC 4344 §3.2
/// allows far more for AES; 1 GiB bounds what one key protects).
pub const REKEY_BYTES: u64 = 1 << 30;
/// Packets after which we rekey, well before sequence numbers wrap.
const REKEY_PACKETS: u32 = 1 << 31;
/// Age of a leg's keys after which we rekey (OpenSSH's and russh's default).
const REKEY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);
/// Room offered to each read while data flows: it starts at [`MIN_CHUNK`]
/// and doubles each time a read fills half of it, up to this. Large,
/// because each read's packets are sealed into one write for the other
/// leg: with 32 KiB a bulk download on io_uring made one write per 32 KiB
/// packet (32,000 writes per GiB); growing to 256 KiB, ~10,000 writes of
/// ~107 KiB and about a quarter less CPU per GiB (docs/benchmarks.md).
/// Growing only while reads fill the buffer keeps a login's handshake,
/// and so many sessions opened at once, at 32 KiB per leg.
const READ_CHUNK: usize = 256 * 1024;
/// The room a leg starts with, and returns to when it goes quiet.
const MIN_CHUNK: usize = 32 * 1024;
/// The first read after an idle period goes to a buffer this small.
const IDLE_READ: usize = 512;

/// Why a leg's transport ended.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error("key exchange: {0}")]
    Kex(#[from] KexError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the peer disconnected ({code}): {description}")]
    Disconnected { code: u32, description: String },
}

impl From<Malformed> for TransportError {
    fn from(m: Malformed) -> Self {
        Self::Protocol(m.to_string())
    }
}

impl TransportError {
    pub fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol(what.into())
    }
}

/// The receiving side of a leg.
pub struct Rx<R> {
    io: R,
    buf: Vec<u8>,
    /// Invariant: `start <= end <= buf.len()`; `buf[start..end]` is
    /// received and not yet consumed.
    start: usize,
    end: usize,
    opener: Opener,
    /// Sequence number of the next packet to open.
    pub seq: u32,
    /// Bytes opened since the current keys were installed.
    bytes: u64,
    packets: u32,
    rekey_bytes: u64,
    /// Bytes the last read brought (to tell bulk from idle).
    last_read: usize,
    /// The room offered to reads while data flows (see [`READ_CHUNK`]).
    chunk: usize,
}

impl<R: ReadAt> Rx<R> {
    fn new(io: R, rekey_bytes: u64) -> Self {
        Self {
            io,
            buf: Vec::new(),
            start: 0,
            end: 0,
            opener: Opener::None,
            seq: 0,
            bytes: 0,
            packets: 0,
            rekey_bytes,
            last_read: 0,
            chunk: MIN_CHUNK,
        }
    }

    /// Reads more from the socket (cancel-safe: a dropped call loses
    /// nothing). `Err(Closed)` at end of stream.
    pub async fn fill(&mut self) -> Result<(), TransportError> {
        // While a read is posted (a cancelled call), the buffer is lent to
        // it and the same read is finished, unchanged.
        if !self.io.posted() {
            if self.buf.is_empty() {
                // Released while idle: wait for the first bytes with a small
                // buffer (an idle session would otherwise keep its read room
                // per leg for as long as it idles).
                self.buf.resize(IDLE_READ, 0);
                self.start = 0;
                self.end = 0;
            } else if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.start > 0 && self.buf.len() - self.end < self.chunk / 2 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            // Past the idle buffer's first read: keep at least half the
            // room free, and grow at once when the room has just doubled.
            let flowing = self.end > 0 || self.buf.len() > IDLE_READ;
            if flowing
                && (self.buf.len() - self.end < self.chunk / 2 || self.buf.len() < self.chunk)
            {
                self.buf.resize(self.end + self.chunk, 0);
            }
        }
        // (While a read is posted the buffer may be with the kernel: the
        // resumed read is not measured.)
        let room = (!self.io.posted()).then(|| self.buf.len() - self.end);
        let n = self.io.read_at(&mut self.buf, self.end).await?;
        if n == 0 {
            return Err(TransportError::Closed);
        }
        if room.is_some_and(|room| n >= room / 2 && room >= self.chunk / 2) {
            // Data is flowing faster than small reads take it: offer more.
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        }
        self.end += n;
        self.last_read = n;
        Ok(())
    }

    /// Whether bytes are buffered that were not yet consumed.
    pub fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Opens the next complete packet in the buffer, if there is one, and
    /// returns its payload's range in [`Rx::payload`].
    pub fn next_packet(&mut self) -> Result<Option<Range<usize>>, TransportError> {
        let have = self.end - self.start;
        if have < 4 || self.io.posted() {
            return Ok(None);
        }
        let b = &self.buf[self.start..self.start + 4];
        let wire = self.opener.wire_len(self.seq, [b[0], b[1], b[2], b[3]])?;
        if have < wire {
            if self.buf.len() < self.start + wire {
                // Make room for the whole packet.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < wire {
                    self.buf.resize(wire, 0);
                }
            }
            return Ok(None);
        }
        let at = self.start;
        let range = self.opener.open(self.seq, &mut self.buf[at..at + wire])?;
        self.start += wire;
        self.seq = self.seq.wrapping_add(1);
        self.bytes += wire as u64;
        self.packets = self.packets.wrapping_add(1);
        Ok(Some(at + range.start..at + range.end))
    }

    /// The bytes of a range [`Rx::next_packet`] returned, valid until the
    /// next `fill`.
    pub fn payload(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads until a whole packet is here and returns a copy of its payload
    /// (handshake and authentication only).
    pub async fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        loop {
            if let Some(range) = self.next_packet()? {
                let p = self.buf[range].to_vec();
                if p.is_empty() {
                    return Err(TransportError::protocol("empty packet"));
                }
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    /// Frees the receive buffer while nothing is buffered and the last read
    /// was short (the peer has gone quiet; a bulk transfer keeps it).
    pub fn release(&mut self) {
        if self.start == self.end
            && self.last_read < IDLE_READ * 8
            && !self.buf.is_empty()
            && !self.io.posted()
        {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.chunk = MIN_CHUNK;
        }
    }

    fn rekey_due(&self) -> bool {
        self.bytes >= self.rekey_bytes || self.packets >= REKEY_PACKETS
    }
}

/// The sending side of a leg.
pub struct Tx<W> {
    io: W,
    /// Sealed bytes; `out[written..]` is not written yet.
    out: Vec<u8>,
    written: usize,
    sealer: Sealer,
    /// Sequence number of the next packet to seal.
    pub seq: u32,
    /// Some between our KEXINIT and our NEWKEYS: relayed payloads wait.
    held: Option<VecDeque<Vec<u8>>>,
    held_bytes: usize,
    bytes: u64,
    packets: u32,
    rekey_bytes: u64,
    /// When the current sending keys were installed.
    keyed_at: std::time::Instant,
}

impl<W: WriteOut> Tx<W> {
    fn new(io: W, rekey_bytes: u64) -> Self {
        Self {
            io,
            out: Vec::new(),
            written: 0,
            sealer: Sealer::None,
            seq: 0,
            held: None,
            held_bytes: 0,
            bytes: 0,
            packets: 0,
            rekey_bytes,
            keyed_at: std::time::Instant::now(),
        }
    }

    /// Seals one of this leg's own messages now.
    pub fn send(&mut self, payload: &[u8]) {
        let before = self.out.len();
        self.sealer.seal(self.seq, payload, &mut self.out);
        self.seq = self.seq.wrapping_add(1);
        self.bytes += (self.out.len() - before) as u64;
        self.packets = self.packets.wrapping_add(1);
    }

    /// Queues a connection-layer payload: sealed now, or held until the
    /// key exchange in progress on this leg ends.
    pub fn relay(&mut self, payload: &[u8]) {
        match &mut self.held {
            Some(held) => {
                self.held_bytes += payload.len();
                held.push_back(payload.to_vec());
            }
            None => self.send(payload),
        }
    }

    /// Bytes waiting: sealed and unwritten (or being written), plus held.
    pub fn pending(&self) -> usize {
        self.out.len() - self.written + self.held_bytes + self.io.in_flight()
    }

    /// Whether sealed bytes wait to be written, or a write is in flight.
    pub fn wants_write(&self) -> bool {
        self.written < self.out.len() || self.io.in_flight() > 0
    }

    /// Writes some of what is sealed, or finishes the write in flight
    /// (cancel-safe).
    pub async fn write_some(&mut self) -> Result<(), TransportError> {
        self.io.write_some(&mut self.out, &mut self.written).await?;
        // A backend that lends the buffer took it whole (`written` is then
        // 0) and manages its memory itself.
        if self.written > 0 && self.written == self.out.len() {
            // Everything is written: a small burst (keystrokes, an idle
            // connection's keepalive) frees the buffer; bulk keeps it.
            if self.written < IDLE_READ * 8 {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
            self.written = 0;
        }
        Ok(())
    }

    /// Writes everything sealed.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        while self.wants_write() {
            self.write_some().await?;
        }
        Ok(())
    }

    /// Shuts the write side down after flushing (best effort).
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }

    fn hold(&mut self) {
        if self.held.is_none() {
            self.held = Some(VecDeque::new());
        }
    }

    /// NEWKEYS out: seals it with the old keys, switches, then seals what
    /// was held with the new ones.
    fn switch(&mut self, keys: &DirectionKeys, strict: bool) {
        self.send(&[msg::NEWKEYS]);
        self.sealer = Sealer::new(keys.cipher, &keys.key, &keys.iv);
        if strict {
            self.seq = 0;
        }
        self.bytes = 0;
        self.packets = 0;
        self.keyed_at = std::time::Instant::now();
    }

    fn release_held(&mut self) {
        if let Some(held) = self.held.take() {
            for p in held {
                self.send(&p);
            }
        }
        self.held_bytes = 0;
    }

    fn rekey_due(&self) -> bool {
        self.bytes >= self.rekey_bytes
            || self.packets >= REKEY_PACKETS
            || self.keyed_at.elapsed() >= REKEY_AFTER
    }
}

/// Who we are on this leg.
pub enum Role {
    /// The user's leg: we are the server, with the proxy key as host key.
    Server { host_key: Arc<Ed25519Signer> },
    /// The Studio leg: we are the client; the Studio's host key must have
    /// the registered fingerprint.
    Client { expected: Option<Fingerprint> },
}

/// A key exchange in progress (boxed: idle connections keep only a
/// pointer's worth of it).
#[derive(Default)]
struct Exchange {
    ours: Option<Vec<u8>>,
    theirs: Option<Vec<u8>>,
    negotiated: Option<Negotiated>,
    client: Option<ClientKex>,
    /// Keys for the receiving direction, installed at their NEWKEYS.
    rx_keys: Option<DirectionKeys>,
    /// Drop the peer's next KEX packet (a wrong first_kex_packet_follows guess).
    skip_guess: bool,
}

/// Where a key exchange stands.
enum Step {
    /// No exchange in progress.
    Idle,
    /// KEXINITs being exchanged / waiting for the exchange message.
    Exchanging(Box<Exchange>),
}

/// The key-exchange state of one leg.
pub struct Kex {
    role: Role,
    our_version: Vec<u8>,
    their_version: Vec<u8>,
    /// The first exchange hash (RFC 4253 §7.2), fixed for the connection.
    session_id: Option<Vec<u8>>,
    strict: bool,
    /// The client asked for EXT_INFO (server role).
    ext_info: bool,
    step: Step,
    /// Exchanges completed.
    pub completed: u32,
}

impl Kex {
    pub fn session_id(&self) -> &[u8] {
        self.session_id.as_deref().unwrap_or_default()
    }

    pub fn their_version(&self) -> &[u8] {
        &self.their_version
    }

    pub fn in_progress(&self) -> bool {
        !matches!(self.step, Step::Idle)
    }

    fn is_server(&self) -> bool {
        matches!(self.role, Role::Server { .. })
    }
}

/// What the relay must do after a transport message.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    None,
    /// The peer sent DISCONNECT.
    Disconnected {
        code: u32,
        description: String,
    },
}

/// One leg: receive side, send side, key exchange.
pub struct Leg<S: Split> {
    pub rx: Rx<S::Read>,
    pub tx: Tx<S::Write>,
    pub kex: Kex,
}

impl<S: Split> Leg<S> {
    pub fn new(stream: S, role: Role, rekey_bytes: u64) -> Self {
        let (r, w) = stream.split();
        Self {
            rx: Rx::new(r, rekey_bytes),
            tx: Tx::new(w, rekey_bytes),
            kex: Kex {
                role,
                our_version: VERSION.as_bytes().to_vec(),
                their_version: Vec::new(),
                session_id: None,
                strict: false,
                ext_info: false,
                step: Step::Idle,
                completed: 0,
            },
        }
    }

    /// Version exchange and the first key exchange, in sequence. Returns
    /// once both directions use the new keys.
    pub async fn handshake(&mut self) -> Result<(), TransportError> {
        self.tx.out.extend_from_slice(&self.kex.our_version);
        self.tx.out.extend_from_slice(b"\r\n");
        self.begin_rekey();
        self.tx.flush().await?;
        self.kex.their_version = read_version(&mut self.rx).await?;
        let mut before_kexinit = 0u32;
        while self.kex.completed == 0 {
            let p = self.rx.recv().await?;
            let m = p[0];
            if m == msg::KEXINIT && before_kexinit > 0 && self.peer_wants_strict(&p) {
                // Strict KEX: KEXINIT must be the very first packet; anything
                // before it shifts sequence numbers (CVE-2023-48795).
                return Err(TransportError::protocol(
                    "strict KEX: a packet before KEXINIT",
                ));
            }
            if m != msg::KEXINIT && self.kex.their_kexinit_missing() {
                before_kexinit += 1;
            }
            if !msg::is_transport(m) || (self.kex.strict && !msg::is_kex(m)) {
                return Err(TransportError::protocol(format!(
                    "message {m} during the initial key exchange"
                )));
            }
            if let Event::Disconnected { code, description } = self.on_transport(&p)? {
                return Err(TransportError::Disconnected { code, description });
            }
            self.tx.flush().await?;
        }
        Ok(())
    }

    fn peer_wants_strict(&self, kexinit: &[u8]) -> bool {
        let marker = if self.kex.is_server() {
            kex::STRICT_C
        } else {
            kex::STRICT_S
        };
        KexInit::decode(kexinit).is_ok_and(|k| k.kex.iter().any(|x| x == marker))
    }

    /// Sends our KEXINIT and holds relayed payloads, unless an exchange is
    /// already in progress.
    pub fn begin_rekey(&mut self) {
        if self.kex.in_progress() {
            return;
        }
        self.kex.step = Step::Exchanging(Box::default());
        self.send_our_kexinit();
    }

    fn send_our_kexinit(&mut self) {
        let first = self.kex.session_id.is_none();
        let init = match &self.kex.role {
            Role::Server { .. } => KexInit::ours(true, first, &["ssh-ed25519"]),
            Role::Client { .. } => KexInit::ours(false, first, STUDIO_HOST_KEYS),
        };
        let payload = init.encode();
        self.tx.hold();
        self.tx.send(&payload);
        if let Step::Exchanging(x) = &mut self.kex.step {
            x.ours = Some(payload);
        }
    }

    /// Whether either direction has carried enough to rekey.
    pub fn rekey_due(&self) -> bool {
        !self.kex.in_progress() && (self.tx.rekey_due() || self.rx.rekey_due())
    }

    /// Handles one transport-layer message (1-49) received on this leg.
    pub fn on_transport(&mut self, p: &[u8]) -> Result<Event, TransportError> {
        if msg::is_kex(p[0])
            && p[0] != msg::KEXINIT
            && let Step::Exchanging(x) = &mut self.kex.step
            && x.skip_guess
        {
            // RFC 4253 §7: the packet after a wrong first_kex_packet_follows
            // guess is ignored, whatever method it belongs to.
            x.skip_guess = false;
            return Ok(Event::None);
        }
        match p[0] {
            msg::DISCONNECT => {
                let mut r = Reader::new(p);
                r.u8("disconnect")?;
                let code = r.u32("disconnect reason")?;
                let description = String::from_utf8_lossy(r.string("disconnect description")?)
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(256)
                    .collect();
                Ok(Event::Disconnected { code, description })
            }
            msg::IGNORE | msg::DEBUG | msg::UNIMPLEMENTED | msg::EXT_INFO => Ok(Event::None),
            msg::KEXINIT => {
                self.on_kexinit(p)?;
                Ok(Event::None)
            }
            msg::NEWKEYS => {
                self.on_newkeys()?;
                Ok(Event::None)
            }
            msg::KEX_ECDH_INIT | msg::KEX_ECDH_REPLY => {
                self.on_exchange(p)?;
                Ok(Event::None)
            }
            m if msg::is_kex(m) => Err(TransportError::protocol(format!(
                "unsupported key-exchange message {m}"
            ))),
            _ => {
                // Service requests and unknown transport messages: not ours
                // to answer outside authentication.
                self.unimplemented();
                Ok(Event::None)
            }
        }
    }

    /// Answers the packet just received with UNIMPLEMENTED (RFC 4253 §11.4).
    pub fn unimplemented(&mut self) {
        let mut p = Vec::with_capacity(5);
        p.put_u8(msg::UNIMPLEMENTED);
        p.put_u32(self.rx.seq.wrapping_sub(1));
        self.tx.send(&p);
    }

    fn on_kexinit(&mut self, p: &[u8]) -> Result<(), TransportError> {
        if !self.kex.in_progress() {
            self.begin_rekey();
        }
        let Step::Exchanging(x) = &mut self.kex.step else {
            return unreachable_step();
        };
        if x.theirs.is_some() {
            return Err(TransportError::protocol(
                "a second KEXINIT during key exchange",
            ));
        }
        x.theirs = Some(p.to_vec());
        let Exchange {
            ours: Some(ours),
            theirs: Some(theirs),
            negotiated,
            client,
            skip_guess,
            ..
        } = &mut **x
        else {
            return unreachable_step();
        };
        let (ours_k, theirs_k) = (KexInit::decode(ours)?, KexInit::decode(theirs)?);
        let n = if matches!(self.kex.role, Role::Server { .. }) {
            kex::negotiate(&theirs_k, &ours_k)?
        } else {
            kex::negotiate(&ours_k, &theirs_k)?
        };
        *skip_guess = n.ignore_guess && theirs_k.first_kex_follows;
        let is_server = matches!(self.kex.role, Role::Server { .. });
        if !is_server {
            let (state, init) = ClientKex::start(n.kex)?;
            *client = Some(state);
            self.tx.send(&init);
        }
        let (strict, ext_info) = (n.strict, n.ext_info && is_server);
        *negotiated = Some(n);
        if self.kex.session_id.is_none() {
            self.kex.strict = strict;
            self.kex.ext_info = ext_info;
        }
        Ok(())
    }

    fn on_exchange(&mut self, p: &[u8]) -> Result<(), TransportError> {
        let session_known = self.kex.session_id.clone();
        let before = || TransportError::protocol("key-exchange message before KEXINIT");
        let Step::Exchanging(x) = &mut self.kex.step else {
            return Err(before());
        };
        let Exchange {
            ours: Some(ours),
            theirs: Some(theirs),
            negotiated: Some(n),
            client,
            rx_keys,
            skip_guess,
        } = &mut **x
        else {
            return Err(before());
        };
        if *skip_guess {
            *skip_guess = false;
            return Ok(());
        }
        let (our_v, their_v) = (&self.kex.our_version, &self.kex.their_version);
        let (tx_keys, h) = match &self.kex.role {
            Role::Server { host_key } => {
                if p[0] != msg::KEX_ECDH_INIT {
                    return Err(TransportError::protocol("expected KEX_ECDH_INIT"));
                }
                let input = HashInput {
                    client_version: their_v,
                    server_version: our_v,
                    client_kexinit: theirs,
                    server_kexinit: ours,
                    host_key: host_key.public_blob(),
                };
                let (q_s, k, h) = kex::server_exchange(n.kex, p, &input)?;
                let sid = session_known.clone().unwrap_or_else(|| h.clone());
                let mut reply = Vec::with_capacity(q_s.len() + 200);
                reply.put_u8(msg::KEX_ECDH_REPLY);
                reply.put_string(host_key.public_blob());
                reply.put_string(&q_s);
                reply.put_string(&host_key.sign(&h));
                self.tx.send(&reply);
                let (c2s, s2c) = kex::derive(&k, &h, &sid, n);
                *rx_keys = Some(c2s);
                (s2c, h)
            }
            Role::Client { expected } => {
                if p[0] != msg::KEX_ECDH_REPLY {
                    return Err(TransportError::protocol("expected KEX_ECDH_REPLY"));
                }
                let state = client
                    .take()
                    .ok_or_else(|| TransportError::protocol("KEX reply before our init"))?;
                let input = HashInput {
                    client_version: our_v,
                    server_version: their_v,
                    client_kexinit: ours,
                    server_kexinit: theirs,
                    host_key: &[],
                };
                let kex::ServerReply {
                    host_key,
                    secret: k,
                    hash: h,
                    signature,
                } = state.finish(p, &input)?;
                if expected.is_none_or(|e| e != Fingerprint::of_key_blob(&host_key)) {
                    return Err(KexError::HostKey.into());
                }
                sig::verify(&n.host_key, &host_key, &h, &signature)
                    .map_err(|_| KexError::BadSignature)?;
                let sid = session_known.clone().unwrap_or_else(|| h.clone());
                let (c2s, s2c) = kex::derive(&k, &h, &sid, n);
                *rx_keys = Some(s2c);
                (c2s, h)
            }
        };
        let first = self.kex.session_id.is_none();
        if first {
            self.kex.session_id = Some(h);
        }
        self.tx.switch(&tx_keys, self.kex.strict);
        if first && self.kex.ext_info {
            let mut e = Vec::with_capacity(128);
            e.put_u8(msg::EXT_INFO);
            e.put_u32(1);
            e.put_str("server-sig-algs");
            e.put_str(&sig::USER_ALGORITHMS.join(","));
            self.tx.send(&e);
        }
        self.tx.release_held();
        Ok(())
    }

    fn on_newkeys(&mut self) -> Result<(), TransportError> {
        let Step::Exchanging(x) = &mut self.kex.step else {
            return Err(TransportError::protocol("NEWKEYS outside key exchange"));
        };
        let keys = x
            .rx_keys
            .take()
            .ok_or_else(|| TransportError::protocol("NEWKEYS before the exchange"))?;
        self.rx.opener = Opener::new(keys.cipher, &keys.key, &keys.iv);
        if self.kex.strict {
            self.rx.seq = 0;
        }
        self.rx.bytes = 0;
        self.rx.packets = 0;
        if self.tx.held.is_some() {
            return Err(TransportError::protocol(
                "NEWKEYS before our exchange finished",
            ));
        }
        self.kex.step = Step::Idle;
        self.kex.completed += 1;
        Ok(())
    }

    /// Sends DISCONNECT with `code` and a one-line description, then flushes.
    pub async fn disconnect(&mut self, code: u32, description: &str) {
        self.tx.send(&disconnect_payload(code, description));
        self.tx.close().await;
    }
}

/// A DISCONNECT message.
pub fn disconnect_payload(code: u32, description: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(description.len() + 16);
    p.put_u8(msg::DISCONNECT);
    p.put_u32(code);
    p.put_str(description);
    p.put_str("");
    p
}

impl Kex {
    fn their_kexinit_missing(&self) -> bool {
        matches!(&self.step, Step::Exchanging(x) if x.theirs.is_none())
    }
}

fn unreachable_step<T>() -> Result<T, TransportError> {
    Err(TransportError::protocol("key exchange state"))
}

/// Reads the peer's identification line; lines before it are skipped
/// (servers may send some, RFC 4253 §4.2). Returns it without CR LF.
async fn read_version<R: ReadAt>(rx: &mut Rx<R>) -> Result<Vec<u8>, TransportError> {
    let mut lines = 0;
    loop {
        if let Some(nl) = rx.buf[rx.start..rx.end].iter().position(|b| *b == b'\n') {
            let line = &rx.buf[rx.start..rx.start + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
            rx.start += nl + 1;
            if line.starts_with(b"SSH-") {
                if !(line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-")) {
                    return Err(TransportError::protocol("the peer does not speak SSH 2"));
                }
                if line.len() > 253 {
                    return Err(TransportError::protocol("identification line too long"));
                }
                return Ok(line);
            }
            lines += 1;
            if lines > 32 {
                return Err(TransportError::protocol("no SSH identification line"));
            }
            continue;
        }
        if rx.end - rx.start > 1024 {
            return Err(TransportError::protocol("no SSH identification line"));
        }
        rx.fill().await?;
    }
}
