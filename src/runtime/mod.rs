//! The runtime interface every isolation technology implements, and the
//! driver that builds a runtime for one machine.
//!
//! A `Runtime` acts on one machine (the SDK shape: `Container`, the VM
//! `Machine`s). A `Driver` is the per-host factory the core keeps, one per
//! runtime kind: it probes whether the technology is usable here and builds
//! a `Runtime` for a machine from its spec. Drivers are registered in one
//! place, [`registry`].

pub mod cloud_hypervisor;
pub mod docker;
pub mod fake;
pub mod firecracker;
pub mod guest_agent;
pub mod http;
pub mod pidfd;
pub mod process;
pub mod registry;
pub mod stream;
pub mod vm;
pub mod vmm_process;

pub use stream::{
    ended_at_once, exec_channels, ExecControl, ExecEnds, ExecStreams, StreamOutput, CONTROL_DEPTH,
    STREAM_DEPTH,
};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{ExecOutput, ExecRequest, Exit, MachineSpec, RuntimeKind, StreamRequest, Verb};

/// What the runtime says about a machine's workload right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Running,
    Paused,
    /// Between states (Docker's created, removing): not yet known. Whoever
    /// asked looks again later rather than record a guess.
    Transitional(String),
    /// Between two runs of the runtime's own restart policy (Docker's
    /// restarting). The policy owns the workload and brings it back by
    /// itself, so it counts as running: putting it down would fight it.
    Restarting,
    Exited {
        exit: Exit,
        reason: Option<String>,
    },
    /// The runtime has no trace of the machine.
    Missing,
}

/// Live facts a runtime already holds, learned when it made or last looked
/// at its workload: had without asking the engine anything, so a list of
/// every machine can show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// The container of the current or last run.
    pub container_id: Option<String>,
    /// The VMM's pid while it runs.
    pub pid: Option<u32>,
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
    /// Whatever else the runtime reports (a VMM's own description of the VM).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// Where a runtime puts what it has to say about a machine: the workload's
/// output and hyperfleet's own progress lines. The core owns the log
/// behind it; a runtime never replays or truncates it except through here.
pub trait LogSink: Send + Sync {
    /// Workload output (a container's stdout/stderr, a VM's serial console).
    fn output(&self, bytes: &[u8]);
    /// A line of hyperfleet's own (`[hyperfleet] pulling image ...`).
    fn note(&self, line: &str);
    /// Starts the run's log afresh: a runtime that can only replay a run's
    /// output from its beginning calls this before replaying.
    fn restart(&self);
}

pub type Sink = Arc<dyn LogSink>;

/// A sink that drops everything (library use without a daemon).
pub struct NullSink;

impl LogSink for NullSink {
    fn output(&self, _: &[u8]) {}
    fn note(&self, _: &str) {}
    fn restart(&self) {}
}

pub fn null_sink() -> Sink {
    Arc::new(NullSink)
}

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
    /// The machine's private directory for sockets, pid files and console
    /// logs. It exists while the machine does and is removed with it.
    pub runtime_dir: PathBuf,
}

