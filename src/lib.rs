//! Hyperfleet: Docker containers and microVMs as a filesystem.
//!
//! See ARCHITECTURE.md for the map of modules.

pub mod agent;
pub mod core;
pub mod error;
pub mod rest;
pub mod runtime;

pub use error::{Error, Result};
pub mod client;
pub mod daemon;
pub mod fs;
pub mod store;

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
