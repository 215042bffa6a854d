//! The relay phase: every connection-protocol packet is opened from one
//! leg and sealed onto the other, in order, without terminating channels.
//! Channel numbers, windows and requests stay end to end between the
//! user's client and connect-client, so flow control is theirs: the proxy
//! holds at most [`HIGH_WATER`] unwritten bytes per direction and stops
//! reading a leg while the other leg's socket does not take them.
//!
//! One task per connection drives both legs (`select!` over each leg's
//! read and write), so per-leg state needs no locks. Each leg keeps its own
//! transport: KEX, IGNORE, DEBUG and DISCONNECT are never forwarded, and a
//! rekey on one leg holds only that leg's outgoing packets.
//!
//! Policy by looking: channel opens counted against
//! `CONNECT_SSH_MAX_CONN_CHANNELS` from both sides, X11 refused,
//! `hostkeys-00@openssh.com` from the Studio dropped, global requests
//! without want-reply not forwarded (their stray replies would confuse the
//! order), replies matched to requests by order with the ones the gateway
//! answers itself kept in sequence, data bytes counted for activity and
//! metrics, and a state change that takes the login's right away ends the
//! connection as soon as the core installs it (milliseconds after the
//! control plane commits it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use model::{Fingerprint, Login};
use tracing::info;

use crate::activity::LastActive;
use crate::authorize::{Denied, authorize};
use crate::channels::{Channels, Opener};
use crate::error::ConnError;
use crate::metrics::CoreMetrics;
use crate::ssh::io::{Split, WriteOut};
use crate::ssh::msg::{self, open_failure};
use crate::ssh::transport::{Event, Leg, TransportError, Tx};
use crate::ssh::wire::{Put, Reader};

/// Unwritten bytes per direction above which the source leg is not read.
/// Small, because an answer to the peer's KEXINIT waits behind them (and
/// behind the kernel's socket buffer): russh aborts a rekey it started
/// when more than twice its window arrives first.
pub const HIGH_WATER: usize = 256 * 1024;
/// The largest channel max-packet either side may announce; larger values
/// are lowered so every relayed packet fits both legs' packet limit.
const MAX_CHANNEL_PACKET: u32 = 256 * 1024 - 1024;
/// How long a user whose Studio went away has to read why.
const LOST_GRACE: Duration = Duration::from_secs(3);

/// A want-reply global request waiting for its reply, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// Relayed: the other leg answers.
    Relayed,
    /// The gateway answers (success or not) once earlier replies are out.
    Local(bool),
}

/// Replies owed to one leg's peer for its global requests.
#[derive(Debug, Default)]
struct Replies(VecDeque<Awaiting>);

impl Replies {
    /// The gateway answers a request itself, after the relayed ones before it.
    fn answer<W: WriteOut>(&mut self, ok: bool, back: &mut Tx<W>) {
        if self.0.is_empty() {
            back.relay(&[reply(ok)]);
        } else {
            self.0.push_back(Awaiting::Local(ok));
        }
    }

    /// A reply arrived from the other leg: forward it if it answers a
    /// relayed request (a reply nobody asked for is dropped), then send the
    /// gateway's own answers that were waiting behind it.
    fn arrived<W: WriteOut>(&mut self, payload: &[u8], to: &mut Tx<W>) {
        if self.0.pop_front() == Some(Awaiting::Relayed) {
            to.relay(payload);
        }
        while let Some(Awaiting::Local(ok)) = self.0.front().copied() {
            self.0.pop_front();
            to.relay(&[reply(ok)]);
        }
    }
}

fn reply(ok: bool) -> u8 {
    if ok {
        msg::REQUEST_SUCCESS
    } else {
        msg::REQUEST_FAILURE
    }
}

/// Who the connection is for, to re-check on every state change.
pub struct Identity {
    pub login: Login,
    pub fingerprint: Fingerprint,
}

