//! The user's leg: the russh server handler of one connection. It stays
//! thin: each callback moves the connection through its phases
//! (authorize -> connect upstream -> bridge) by calling the module that
//! owns the phase, and replies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use model::{Fingerprint, Login};
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty, Sig};
use tracing::{info, warn};

use crate::activity::Registration;
use crate::authorize::{Denied, authorize};
use crate::bridge::{self, LastActive, Link, Replies};
use crate::core::CoreShared;
use crate::upstream::{self, Target, Upstream, UpstreamError};

/// The Studio leg as this connection knows it.
enum StudioLeg {
    /// Not authenticated yet.
    None,
    Ready(Upstream),
    /// Authenticated, but the Studio cannot be reached: the user is told why.
    Unavailable(UpstreamError),
}

/// One user connection.
pub struct UserConnection {
    core: Arc<CoreShared>,
    peer: SocketAddr,
    accepted: Instant,
    /// Set once authenticated; the handshake watchdog reads it.
    pub authenticated: Arc<AtomicBool>,
    login: Option<Login>,
    target: Option<model::state::Session>,
    studio: StudioLeg,
    links: HashMap<ChannelId, Link>,
    /// Session channels opened while the Studio is unavailable.
    stranded: Vec<ChannelId>,
    active: Arc<LastActive>,
    _activity: Option<Registration>,
}

impl UserConnection {
    pub fn new(core: Arc<CoreShared>, peer: SocketAddr) -> Self {
        Self {
            core,
            peer,
            accepted: Instant::now(),
            authenticated: Arc::new(AtomicBool::new(false)),
            login: None,
            target: None,
            studio: StudioLeg::None,
            links: HashMap::new(),
            stranded: Vec::new(),
            active: Arc::new(LastActive::default()),
            _activity: None,
        }
    }

