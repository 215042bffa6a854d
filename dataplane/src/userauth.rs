//! The authenticate phase on the user's leg (RFC 4252, publickey only).
//!
//! A key offer without a signature is answered PK_OK only when the key is
//! one of that user's keys; sessions, the allowlist, the toggle and
//! membership are looked at only after a valid signature, so an unsigned
//! probe learns nothing about sessions. Every refusal is the same
//! USERAUTH_FAILURE, and refusals after a signature take the same fixed
//! time; the reason goes to the log and the metric.

use std::time::{Duration, Instant};

use model::{Fingerprint, Login};
use tracing::info;

use crate::authorize::{Denied, authorize};
use crate::error::ConnError;
use crate::metrics::CoreMetrics;
use crate::ssh::io::Split;
use crate::ssh::msg;
use crate::ssh::sig;
use crate::ssh::transport::{Event, Leg};
use crate::ssh::wire::{Put, Reader};

/// A signed refusal is answered this long after the request arrived, so
/// refusals for different reasons cannot be told apart by timing.
const REFUSAL_TIME: Duration = Duration::from_millis(100);
/// Authentication requests before the connection is closed.
const MAX_ATTEMPTS: u32 = 20;
/// The one line a client gets when it has tried too many keys.
const TOO_MANY: &str = "Too many authentication failures: your ssh offered more keys than allowed; \
     use IdentitiesOnly=yes with IdentityFile for this host";

/// Who logged in, and where they go.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub login: Login,
    pub fingerprint: Fingerprint,
    pub session: model::state::Session,
}

/// One USERAUTH_REQUEST as the proxy reads it (public for the fuzz target).
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Publickey {
        user: &'a str,
        alg: &'a str,
        blob: &'a [u8],
        /// The signature and how many leading bytes of the request it
        /// covers (after the session identifier), when signed.
        signed: Option<(&'a [u8], usize)>,
    },
    /// Another method or service: answered with USERAUTH_FAILURE.
    Other,
}

/// Reads a USERAUTH_REQUEST payload (RFC 4252 §7); a malformed one ends
/// the connection.
pub fn parse_request(p: &[u8]) -> Result<Request<'_>, ConnError> {
    let mut r = Reader::new(p);
    r.u8("userauth request")?;
    let user = r.utf8("user name")?;
    let service = r.string("service")?;
    let method = r.string("method")?;
    if service != b"ssh-connection" || method != b"publickey" {
        return Ok(Request::Other);
    }
    let has_sig = r.bool("has signature")?;
    let alg = r.utf8("public key algorithm")?;
    let blob = r.string("public key")?;
    let signed = if has_sig {
        let covered = p.len() - r.rest().len();
        let sig = r.string("signature")?;
        Some((sig, covered))
    } else {
        None
    };
    Ok(Request::Publickey {
        user,
        alg,
        blob,
        signed,
    })
}

fn failure() -> Vec<u8> {
    let mut p = Vec::with_capacity(20);
    p.put_u8(msg::USERAUTH_FAILURE);
    p.put_str("publickey");
    p.put_bool(false);
    p
}

/// Whether `blob` is one of `user`'s keys (the only thing an unsigned
/// offer may learn).
fn known_key(user: &str, blob: &[u8]) -> Result<(), Denied> {
    let login: Login = user.parse().map_err(|_| Denied::BadLogin)?;
    let fingerprint = Fingerprint::of_key_blob(blob);
    let state = crate::routes::current();
    state
        .keys
        .get(&login.user)
        .is_some_and(|keys| keys.contains(&fingerprint))
        .then_some(())
        .ok_or(Denied::UnknownKey)
}

/// Counts and logs a refusal; the client sees only USERAUTH_FAILURE.
/// The peer's address is in the connection's span.
fn refused(metrics: &CoreMetrics, user: &str, denied: Denied) {
    metrics
        .all
        .auth
        .with_label_values(&["refused", denied.label()])
        .inc();
    info!(
        phase = "authenticate",
        user,
        reason = denied.label(),
        "login refused"
    );
}

