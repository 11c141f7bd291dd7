//! The guest agent, run for real on the host through its Unix-socket mode
//! (the same code path as vsock past `accept`), driven by the host client
//! directly and through a stand-in for a VMM's hybrid vsock.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod exec;
mod files;
mod pid1;
mod protocol;
mod stream;
mod transport;
