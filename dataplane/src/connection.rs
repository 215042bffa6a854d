//! One connection's life as a sequence of phases, named the same in code,
//! logs (`phase=`) and metrics (docs/connection.md has the diagram):
//!
//! accept -> handshake -> authenticate -> route -> upstream -> relay -> close
//!
//! - accept: [`crate::core`] admits it under the connection caps;
//! - handshake: version exchange and key exchange on the user's leg;
//! - authenticate: publickey, [`crate::userauth`];
//! - route: the decision after a valid signature picks the Studio
//!   ([`crate::authorize`]);
//! - upstream: the Studio leg, [`crate::upstream`]; if it cannot be made the
//!   user is told why ([`crate::stranded`]);
//! - relay: [`crate::relay`] until either side ends;
//! - close: counters, the closing log line.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::activity::LastActive;
use crate::admission::{PENALTY_AUTHFAIL, PENALTY_GRACE, PENALTY_NOAUTH, PreauthEntry, Startup};
use crate::core::CoreShared;
use crate::error::ConnError;
use crate::io_backend::Stream;
use crate::relay::{self, Identity};
use crate::ssh::msg;
use crate::ssh::transport::{Leg, Role};
use crate::upstream::{self, Target};
use crate::{stranded, userauth};

/// The phases, for logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Accept,
    Handshake,
    Authenticate,
    Route,
    Upstream,
    Relay,
    Close,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Handshake => "handshake",
            Self::Authenticate => "authenticate",
            Self::Route => "route",
            Self::Upstream => "upstream",
            Self::Relay => "relay",
            Self::Close => "close",
        }
    }
}

/// Keeps `connect_proxy_sessions_active` right however the task ends.
struct SessionGauge(prometheus::IntGauge);

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs one accepted connection to its end; the peer's address is in the
/// caller's span.
pub async fn run(core: Arc<CoreShared>, stream: Stream, startup: Startup, preauth: PreauthEntry) {
    let started = Instant::now();
    let mut user = Leg::new(
        stream,
        Role::Server {
            host_key: core.key.clone(),
        },
        core.config.rekey_bytes,
    );
    let limit = core.config.handshake_timeout;
    let mut refusals = 0u32;
    let auth = tokio::time::timeout(limit, async {
        let evicted = preauth.evicted.notified();
        tokio::pin!(evicted);
        tokio::select! {
            _ = &mut evicted => Err((Phase::Accept, ConnError::Evicted)),
            r = async {
                user.handshake()
                    .await
                    .map_err(|e| (Phase::Handshake, ConnError::from(e)))?;
                userauth::authenticate(&mut user, &core.metrics, &mut refusals)
                    .await
                    .map_err(|e| (Phase::Authenticate, e))
            } => r,
        }
    })
    .await;
    drop(preauth);
    let auth = match auth {
        Ok(Ok(auth)) => {
            startup.authenticated();
            auth
        }
        Ok(Err((phase, e))) => {
            if refusals > 0 {
                startup.penalise(PENALTY_AUTHFAIL);
            } else if phase == Phase::Authenticate {
                startup.penalise(PENALTY_NOAUTH);
            }
            // Load-balancer health checks connect and close without a byte.
            debug!(phase = phase.as_str(), reason = e.reason(), error = %e, "connection ended before authentication");
            return;
        }
        Err(_) => {
            startup.penalise(PENALTY_GRACE);
            let e = ConnError::HandshakeTimeout;
            core.metrics
                .all
                .refused
                .with_label_values(&[e.reason()])
                .inc();
            info!(phase = Phase::Authenticate.as_str(), reason = e.reason(), limit = ?limit, "connection ended before authentication");
            user.disconnect(
                msg::reason::BY_APPLICATION,
                "authentication timed out (CONNECT_SSH_HANDSHAKE_TIMEOUT); a passphrase prompt left unanswered?",
            )
            .await;
            return;
        }
    };
    let Some(_admitted) = crate::core::Admitted::try_new(&core) else {
        core.metrics
            .all
            .refused
            .with_label_values(&["max_connections"])
            .inc();
        info!(phase = Phase::Route.as_str(), login = %auth.login, "refused: CONNECT_SSH_MAX_CONNECTIONS reached");
        user.disconnect(
            msg::reason::TOO_MANY_CONNECTIONS,
            "connect-proxy is at its connection limit; try again in a moment",
        )
        .await;
        return;
    };
    core.metrics.sessions.inc();
    let _gauge = SessionGauge(core.metrics.sessions.clone());
    core.metrics
        .all
        .handshake
        .observe(started.elapsed().as_secs_f64());
    let active = Arc::new(LastActive::default());
    let _registration = core.activity.register(auth.session.id, active.clone());
    info!(phase = Phase::Route.as_str(), login = %auth.login, "login accepted");

    let user_name = auth.login.user.to_string();
    let studio = upstream::connect(
        Target {
            session: &auth.session,
            user: &user_name,
            backend: core.backend,
            rekey_bytes: core.config.rekey_bytes,
        },
        &core.key,
        &core.metrics,
    )
    .await;
    userauth::success(&mut user);
    let who = Identity {
        login: auth.login,
        fingerprint: auth.fingerprint,
    };
    let end = match studio {
        Ok(mut studio) => {
            info!(phase = Phase::Relay.as_str(), login = %who.login, "connected to studio");
            relay::run(
                &mut user,
                &mut studio,
                &who,
                core.config.max_channels,
                &core.metrics,
                &active,
            )
            .await
        }
        Err(e) => {
            warn!(phase = Phase::Upstream.as_str(), login = %who.login, reason = e.reason(), error = %e, detail = e.detail(), "studio unavailable");
            stranded::run(&mut user, e).await
        }
    };
    core.metrics
        .all
        .closed
        .with_label_values(&[end.reason()])
        .inc();
    info!(
        phase = Phase::Close.as_str(),
        login = %who.login,
        reason = end.reason(),
        error = %end,
        duration = ?started.elapsed(),
        "connection closed"
    );
}
