//! The core: owns machines, their specs, their lifecycle and their persistence.

pub mod name;
pub mod spec;
pub mod status;

pub use name::MachineName;
pub use spec::{MachineSpec, RuntimeKind};
pub use status::Status;
