//! The russh handler for one connection. It stays thin: each callback
//! decides, replies, and hands the work to the module that owns it
//! ([`auth`](crate::auth), [`session`](crate::session),
//! [`forward`](crate::forward)).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::sync::{Arc, Mutex};

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty};
use tracing::{debug, info};

use crate::error::SessionError;
use crate::forward::{self, Forwards, Refusal};
use crate::preauth::Ticket;
use crate::process::PtyRequest;
use crate::server::Shared;
use crate::session::{SessionSetup, StartRequest};

/// One client connection's state.
pub struct Connection {
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
    /// `SSH_CONNECTION` and friends for this connection's processes.
    env: Vec<(OsString, OsString)>,
    sessions: HashMap<ChannelId, SessionSetup>,
    /// Invariant: the client-opened channels not yet closed; its size is
    /// what `max_channels` limits.
    open: OpenChannels,
    forwards: Forwards,
    /// Held until authentication succeeds: the handshake timeout and the
    /// unauthenticated-connection slot (see [`crate::preauth`]).
    preauth: Option<Ticket>,
}

/// The client-opened channels not yet closed, shared with the tasks that
/// serve them. A channel leaves when the client closes it
/// ([`channel_close`](russh::server::Handler::channel_close)) or when the
/// task serving it ends: russh does not call `channel_close` for a close
/// the Studio started (a command that exited), so without the task's
/// [`OpenGuard`] every finished command would hold a slot until the
/// connection's limit refused all new channels.
#[derive(Clone, Default)]
pub struct OpenChannels(Arc<Mutex<HashSet<ChannelId>>>);

impl OpenChannels {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<ChannelId>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.set().len()
    }

    pub fn is_empty(&self) -> bool {
        self.set().is_empty()
    }

    pub fn contains(&self, id: ChannelId) -> bool {
        self.set().contains(&id)
    }

    fn remove(&self, id: ChannelId) {
        self.set().remove(&id);
    }

    /// Counts `id` as open until the returned guard is dropped.
    fn insert(&self, id: ChannelId) -> OpenGuard {
        self.set().insert(id);
        OpenGuard {
            id,
            open: self.clone(),
        }
    }
}

/// Held by the task serving one channel; the channel stops counting as
/// open when it is dropped.
pub struct OpenGuard {
    id: ChannelId,
    open: OpenChannels,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.remove(self.id);
    }
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        peer: std::net::SocketAddr,
        env: Vec<(OsString, OsString)>,
        preauth: Ticket,
    ) -> Self {
        Self {
            shared,
            peer,
            env,
            sessions: HashMap::new(),
            open: OpenChannels::default(),
            forwards: Forwards::default(),
            preauth: Some(preauth),
        }
    }

    fn refuse() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        }
    }

    fn key_allowed(&self, user: &str, key: &PublicKey) -> bool {
        crate::auth::check(self.shared.accepted(), user, self.peer, key)
    }

    /// Counts a new client channel; `None` (and a refusal) past the limit.
    fn admit(&mut self, channel: &Channel<Msg>) -> Option<OpenGuard> {
        // Setups of channels whose task has ended are done with.
        let open = &self.open;
        self.sessions.retain(|id, _| open.contains(*id));
        if self.open.len() >= self.shared.max_channels {
            info!(
                limit = self.shared.max_channels,
                "channel refused: too many open channels"
            );
            return None;
        }
        Some(self.open.insert(channel.id()))
    }

    fn too_many(&self) -> ChannelOpenFailure {
        Refusal::TooManyChannels {
            limit: self.shared.max_channels,
        }
        .failure()
    }

    fn reply(session: &mut Session, channel: ChannelId, ok: bool) -> Result<(), SessionError> {
        if ok {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    fn start(
        &mut self,
        channel: ChannelId,
        req: StartRequest<'_>,
        session: &mut Session,
    ) -> Result<(), SessionError> {
        let handle = session.handle();
        let ok = match self.sessions.get_mut(&channel) {
            Some(setup) => setup.start(req, &self.shared, &self.env, &handle),
            None => false,
        };
        Self::reply(session, channel, ok)
    }
}

impl russh::server::Handler for Connection {
    type Error = SessionError;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Self::refuse())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Decide on the offer so a wrong key is refused without a signature
        // round trip; only a refusal is logged here, the acceptance is
        // logged once the signature has been verified.
        if !crate::algorithms::signature_allowed(offer.algorithm) {
            info!(algorithm = %offer.algorithm, user, "public key refused: signature algorithm not allowed (SHA-1)");
            return Ok(Self::refuse());
        }
        if crate::auth::matches(self.shared.accepted(), offer.public_key) {
            Ok(Auth::Accept)
        } else {
            self.key_allowed(user, offer.public_key);
            Ok(Self::refuse())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if crate::algorithms::signature_allowed(key.algorithm)
            && self.key_allowed(user, key.public_key)
        {
            // Authenticated: the pre-auth slot and timer are done with.
            self.preauth = None;
            Ok(Auth::Accept)
        } else {
            Ok(Self::refuse())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(guard) = self.admit(&channel) else {
            reply.reject(self.too_many()).await;
            return Ok(());
        };
        let id = channel.id();
        let setup = SessionSetup::open(channel, self.shared.clone(), session.handle(), guard);
        self.sessions.insert(id, setup);
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.shared.tcp_forwarding {
            info!(
                host = host_to_connect,
                port = port_to_connect,
                "direct-tcpip refused: CONNECT_CLIENT_TCP_FORWARDING is false"
            );
            reply.reject(Refusal::Prohibited.failure()).await;
            return Ok(());
        }
        let Some(guard) = self.admit(&channel) else {
            reply.reject(self.too_many()).await;
            return Ok(());
        };
        debug!(
            host = host_to_connect,
            port = port_to_connect,
            "direct-tcpip"
        );
        forward::direct_tcpip(
            channel,
            host_to_connect.to_owned(),
            port_to_connect,
            reply,
            guard,
        );
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.open.remove(channel);
        self.sessions.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self
            .sessions
            .get_mut(&channel)
            .is_some_and(|s| s.pty(PtyRequest::new(term, col_width, row_height, modes)));
        Self::reply(session, channel, ok)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let accepted = self.shared.accept_env.allows(variable_name);
        if !accepted {
            info!(
                name = variable_name,
                "env refused: not in CONNECT_CLIENT_ACCEPT_ENV"
            );
        }
        let ok = accepted
            && self
                .sessions
                .get_mut(&channel)
                .is_some_and(|s| s.env(variable_name, variable_value));
        Self::reply(session, channel, ok)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if !self.shared.agent_forwarding {
            info!("agent forwarding refused: CONNECT_CLIENT_AGENT_FORWARDING is false");
            return Ok(false);
        }
        Ok(self
            .sessions
            .get_mut(&channel)
            .is_some_and(SessionSetup::agent))
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, StartRequest::Shell, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, StartRequest::Exec(data), session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, StartRequest::Subsystem(name), session)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // After the start the channel task applies it; before, the setup
        // remembers it.
        if let Some(setup) = self.sessions.get_mut(&channel) {
            setup.window_change(col_width, row_height);
        }
        Self::reply(session, channel, true)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Self::reply(session, channel, false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if !self.shared.tcp_forwarding {
            info!(
                address,
                port = *port,
                "tcpip-forward refused: CONNECT_CLIENT_TCP_FORWARDING is false"
            );
            return Ok(false);
        }
        Ok(self.forwards.add(address, port, session.handle()).await)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.forwards.cancel(address, port))
    }
}
