//! Hyperfleet: Docker containers and microVMs as a filesystem.
//!
//! See ARCHITECTURE.md for the map of modules. From the bottom up: `error`,
//! `model` (domain types), `agent` (the guest agent and its protocol),
//! `store` and `runtime`, `core`, then the front ends `fs`, `rest` and the
//! CLI's `client`, and `daemon` which wires them.

pub mod agent;
#[cfg(feature = "daemon")]
pub mod client;
#[cfg(feature = "daemon")]
pub mod core;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod error;
#[cfg(feature = "daemon")]
pub mod fs;
#[cfg(feature = "daemon")]
pub mod model;
#[cfg(feature = "daemon")]
pub mod rest;
#[cfg(feature = "daemon")]
pub mod runtime;
#[cfg(feature = "daemon")]
pub mod store;

#[cfg(feature = "daemon")]
pub use error::{Error, Result};

/// Logs go to stderr (the daemon's log file once detached); `HYPERFLEET_LOG`
/// takes a tracing filter such as `debug` or `hyperfleet=trace`. Colours
/// only on a terminal: a log file gets plain text.
#[cfg(feature = "daemon")]
pub fn init_tracing() {
    use std::io::IsTerminal;
    // The FUSE library reports every request it has no handler for; those
    // that matter are handled, the rest are noise at info.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HYPERFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