/// The relay's per-connection state besides the two legs.
struct Policy<'a> {
    channels: Channels,
    max_channels: usize,
    /// Owed to the user (for requests the user sent).
    user_replies: Replies,
    /// Owed to the Studio.
    studio_replies: Replies,
    metrics: &'a CoreMetrics,
    active: &'a LastActive,
}

/// Runs the relay until either side ends it; returns why.
pub async fn run<S: Split>(
    user: &mut Leg<S>,
    studio: &mut Leg<S>,
    who: &Identity,
    max_channels: usize,
    metrics: &CoreMetrics,
    active: &Arc<LastActive>,
) -> ConnError {
    let mut policy = Policy {
        channels: Channels::default(),
        max_channels,
        user_replies: Replies::default(),
        studio_replies: Replies::default(),
        metrics,
        active,
    };
    let result = relay(user, studio, who, &mut policy).await;
    for (leg, kex) in [("user", &user.kex), ("studio", &studio.kex)] {
        let rekeys = u64::from(kex.completed.saturating_sub(1));
        metrics.all.rekeys.with_label_values(&[leg]).inc_by(rekeys);
    }
    for _ in 0..policy.channels.len() {
        metrics.channels.dec();
    }
    let end = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    match &end {
        ConnError::StudioLeg(_) => lost(user, &policy.channels, who).await,
        ConnError::Revoked(denied) => {
            info!(login = %who.login, reason = denied.label(), "access revoked; disconnecting");
            user.disconnect(msg::reason::BY_APPLICATION, &revoked_message(*denied, who))
                .await;
            studio.tx.close().await;
        }
        ConnError::ClientLeft | ConnError::UserLeg(_) | ConnError::Client(_) => {
            studio
                .disconnect(msg::reason::BY_APPLICATION, "the user disconnected")
                .await;
        }
        _ => {}
    }
    end
}

/// The line a user reads when a state change ends their connection.
fn revoked_message(denied: Denied, who: &Identity) -> String {
    let why = match denied {
        Denied::UnknownKey => "this key was removed from your account",
        Denied::UnknownSession => "the studio no longer exists",
        Denied::SshDisabled => "SSH access was turned off on the platform",
        Denied::WorkspaceNotAllowed => "the workspace no longer allows SSH",
        Denied::ToggleOff => "the studio's SSH connection setting was turned off",
        Denied::NotMember => "you are no longer a member of the studio",
        Denied::BadLogin | Denied::BadSignature | Denied::UnsupportedKey => "access was revoked",
    };
    format!(
        "connect: access to studio {} ended: {why}",
        who.login.session
    )
}

enum Never {}

async fn relay<S: Split>(
    user: &mut Leg<S>,
    studio: &mut Leg<S>,
    who: &Identity,
    policy: &mut Policy<'_>,
) -> Result<Never, ConnError> {
    let mut changes = crate::routes::changes();
    // Packets the Studio sent right after authentication are buffered.
    down_all(user, studio, policy)?;
    loop {
        tokio::select! {
            // A leg is read while the other leg takes what it relays, and
            // always while it is in a key exchange: its KEX messages may sit
            // behind data, and the other leg may be rekeying too, holding
            // its output until this one finishes. Never gated on its own
            // backlog: russh stops reading while it writes, so a leg we
            // stopped reading might never drain.
            r = user.rx.fill(), if studio.tx.pending() < HIGH_WATER || user.kex.in_progress() => {
                r.map_err(ConnError::from)?;
                up_all(user, studio, policy)?;
            }
            r = studio.rx.fill(), if user.tx.pending() < HIGH_WATER || studio.kex.in_progress() => {
                r.map_err(ConnError::StudioLeg)?;
                down_all(user, studio, policy)?;
            }
            r = user.tx.write_some(), if user.tx.wants_write() => r.map_err(ConnError::from)?,
            r = studio.tx.write_some(), if studio.tx.wants_write() => r.map_err(ConnError::StudioLeg)?,
            _ = changes.changed() => {
                let state = crate::routes::current();
                if let Err(denied) = authorize(&state, &who.login, &who.fingerprint) {
                    return Err(ConnError::Revoked(denied));
                }
            }
        }
        if user.rekey_due() {
            user.begin_rekey();
        }
        if studio.rekey_due() {
            studio.begin_rekey();
        }
        if !user.rx.has_buffered() {
            user.rx.release();
        }
        if !studio.rx.has_buffered() {
            studio.rx.release();
        }
    }
}

