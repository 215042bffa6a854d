//! connect-loadtest: drives an SSH endpoint (connect-proxy, or any SSH
//! server, directly or through an OpenSSH jump host) with many concurrent
//! russh clients and reports latency percentiles, errors by kind and
//! throughput.
//!
//! - [`report`]: the recorder every task writes into, the final report
//!   (table, JSON) and [`plot`] its PNG charts;
//! - [`procfs`]: CPU, memory and descriptors of a process under test;
//! - [`client`]: the russh client (source address, cipher, key exchange,
//!   jump host);
//! - [`target`]: where connections go and from which source addresses;
//! - [`logins`] and [`provision`]: who logs in, and users and sessions
//!   created for a run through the control plane's API;
//! - [`scenario`]: connect, idle, interactive, bulk, churn, mixed.
#![forbid(unsafe_code)]

pub mod client;
pub mod failure;
pub mod logins;
pub mod plot;
pub mod procfs;
pub mod provision;
pub mod report;
pub mod scenario;
pub mod target;