#[async_trait]
pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;

    /// Creates the machine's workload afresh from the spec and starts it.
    /// On failure nothing new is left behind and the previous run's
    /// leftovers (its exit code, its logs) are untouched. The future may be
    /// dropped half-way (a `kill` cancelled the start); the caller then
    /// calls [`Runtime::abandon_start`].
    async fn start(&self) -> Result<()>;
    /// Removes whatever a cancelled or interrupted `start` created, keeping
    /// the previous run's leftovers. Succeeds if there is nothing.
    async fn abandon_start(&self) -> Result<()>;
    /// Graceful stop with the runtime's default grace period.
    async fn stop(&self) -> Result<()>;
    /// Asks the workload to stop, forces it after `grace`.
    async fn shutdown(&self, grace: Duration) -> Result<()>;
    async fn kill(&self) -> Result<()>;
    async fn pause(&self) -> Result<()>;
    async fn resume(&self) -> Result<()>;
    /// Removes every resource the machine owns. Succeeds if there is none.
    async fn remove(&self) -> Result<()>;

    async fn observe(&self) -> Result<Observed>;
    /// For a daemon that just started: finishes or rolls back whatever an
    /// earlier daemon left half-done (a start interrupted between creating
    /// the new workload and retiring the old), so that at most one workload
    /// of the machine exists, then observes it. Starts nothing.
    async fn adopt(&self) -> Result<Observed> {
        self.observe().await
    }
    /// Waits until the workload ends and says how.
    async fn wait(&self) -> Result<Exit>;
    async fn info(&self) -> Result<RuntimeInfo>;

    async fn is_running(&self) -> Result<bool> {
        Ok(self.observe().await? == Observed::Running)
    }
    async fn pid(&self) -> Result<Option<u32>> {
        Ok(self.info().await?.pid)
    }

    async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput>;
    /// Runs a command with its stdin, stdout and stderr attached, optionally
    /// on a pty, with no cap on the streams.
    async fn exec_stream(&self, _req: &StreamRequest) -> Result<ExecStreams> {
        Err(self.unsupported("attached exec"))
    }
    /// Streams a file out of the machine (its bytes as stdout; exit 0 once
    /// whole). By default through `cat` in the machine.
    async fn copy_out(&self, path: &str) -> Result<ExecStreams> {
        self.exec_stream(&StreamRequest {
            cmd: vec!["cat".into(), "--".into(), path.into()],
            env: Default::default(),
            working_dir: None,
            user: None,
            timeout: None,
            tty: None,
        })
        .await
    }
    /// Streams a file into the machine (its bytes as stdin; the end of
    /// stdin ends it; exit 0 once written). By default through `sh`.
    async fn copy_in(&self, path: &str, mode: u32) -> Result<ExecStreams> {
        self.exec_stream(&StreamRequest {
            cmd: vec![
                "sh".into(),
                "-c".into(),
                format!("cat > \"$1\" && chmod {mode:o} \"$1\""),
                "sh".into(),
                path.into(),
            ],
            env: Default::default(),
            working_dir: None,
            user: None,
            timeout: None,
            tty: None,
        })
        .await
    }
    /// Copies the current run's output into `sink` as it is produced, until
    /// the workload ends. `resume` says the run began under an earlier
    /// daemon: the output produced since is to be caught up.
    async fn follow_output(&self, sink: Sink, resume: bool) -> Result<()>;

    // Optional powers. A runtime that lacks one says so, cleanly.
    async fn resize(&self, _vcpus: Option<u32>, _mem_mib: Option<u64>) -> Result<()> {
        Err(self.unsupported("resize"))
    }
    async fn add_disk(&self, _path: &Path, _id: &str, _read_only: bool) -> Result<()> {
        Err(self.unsupported("disk hot-plug"))
    }
    async fn remove_device(&self, _id: &str) -> Result<()> {
        Err(self.unsupported("device hot-unplug"))
    }
    async fn snapshot(&self, _dir: &Path) -> Result<()> {
        Err(self.unsupported("snapshots"))
    }
    async fn restore(&self, _dir: &Path) -> Result<()> {
        Err(self.unsupported("restoring snapshots"))
    }

    /// What is known of the guest agent (`waiting`, `ready`, `absent`), for
    /// runtimes whose workload has one.
    fn agent_state(&self) -> Option<&'static str> {
        None
    }
    /// The live facts at hand, without a call to the engine.
    fn known(&self) -> Known {
        Known::default()
    }
    /// Blocks until the guest agent answers.
    async fn wait_agent(&self, _timeout: Duration) -> Result<()> {
        Err(self.unsupported("waiting for a guest agent"))
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

impl Health {
    pub fn is_available(&self) -> bool {
        matches!(self, Health::Available { .. })
    }
}

#[async_trait]
pub trait Driver: Send + Sync {
    fn kind(&self) -> RuntimeKind;
    /// The `ctl` verbs this runtime supports, in `Verb::ALL` order.
    fn verbs(&self) -> &'static [Verb];
    /// Whether the runtime applies a machine's restart policy itself (Docker
    /// does); otherwise the core does.
    fn restarts_natively(&self) -> bool;
    async fn health(&self) -> Health;
    /// Builds the runtime for one machine. Cheap: touches nothing yet.
    /// `notes` receives progress lines (image pulls, boot steps).
    fn runtime(
        &self,
        machine: &MachineRef,
        spec: &MachineSpec,
        notes: Sink,
    ) -> Result<Arc<dyn Runtime>>;
    /// Ids of machines of `instance` for which this runtime holds resources,
    /// so the core can remove resources whose machine no longer exists.
    async fn owned_machine_ids(&self, instance: &str) -> Result<Vec<String>>;
}

/// Every lifecycle verb; what a runtime with no optional powers supports.
pub const LIFECYCLE_VERBS: &[Verb] = &[
    Verb::Start,
    Verb::Stop,
    Verb::Restart,
    Verb::Pause,
    Verb::Resume,
    Verb::Shutdown,
    Verb::Kill,
    Verb::Wait,
];
