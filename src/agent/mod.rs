//! The guest agent and the host's side of talking to it.
//!
//! Inside a microVM, `hyperfleet-agent` (the `guest` module, run by
//! `src/bin/hyperfleet-agent.rs`) listens on a vsock port and runs commands,
//! streams their I/O and copies files. On the host, [`AgentClient`] speaks
//! the [`protocol`] to it over any byte stream, and [`HybridVsock`] opens
//! that stream through the Unix socket Firecracker and Cloud Hypervisor
//! expose for the guest's vsock.
//!
//! The guest half is blocking std code (threads and poll(2)): a guest agent
//! is small, starts first and must not need a runtime. The host half is
//! tokio, like the daemon.

// The host half needs tokio, which the agent binary does without.
#[cfg(feature = "daemon")]
pub mod client;
pub mod error;
pub mod guest;
pub mod protocol;
#[cfg(feature = "daemon")]
pub mod transport;

#[cfg(feature = "daemon")]
mod session;
#[cfg(feature = "daemon")]
mod wire;

#[cfg(feature = "daemon")]
pub use client::{
    AgentClient, ExecEvent, ExecResult, ExecSession, RemoteFile, SessionInput, SessionOutput,
};
pub use error::{ConnectCause, Error, ProtocolError, Result};
pub use protocol::{
    ErrorKind, ExecRequest, ExitInfo, ExitStatus, Signal, StreamRequest, Version, WindowSize,
};
#[cfg(feature = "daemon")]
pub use transport::HybridVsock;