/// The decision after a valid signature.
fn decide(user: &str, blob: &[u8]) -> Result<Authenticated, Denied> {
    let login: Login = user.parse().map_err(|_| Denied::BadLogin)?;
    let fingerprint = Fingerprint::of_key_blob(blob);
    let state = crate::routes::current();
    let session = authorize(&state, &login, &fingerprint)?.clone();
    Ok(Authenticated {
        login,
        fingerprint,
        session,
    })
}

/// Runs the service request and userauth exchange until a login is
/// authorized. USERAUTH_SUCCESS is not sent: the caller sends it once
/// the Studio leg is decided. `refusals` counts the refused requests (for
/// the source's penalty should the connection end unauthenticated).
pub async fn authenticate<S: Split>(
    leg: &mut Leg<S>,
    metrics: &CoreMetrics,
    refusals: &mut u32,
) -> Result<Authenticated, ConnError> {
    let mut service = false;
    let mut attempts = 0u32;
    loop {
        let p = leg.rx.recv().await?;
        let m = p[0];
        if msg::is_transport(m) && m != msg::SERVICE_REQUEST {
            if let Event::Disconnected { .. } = leg.on_transport(&p)? {
                return Err(ConnError::ClientLeft);
            }
            leg.tx.flush().await?;
            continue;
        }
        match m {
            msg::SERVICE_REQUEST if !service => {
                let mut r = Reader::new(&p);
                r.u8("service request")?;
                if r.string("service name")? != b"ssh-userauth" {
                    return Err(ConnError::Client(
                        "asked for a service other than ssh-userauth".into(),
                    ));
                }
                service = true;
                let mut a = Vec::with_capacity(20);
                a.put_u8(msg::SERVICE_ACCEPT);
                a.put_str("ssh-userauth");
                leg.tx.send(&a);
            }
            msg::USERAUTH_REQUEST if service => {
                attempts += 1;
                if attempts > MAX_ATTEMPTS {
                    leg.disconnect(msg::reason::NO_MORE_AUTH_METHODS, TOO_MANY)
                        .await;
                    return Err(ConnError::Client("too many authentication attempts".into()));
                }
                let arrived = Instant::now();
                match parse_request(&p)? {
                    Request::Other => leg.tx.send(&failure()),
                    Request::Publickey {
                        user,
                        alg,
                        blob,
                        signed: None,
                    } => {
                        let offered = if !sig::supported(alg) || sig::check_key(alg, blob).is_err()
                        {
                            Err(Denied::UnsupportedKey)
                        } else {
                            known_key(user, blob)
                        };
                        match offered {
                            Ok(()) => {
                                let mut ok = Vec::with_capacity(blob.len() + 40);
                                ok.put_u8(msg::USERAUTH_PK_OK);
                                ok.put_str(alg);
                                ok.put_string(blob);
                                leg.tx.send(&ok);
                            }
                            Err(denied) => {
                                *refusals += 1;
                                refused(metrics, user, denied);
                                leg.tx.send(&failure());
                            }
                        }
                    }
                    Request::Publickey {
                        user,
                        alg,
                        blob,
                        signed: Some((signature, covered)),
                    } => {
                        let mut data = Vec::with_capacity(covered + 40);
                        data.put_string(leg.kex.session_id());
                        data.put_raw(&p[..covered]);
                        let verified =
                            sig::supported(alg) && sig::verify(alg, blob, &data, signature).is_ok();
                        let decision = if verified {
                            decide(user, blob)
                        } else {
                            Err(Denied::BadSignature)
                        };
                        match decision {
                            Ok(auth) => {
                                metrics.all.auth.with_label_values(&["accepted", ""]).inc();
                                return Ok(auth);
                            }
                            Err(denied) => {
                                *refusals += 1;
                                refused(metrics, user, denied);
                                tokio::time::sleep_until((arrived + REFUSAL_TIME).into()).await;
                                leg.tx.send(&failure());
                            }
                        }
                    }
                }
            }
            _ => {
                return Err(ConnError::Client(format!(
                    "message {m} before authentication"
                )));
            }
        }
        leg.tx.flush().await?;
    }
}

/// Tells the client it is in.
pub fn success<S: Split>(leg: &mut Leg<S>) {
    leg.tx.send(&[msg::USERAUTH_SUCCESS]);
}
