//! Hyperfleet: Docker containers and microVMs as a filesystem.
//!
//! See ARCHITECTURE.md for the map of modules. From the bottom up: `error`,
//! `model` (domain types), `agent` (the guest agent and its protocol),
//! `store` and `runtime`, `core`, then the front ends `fs`, `rest` and the
//! CLI's `client`, and `daemon` which wires them.

pub mod agent;
pub mod client;
pub mod core;
pub mod daemon;
pub mod error;
pub mod fs;
pub mod model;
pub mod rest;
pub mod runtime;
pub mod store;

pub use error::{Error, Result};

/// Logs go to stderr (the daemon's log file once detached); `HYPERFLEET_LOG`
/// takes a tracing filter such as `debug` or `hyperfleet=trace`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HYPERFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