    fn refuse() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        }
    }

    /// The authorization phase: parse the login, decide on this core's state.
    fn decide(
        &self,
        user: &str,
        key: &PublicKey,
    ) -> Result<(Login, model::state::Session), Denied> {
        let login: Login = user.parse().map_err(|_| Denied::BadLogin)?;
        let fingerprint = key
            .to_bytes()
            .map(|b| Fingerprint::of_key_blob(&b))
            .map_err(|_| Denied::UnknownKey)?;
        let state = crate::routes::current();
        let session = authorize(&state, &login, &fingerprint)?.clone();
        Ok((login, session))
    }

    fn record_refusal(&self, user: &str, denied: Denied) {
        self.core
            .metrics
            .all
            .auth
            .with_label_values(&["refused", denied.label()])
            .inc();
        info!(peer = %self.peer, user, reason = denied.label(), "login refused");
    }

    fn open_channels(&mut self) -> usize {
        self.links.retain(|_, l| !l.is_finished());
        self.links.len() + self.stranded.len()
    }

    /// Admits one more channel under `CONNECT_SSH_MAX_CONN_CHANNELS`.
    fn admit(&mut self) -> bool {
        let open = self.open_channels();
        if open >= self.core.config.max_channels {
            info!(peer = %self.peer, limit = self.core.config.max_channels, "channel refused: limit reached");
            return false;
        }
        true
    }

    fn lost_message(&self) -> Option<Bytes> {
        self.target.as_ref().map(|s| {
            Bytes::from(format!(
                "\r\nconnect: lost the connection to studio {}\r\n",
                s.id
            ))
        })
    }

    fn bridge(
        &mut self,
        user: Channel<Msg>,
        studio: Channel<russh::client::Msg>,
        session: &Session,
        lost: bool,
    ) {
        let id = user.id();
        let lost = if lost { self.lost_message() } else { None };
        let link = bridge::start(
            user,
            studio,
            session.handle(),
            self.core.metrics.clone(),
            self.active.clone(),
            lost,
        );
        self.links.insert(id, link);
    }

    /// Relays a request with a reply to the Studio and answers the user.
    async fn relay<F, Fut>(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
        send: F,
    ) -> Result<(), russh::Error>
    where
        F: FnOnce(Arc<russh::ChannelWriteHalf<russh::client::Msg>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), russh::Error>>,
    {
        let ok = match self.links.get(&channel) {
            Some(link) => {
                let reply = link.replies.expect();
                match send(link.upstream.clone()).await {
                    Ok(()) => Replies::wait(reply).await,
                    Err(_) => false,
                }
            }
            // A channel whose Studio is unavailable accepts set-up requests;
            // the start request gets the explanation.
            None => self.stranded.contains(&channel),
        };
        if ok {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    /// A start request (shell, exec, subsystem) on a stranded channel: say
    /// why, exit 255, close.
    fn explain(&self, channel: ChannelId, session: &mut Session) -> Result<bool, russh::Error> {
        if !self.stranded.contains(&channel) {
            return Ok(false);
        }
        let StudioLeg::Unavailable(why) = &self.studio else {
            return Ok(false);
        };
        session.channel_success(channel)?;
        session.extended_data(channel, 1, Bytes::from(format!("{why}\r\n")))?;
        session.exit_status_request(channel, 255)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(true)
    }
}

impl Drop for UserConnection {
    fn drop(&mut self) {
        self.links.values().for_each(Link::abort);
        if self.authenticated.load(Ordering::Relaxed) {
            self.core.metrics.sessions.dec();
        }
    }
}

impl russh::server::Handler for UserConnection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Self::refuse())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.decide(user, offer.public_key) {
            Ok(_) => Ok(Auth::Accept),
            Err(denied) => {
                self.record_refusal(user, denied);
                Ok(Self::refuse())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.decide(user, key.public_key) {
            Ok((login, session)) => {
                self.core
                    .metrics
                    .all
                    .auth
                    .with_label_values(&["accepted", ""])
                    .inc();
                self.login = Some(login);
                self.target = Some(session);
                Ok(Auth::Accept)
            }
            Err(denied) => {
                self.record_refusal(user, denied);
                Ok(Self::refuse())
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let (Some(login), Some(target)) = (&self.login, &self.target) else {
            return Ok(());
        };
        self.authenticated.store(true, Ordering::Relaxed);
        self.core.metrics.sessions.inc();
        self.core
            .metrics
            .all
            .handshake
            .observe(self.accepted.elapsed().as_secs_f64());
        self._activity = Some(self.core.activity.register(target.id, self.active.clone()));
        let user = login.user.to_string();
        let connected = upstream::connect(
            Target {
                session: target,
                user: &user,
                backend: self.core.backend,
            },
            self.core.key.clone(),
            self.core.client_config.clone(),
            session.handle(),
            self.core.metrics.clone(),
            self.active.clone(),
        )
        .await;
        self.studio = match connected {
            Ok(up) => {
                info!(peer = %self.peer, login = %login, "connected to studio");
                StudioLeg::Ready(up)
            }
            Err(e) => {
                warn!(peer = %self.peer, login = %login, reason = e.reason(), error = %e, "studio unavailable");
                StudioLeg::Unavailable(e)
            }
        };
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.admit() {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        match &self.studio {
            StudioLeg::Ready(up) => match up.handle.channel_open_session().await {
                Ok(studio) => {
                    self.bridge(channel, studio, session, true);
                    reply.accept().await;
                }
                Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            },
            StudioLeg::Unavailable(_) => {
                self.stranded.push(channel.id());
                reply.accept().await;
            }
            StudioLeg::None => {
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await
            }
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.admit() {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        let StudioLeg::Ready(up) = &self.studio else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        let opened = up
            .handle
            .channel_open_direct_tcpip(
                host_to_connect,
                port_to_connect,
                originator_address,
                originator_port,
            )
            .await;
        match opened {
            Ok(studio) => {
                self.bridge(channel, studio, session, false);
                reply.accept().await;
            }
            Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The bridge forwards the close itself and ends; only stranded
        // channels are ours to forget.
        self.stranded.retain(|c| *c != channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (term, modes) = (term.to_owned(), modes.to_vec());
        self.relay(channel, session, |up| async move {
            up.request_pty(
                true, &term, col_width, row_height, pix_width, pix_height, &modes,
            )
            .await
        })
        .await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.relay(channel, session, |up| async move {
            up.set_env(true, name, value).await
        })
        .await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.explain(channel, session)? {
            return Ok(());
        }
        self.relay(channel, session, |up| async move {
            up.request_shell(true).await
        })
        .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.explain(channel, session)? {
            return Ok(());
        }
        let command = data.to_vec();
        self.relay(channel, session, |up| async move {
            up.exec(true, command).await
        })
        .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.explain(channel, session)? {
            return Ok(());
        }
        let name = name.to_owned();
        self.relay(channel, session, |up| async move {
            up.request_subsystem(true, name).await
        })
        .await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.links.get(&channel) {
            let _ = link
                .upstream
                .window_change(col_width, row_height, pix_width, pix_height)
                .await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.links.get(&channel) {
            let _ = link.upstream.signal(signal).await;
        }
        Ok(())
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(link) = self.links.get(&channel) else {
            return Ok(false);
        };
        let reply = link.replies.expect();
        if link.upstream.agent_forward(true).await.is_err() {
            return Ok(false);
        }
        Ok(Replies::wait(reply).await)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let StudioLeg::Ready(up) = &self.studio else {
            return Ok(false);
        };
        match up.handle.tcpip_forward(address, *port).await {
            Ok(bound) => {
                if *port == 0 {
                    *port = bound;
                }
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let StudioLeg::Ready(up) = &self.studio else {
            return Ok(false);
        };
        Ok(up.handle.cancel_tcpip_forward(address, port).await.is_ok())
    }
}
