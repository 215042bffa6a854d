//! connect-client: the SSH server inside every Studio container.
//!
//! It accepts exactly one client key, the connect-proxy's (pinned by its
//! SHA256 fingerprint), and gives the proxy everything a user's `ssh` asks
//! for: shells with a real pty, commands, the built-in SFTP subsystem,
//! port forwarding both ways and agent forwarding.
//!
//! Layout, in the order a connection meets it:
//! - [`config`]: the `CONNECT_CLIENT_*` variables;
//! - [`hostkey`]: the Studio's host key, loaded or generated;
//! - [`server`]: the listener and russh configuration;
//! - [`algorithms`]: the key exchanges, ciphers and signatures offered;
//! - [`preauth`]: handshake timeout and the cap on unauthenticated connections;
//! - [`handler`]: the thin russh handler of one connection;
//! - [`auth`]: the fingerprint rule and its log line;
//! - [`session`]: session channels up to the moment something starts;
//! - [`accept_env`]: which `env` requests are applied;
//! - [`process`]: a running shell or command and its pty or pipes;
//! - [`termios`]: the client's terminal modes applied to the pty;
//! - [`registration`]: registering with connect-control and heartbeating;
//! - [`sftp`]: the SFTP subsystem over the container's filesystem;
//! - [`forward`]: `direct-tcpip` and `tcpip-forward`;
//! - [`agent`]: the forwarded agent's socket;
//! - [`relay`]: one channel to one byte stream, both ways;
//! - [`account`]: the container user commands run as;
//! - [`error`]: what can go wrong, by whose fault.
#![forbid(unsafe_code)]

pub mod accept_env;
pub mod account;
pub mod agent;
pub mod algorithms;
pub mod auth;
pub mod config;
pub mod error;
pub mod forward;
pub mod handler;
pub mod hostkey;
pub mod preauth;
pub mod process;
pub mod registration;
pub mod relay;
pub mod server;
pub mod session;
pub mod sftp;
pub mod termios;

pub use config::Config;
pub use error::Error;

/// Loads the host key, binds and serves until failure.
pub async fn run(config: Config) -> Result<(), Error> {
    let host_key = match &config.host_key_path {
        Some(path) => hostkey::load(path)?,
        None => hostkey::generate()?,
    };
    let server = server::Server::bind(&config, host_key).await?;
    if let Some(registration) = config.registration.clone() {
        let bound = server
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let advertise = registration
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string());
        let host_key = server.host_key_fingerprint();
        tokio::spawn(registration::run(
            registration,
            advertise,
            host_key,
            server.shared(),
        ));
    }
    server.run().await
}
