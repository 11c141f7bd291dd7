//! Docker runtime: one machine is one container on the local Docker Engine,
//! driven through its API with bollard (never the CLI).
//!
//! The container is addressed by the deterministic name
//! `hyperfleet-<machine id>`, so a restarted daemon finds it again without
//! having stored Docker's own id. A start creates the new container as
//! `hyperfleet-<id>-next` and swaps it in only once it runs, so a start that
//! fails (a port already taken) leaves the last run's container, exit code
//! and logs where they were. Every container carries the labels
//! `hyperfleet.machine-id`, `hyperfleet.machine-name` and
//! `hyperfleet.instance`, which is how leftovers are found.
//!
//! [`Container`] is usable on its own from Rust (no daemon, no store):
//!
//! ```no_run
//! # async fn demo() -> hyperfleet::Result<()> {
//! use hyperfleet::model::MachineSpec;
//! use hyperfleet::runtime::{docker::Container, Runtime};
//!
//! let mut spec = MachineSpec::container("hyperfleet-test/busybox:latest");
//! if let hyperfleet::model::Workload::Container(c) = &mut spec.workload {
//!     c.cmd = Some(vec!["sleep".into(), "300".into()]);
//! }
//! let c = Container::new("demo", spec)?;
//! c.start().await?;
//! let out = c.exec_cmd(&["uname", "-a"]).await?;
//! print!("{}", String::from_utf8_lossy(&out.stdout));
//! c.remove().await?;
//! # Ok(())
//! # }
//! ```

mod connection;
mod container;
mod create;
mod driver;
mod exec;
mod inspect;
mod output;
mod pull;
mod stream;

use std::time::Duration;

pub use connection::DockerConnection;
pub use container::Container;
pub use driver::DockerDriver;

/// Prefix of every container name; the rest is the machine id.
pub const NAME_PREFIX: &str = "hyperfleet-";
/// Suffix of a container being started, before it replaces the last run's.
pub const NEXT_SUFFIX: &str = "-next";
/// Suffix the last run's container holds for the instant of the swap.
pub const PREV_SUFFIX: &str = "-prev";
pub const LABEL_MACHINE_ID: &str = "hyperfleet.machine-id";
pub const LABEL_MACHINE_NAME: &str = "hyperfleet.machine-name";
pub const LABEL_INSTANCE: &str = "hyperfleet.instance";
/// Instance label of containers made through [`Container::new`], so that no
/// daemon's orphan sweep ever mistakes them for its own.
pub const SDK_INSTANCE: &str = "sdk";

/// Grace period of [`crate::runtime::Runtime::stop`].
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// An image pull that reports nothing for this long is abandoned.
pub const DEFAULT_PULL_STALL: Duration = Duration::from_secs(60);

pub(crate) const RUNTIME: &str = "docker";