/// Every complete packet the user sent.
fn up_all<S: Split>(
    user: &mut Leg<S>,
    studio: &mut Leg<S>,
    policy: &mut Policy<'_>,
) -> Result<(), ConnError> {
    while let Some(range) = user.rx.next_packet().map_err(ConnError::from)? {
        let p = user.rx.payload(range);
        let Some(&m) = p.first() else {
            return Err(ConnError::Client("empty packet".into()));
        };
        if msg::is_relayed(m) {
            up(p, &mut studio.tx, &mut user.tx, policy)?;
        } else if msg::is_transport(m) {
            let p = p.to_vec();
            if let Event::Disconnected { .. } = user.on_transport(&p).map_err(ConnError::from)? {
                return Err(ConnError::ClientLeft);
            }
        } else if !(50..=79).contains(&m) {
            // Userauth after success is ignored (RFC 4252 §5.1); anything
            // else is not a message we carry.
            unimplemented(user).map_err(ConnError::Client)?;
        }
    }
    Ok(())
}

/// Every complete packet the Studio sent.
fn down_all<S: Split>(
    user: &mut Leg<S>,
    studio: &mut Leg<S>,
    policy: &mut Policy<'_>,
) -> Result<(), ConnError> {
    while let Some(range) = studio.rx.next_packet().map_err(ConnError::StudioLeg)? {
        let p = studio.rx.payload(range);
        let Some(&m) = p.first() else {
            return Err(ConnError::StudioLeg(TransportError::protocol(
                "empty packet",
            )));
        };
        if msg::is_relayed(m) {
            down(p, &mut user.tx, &mut studio.tx, policy)?;
        } else if msg::is_transport(m) {
            let p = p.to_vec();
            if let Event::Disconnected { code, description } =
                studio.on_transport(&p).map_err(ConnError::StudioLeg)?
            {
                return Err(ConnError::StudioLeg(TransportError::Disconnected {
                    code,
                    description,
                }));
            }
        } else if !(50..=79).contains(&m) {
            unimplemented(studio).map_err(|e| ConnError::StudioLeg(TransportError::protocol(e)))?;
        }
    }
    Ok(())
}

/// Answers an unknown message with UNIMPLEMENTED, unless the peer keeps
/// sending them without reading our answers (the one reply we queue on the
/// leg we read from, so the other leg's backlog does not bound it).
fn unimplemented<S: Split>(leg: &mut Leg<S>) -> Result<(), String> {
    if leg.tx.pending() > 4 * HIGH_WATER {
        return Err("unknown messages sent faster than our answers are read".into());
    }
    leg.unimplemented();
    Ok(())
}

fn open_failure_payload(recipient: u32, code: u32, why: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(why.len() + 20);
    p.put_u8(msg::CHANNEL_OPEN_FAILURE);
    p.put_u32(recipient);
    p.put_u32(code);
    p.put_str(why);
    p.put_str("");
    p
}

/// A copy of a CHANNEL_OPEN or OPEN_CONFIRMATION whose max-packet field
/// (the last u32 of the fixed part at `at`) is lowered to our limit.
fn clamp_max_packet(p: &[u8], at: usize) -> Option<Vec<u8>> {
    let field = p.get(at..at + 4)?;
    let value = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
    if value <= MAX_CHANNEL_PACKET {
        return None;
    }
    let mut copy = p.to_vec();
    copy[at..at + 4].copy_from_slice(&MAX_CHANNEL_PACKET.to_be_bytes());
    Some(copy)
}

