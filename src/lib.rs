//! Hyperfleet: Docker containers and microVMs as a filesystem.
//!
//! See ARCHITECTURE.md for the map of modules.

pub mod core;
pub mod error;
pub mod runtime;

pub use error::{Error, Result};
