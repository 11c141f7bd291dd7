//! The runtime interface every isolation technology implements, and the
//! driver that builds a runtime for one machine.
//!
//! A `Runtime` acts on one machine (the SDK shape: `Container`, later the VM
//! `Machine`s). A `Driver` is the per-host factory the core keeps, one per
//! runtime kind: it probes whether the technology is usable here and builds a
//! `Runtime` for a machine from its spec.

pub mod cloud_hypervisor;
pub mod docker;
pub mod firecracker;
pub mod http;
pub mod pidfd;
pub mod process;
pub mod vmm_process;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::Serialize;

use crate::core::{MachineSpec, RuntimeKind};
use crate::error::{Error, Result};

/// Lifecycle verbs a runtime may support; `ctl` lists the supported ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Start,
    Stop,
    Restart,
    Pause,
    Resume,
    Shutdown,
    Kill,
    Exec,
    Logs,
}

/// A command to run inside a machine. The timeout is a `Duration`, never a bare
/// number, so callers cannot confuse seconds with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
}

/// What the runtime says about a machine right now; used to reconcile the
/// store with reality after a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Running,
    Paused,
    Exited {
        exit_code: i64,
        reason: Option<String>,
    },
    /// The runtime has no trace of the machine.
    Missing,
}

/// Live facts for `info`. Fields a runtime does not know stay `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuntimeInfo {
    pub runtime: RuntimeKind,
    /// The runtime's own word for the state (e.g. Docker's "running").
    pub state: String,
    pub pid: Option<u32>,
    /// Container id, or the VMM's API socket.
    pub handle: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub addresses: Vec<String>,
    pub ports: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Keep the stream open and deliver new output as it comes.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

pub type LogStream = BoxStream<'static, Result<bytes::Bytes>>;

/// Receives human-readable progress lines (image pulls, boot steps) that
/// belong in the machine's `logs`.
pub type ProgressSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Identity of a machine as a runtime sees it: enough to name and label the
/// resources it creates so they can be found again after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRef {
    /// Stable machine id (never reused).
    pub id: String,
    pub name: String,
    /// Id of the daemon's state directory; resources are labelled with it so
    /// two daemons sharing one engine never touch each other's machines.
    pub instance: String,
}

#[async_trait]
pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;

    /// Creates the machine's resources afresh from the spec and starts them.
    async fn start(&self) -> Result<()>;
    /// Graceful stop with the runtime's default grace period.
    async fn stop(&self) -> Result<()>;
    async fn pause(&self) -> Result<()>;
    async fn resume(&self) -> Result<()>;
    /// Asks the workload to stop, forces it after `timeout`.
    async fn shutdown(&self, timeout: Duration) -> Result<()>;
    async fn kill(&self) -> Result<()>;
    /// Removes every resource the machine owns. Succeeds if there is none.
    async fn remove(&self) -> Result<()>;

    async fn is_running(&self) -> Result<bool>;
    async fn pid(&self) -> Result<Option<u32>>;
    async fn info(&self) -> Result<RuntimeInfo>;
    async fn observe(&self) -> Result<Observed>;

    async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput>;
    async fn logs(&self, opts: LogOptions) -> Result<LogStream>;
    /// Waits until the workload exits; returns its exit code.
    async fn wait(&self) -> Result<i64>;

    // Optional powers. A runtime that lacks one says so, cleanly.
    async fn resize(&self, _vcpus: Option<u32>, _mem_mib: Option<u64>) -> Result<()> {
        Err(self.unsupported("resize"))
    }
    async fn add_disk(&self, _path: &std::path::Path, _id: &str) -> Result<()> {
        Err(self.unsupported("disk hot-plug"))
    }
    async fn snapshot(&self, _dest: &std::path::Path) -> Result<()> {
        Err(self.unsupported("snapshots"))
    }

    fn unsupported(&self, operation: &str) -> Error {
        Error::Unsupported {
            runtime: self.kind().to_string(),
            operation: operation.to_owned(),
        }
    }
}

/// Whether a runtime can be used on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Available { detail: String },
    Unavailable { reason: String },
}

#[async_trait]
pub trait Driver: Send + Sync {
    fn kind(&self) -> RuntimeKind;
    fn capabilities(&self) -> &'static [Capability];
    async fn health(&self) -> Health;
    /// Builds the runtime for one machine. Cheap: touches nothing yet.
    fn runtime(
        &self,
        machine: &MachineRef,
        spec: &MachineSpec,
        progress: ProgressSink,
    ) -> Result<Arc<dyn Runtime>>;
    /// Ids of machines of `instance` for which this runtime holds resources,
    /// so the core can remove resources whose machine no longer exists.
    async fn owned_machine_ids(&self, instance: &str) -> Result<Vec<String>>;
}