/// One relayed packet from the user towards the Studio.
fn up<W: WriteOut>(
    p: &[u8],
    to: &mut Tx<W>,
    back: &mut Tx<W>,
    policy: &mut Policy<'_>,
) -> Result<(), ConnError> {
    relay_one(p, Opener::User, to, back, policy).map_err(|m| ConnError::Client(m.to_string()))
}

/// One relayed packet from the Studio towards the user.
fn down<W: WriteOut>(
    p: &[u8],
    to: &mut Tx<W>,
    back: &mut Tx<W>,
    policy: &mut Policy<'_>,
) -> Result<(), ConnError> {
    relay_one(p, Opener::Studio, to, back, policy)
        .map_err(|m| ConnError::StudioLeg(TransportError::protocol(m.to_string())))
}

/// The policy for one connection-protocol packet from `from`, relayed to
/// `to`; the gateway's own answers go `back`.
fn relay_one<W: WriteOut>(
    p: &[u8],
    from: Opener,
    to: &mut Tx<W>,
    back: &mut Tx<W>,
    policy: &mut Policy<'_>,
) -> Result<(), crate::ssh::wire::Malformed> {
    let mut r = Reader::new(p);
    let m = r.u8("message")?;
    match m {
        msg::CHANNEL_DATA | msg::CHANNEL_EXTENDED_DATA => {
            let header = if m == msg::CHANNEL_DATA { 9 } else { 13 };
            let bytes = p.len().saturating_sub(header) as u64;
            match from {
                Opener::User => policy.metrics.bytes_up.inc_by(bytes),
                Opener::Studio => policy.metrics.bytes_down.inc_by(bytes),
            }
            policy.active.touch();
            to.relay(p);
        }
        msg::CHANNEL_WINDOW_ADJUST
        | msg::CHANNEL_EOF
        | msg::CHANNEL_SUCCESS
        | msg::CHANNEL_FAILURE => to.relay(p),
        msg::CHANNEL_OPEN => {
            let kind = r.utf8("channel type")?;
            let sender = r.u32("sender channel")?;
            r.u32("initial window")?;
            r.u32("maximum packet")?;
            if kind == "x11" {
                back.relay(&open_failure_payload(
                    sender,
                    open_failure::ADMINISTRATIVELY_PROHIBITED,
                    "X11 forwarding is not available through connect",
                ));
            } else if policy.channels.len() >= policy.max_channels {
                info!(
                    limit = policy.max_channels,
                    "channel refused: limit reached"
                );
                back.relay(&open_failure_payload(
                    sender,
                    open_failure::RESOURCE_SHORTAGE,
                    "too many channels on this connection (CONNECT_SSH_MAX_CONN_CHANNELS)",
                ));
            } else {
                policy.channels.opened(from, sender, kind == "session");
                policy.metrics.channels.inc();
                let at = 1 + 4 + kind.len() + 4 + 4;
                match clamp_max_packet(p, at) {
                    Some(copy) => to.relay(&copy),
                    None => to.relay(p),
                }
            }
        }
        msg::CHANNEL_OPEN_CONFIRMATION => {
            let recipient = r.u32("recipient channel")?;
            let sender = r.u32("sender channel")?;
            policy.channels.confirmed(from, recipient, sender);
            match clamp_max_packet(p, 1 + 4 + 4 + 4) {
                Some(copy) => to.relay(&copy),
                None => to.relay(p),
            }
        }
        msg::CHANNEL_OPEN_FAILURE => {
            let recipient = r.u32("recipient channel")?;
            if policy.channels.refused(from, recipient) {
                policy.metrics.channels.dec();
            }
            to.relay(p);
        }
        msg::CHANNEL_CLOSE => {
            let recipient = r.u32("recipient channel")?;
            if policy.channels.closed(from, recipient) {
                policy.metrics.channels.dec();
            }
            to.relay(p);
        }
        msg::CHANNEL_REQUEST => {
            let recipient = r.u32("recipient channel")?;
            let kind = r.string("request type")?;
            let want_reply = r.bool("want reply")?;
            if kind == b"x11-req" && from == Opener::User {
                // Refused in order: the Studio answers an unknown request
                // with CHANNEL_FAILURE in its place.
                if want_reply {
                    let mut q = Vec::with_capacity(48);
                    q.put_u8(msg::CHANNEL_REQUEST);
                    q.put_u32(recipient);
                    q.put_str("x11-req-refused@connect");
                    q.put_bool(true);
                    to.relay(&q);
                }
            } else {
                to.relay(p);
            }
        }
        msg::GLOBAL_REQUEST => {
            let name = r.string("request name")?;
            let want_reply = r.bool("want reply")?;
            let (owed, _) = match from {
                Opener::User => (&mut policy.user_replies, &mut policy.studio_replies),
                Opener::Studio => (&mut policy.studio_replies, &mut policy.user_replies),
            };
            let ours = name.starts_with(b"hostkeys-");
            if !want_reply {
                // Hints (no-more-sessions, hostkeys-00): not forwarded.
            } else if ours {
                owed.answer(false, back);
            } else {
                owed.0.push_back(Awaiting::Relayed);
                to.relay(p);
            }
        }
        msg::REQUEST_SUCCESS | msg::REQUEST_FAILURE => {
            // A reply from `from` answers the other side's request.
            let owed = match from {
                Opener::User => &mut policy.studio_replies,
                Opener::Studio => &mut policy.user_replies,
            };
            owed.arrived(p, to);
        }
        _ => to.relay(p),
    }
    Ok(())
}

