//! What the two microVM runtimes (Firecracker, Cloud Hypervisor) share.
//!
//! # Process model
//!
//! A VM is one VMM process, spawned by the daemon **detached into its own
//! session** (`vmm_process::Vmm::spawn`): stdin from /dev/null, stdout and
//! stderr to files in the machine's runtime directory, no descriptor of the
//! daemon inherited. While the daemon lives the VMM is its child, so its
//! exit status is known exactly ([`supervisor`]). When the daemon dies
//! (`kill -9` included) nothing reaches the VMM: no signal (another
//! session), no broken pipe (no pipes). Its identity — pid and process start
//! time — is in `<kind>.pid` in the runtime directory.
//!
//! A restarted daemon re-adopts a VMM only when all three agree: the pid
//! file names a live process with the recorded start time (a reused pid has
//! another), and the API socket answers as *that* VMM (Firecracker's `GET /`
//! reports the machine id given as `--id`; Cloud Hypervisor's `vmm.ping`
//! reports its pid). A VMM is never started for a machine whose pid file
//! names a live one. A VMM that died while no daemon watched is reported as
//! ended with an unknown status (its parent is gone, so is its status)
//! unless the daemon recorded the exit in `<kind>.exit` before it died. A
//! start cut short by the daemon's death (a live VMM that `<kind>.started`
//! does not name, whose VM never booted) is rolled back: the VMM is killed.
//!
//! The runtime root (`<state>/run`) is given to the drivers by the daemon
//! (`DriverSettings::run_root`); a driver lists the machine directories
//! holding its kind's pid file there, so that the core's sweep removes a VMM
//! whose machine is gone.
//!
//! # Lifecycle
//!
//! A start is a named chain of steps ([`chain`]) run under
//! [`Supervisor::start`], which makes it all or nothing; stop, pause,
//! snapshots and hot-plug are each VMM's own (see `firecracker` and
//! `cloud_hypervisor`).
//!
//! # Files
//!
//! See [`files`] for the runtime directory's layout. The serial console is
//! a file there, copied into the machine's `logs` by [`console`]; the VMM's
//! own log is another, whose last line explains a VMM that fails.
//!
//! # Errors
//!
//! [`errors`] is the one mapping from VMM and API failures to errnos.

pub mod binary;
pub mod chain;
pub mod console;
pub mod errors;
pub mod files;
pub mod network;
pub mod supervisor;

pub use binary::VmmBinary;
pub use chain::{Chain, StepFuture};
pub use console::Console;
pub use files::VmFiles;
pub use supervisor::{Ended, Supervisor, VmmProcess};
