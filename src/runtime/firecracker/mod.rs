//! Firecracker microVMs: one machine is one `firecracker` process, driven
//! through its API socket (see [`crate::runtime::vm`] for the process model
//! both VMMs share).
//!
//! - [`api`]: the typed client of Firecracker's REST API.
//! - [`config`]: a machine's [`Config`] (from a spec, or by hand with a
//!   [`DrivesBuilder`]) and the API bodies made from it.
//! - [`handlers`]: the start and restore steps as named chains.
//! - [`Machine`]: one microVM, the SDK type; implements `Runtime`.
//! - [`FirecrackerDriver`]: the factory the daemon registers.
//!
//! Stop: Ctrl+Alt+Del, SIGTERM after the grace period, SIGKILL. Snapshots:
//! full, into a directory, of a VM paused for the moment; a restore loads
//! one into a fresh process. No hot-plug.

pub mod api;
pub mod config;
mod driver;
mod halt;
pub mod handlers;
mod inspect;
mod machine;
mod snapshot;

pub use config::{Config, DrivesBuilder};
pub use driver::{FirecrackerDriver, VERBS};
pub use handlers::Handlers;
pub use machine::Machine;
pub use snapshot::{MEMORY_FILE, STATE_FILE};