/// The Studio leg failed under live channels: each session channel's user
/// reads why and gets exit status 255, then the connection ends.
async fn lost<S: Split>(user: &mut Leg<S>, channels: &Channels, who: &Identity) {
    let line = format!(
        "\r\nconnect: lost the connection to studio {}\r\n",
        who.login.session
    );
    for id in channels.live_sessions() {
        end_channel(&mut user.tx, id, &line);
    }
    let _ = tokio::time::timeout(LOST_GRACE, async {
        user.tx.flush().await?;
        // Let the client close its side (it exits once its channels are
        // closed), answering its key exchange if one is under way.
        loop {
            let p = user.rx.recv().await?;
            if msg::is_transport(p[0]) {
                if let Event::Disconnected { .. } = user.on_transport(&p)? {
                    break;
                }
                user.tx.flush().await?;
            }
        }
        Ok::<(), TransportError>(())
    })
    .await;
    user.disconnect(
        msg::reason::BY_APPLICATION,
        &format!(
            "connect: lost the connection to studio {}",
            who.login.session
        ),
    )
    .await;
}

/// Ends a session channel from the gateway's side: `line` on its stderr,
/// exit status 255, EOF and close.
pub fn end_channel<W: WriteOut>(tx: &mut Tx<W>, channel: u32, line: &str) {
    let mut e = Vec::with_capacity(line.len() + 16);
    e.put_u8(msg::CHANNEL_EXTENDED_DATA);
    e.put_u32(channel);
    e.put_u32(1);
    e.put_str(line);
    tx.relay(&e);
    let mut s = Vec::with_capacity(32);
    s.put_u8(msg::CHANNEL_REQUEST);
    s.put_u32(channel);
    s.put_str("exit-status");
    s.put_bool(false);
    s.put_u32(255);
    tx.relay(&s);
    for m in [msg::CHANNEL_EOF, msg::CHANNEL_CLOSE] {
        let mut c = Vec::with_capacity(5);
        c.put_u8(m);
        c.put_u32(channel);
        tx.relay(&c);
    }
}
