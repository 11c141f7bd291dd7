//! Cloud Hypervisor microVMs: one machine is one `cloud-hypervisor`
//! process, driven through its API socket (see [`crate::runtime::vm`] for
//! the process model both VMMs share).
//!
//! - [`api`]: the typed client of Cloud Hypervisor's REST API.
//! - [`config`]: a machine's [`Config`] and the `vm.create` body made from it.
//! - [`handlers`]: the start and restore steps as named chains.
//! - [`Machine`]: one microVM, the SDK type; implements `Runtime`,
//!   including hot-plug (`resize`, `add_disk`, `remove_device`).
//! - [`CloudHypervisorDriver`]: the factory the daemon registers.
//!
//! Stop: the ACPI power button, then `vm.shutdown` and `vmm.shutdown` after
//! the grace period. Snapshots into a directory, of a VM paused for the
//! moment and always resumed after.

pub mod api;
pub mod config;
mod driver;
mod halt;
pub mod handlers;
mod hotplug;
mod inspect;
mod machine;
mod snapshot;

pub use config::Config;
pub use driver::{CloudHypervisorDriver, VERBS};
pub use handlers::Handlers;
pub use machine::Machine;
