//! Domain types: what a machine is, independent of how it is stored, run or
//! shown. This layer sits below `store`, `runtime` and `core` and imports
//! none of them, so the crate's modules form no import cycle.

pub mod action;
pub mod event;
pub mod exec;
pub mod exit;
pub mod kind;
pub mod name;
pub mod record;
pub mod spec;
pub mod status;
pub mod time;

pub use action::{Action, Verb, WaitTarget};
pub use event::{Event, Happening, Subject};
pub use exec::{
    ExecCommand, ExecOutput, ExecRequest, ResultFormat, SessionCommand, StreamControl,
    StreamRequest, WindowSize,
};
pub use exit::Exit;
pub use kind::RuntimeKind;
pub use name::MachineName;
pub use record::{now_ms, MachineRecord};
pub use spec::{MachineSpec, RestartPolicy, Workload, MAX_WRITE};
pub use status::Status;
