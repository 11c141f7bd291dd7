//! The per-host factory for Firecracker machines.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::config::{Config, BIN_ENV};
use super::Machine;
use crate::error::Result;
use crate::model::{MachineSpec, RuntimeKind, Verb};
use crate::runtime::vm::{files, VmmBinary};
use crate::runtime::{Driver, Health, MachineRef, Runtime, Sink};

/// What `cat ctl` lists for a Firecracker machine: the lifecycle, and
/// snapshots. No hot-plug: Firecracker has none, so `resize`, `add-disk`
/// and `remove-device` fail with EOPNOTSUPP.
pub const VERBS: &[Verb] = &[
    Verb::Start,
    Verb::Stop,
    Verb::Restart,
    Verb::Pause,
    Verb::Resume,
    Verb::Shutdown,
    Verb::Kill,
    Verb::Snapshot,
    Verb::Restore,
    Verb::Wait,
];

#[derive(Debug, Clone, Default)]
pub struct FirecrackerDriver {
    /// The daemon's Firecracker (`HYPERFLEET_FIRECRACKER_BIN`); a machine's
    /// `vmm_binary` overrides it.
    binary: Option<PathBuf>,
    /// Where machines' runtime directories are (`<state>/run`), to find
    /// VMMs whose machine is gone. Unknown in library use.
    run_root: Option<PathBuf>,
}

impl FirecrackerDriver {
    pub fn new(binary: Option<PathBuf>) -> Self {
        FirecrackerDriver {
            binary,
            run_root: None,
        }
    }

    pub fn with_run_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.run_root = Some(root.into());
        self
    }

    /// Like [`Driver::runtime`], keeping the concrete type.
    pub fn machine(&self, machine: &MachineRef, spec: &MachineSpec, notes: Sink) -> Machine {
        Machine::with_notes(
            Config::from_spec(machine, spec, self.binary.as_deref()),
            notes,
        )
    }
}

#[async_trait]
impl Driver for FirecrackerDriver {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Firecracker
    }

    fn verbs(&self) -> &'static [Verb] {
        VERBS
    }

    fn restarts_natively(&self) -> bool {
        false
    }

    async fn health(&self) -> Health {
        VmmBinary::resolve(
            RuntimeKind::Firecracker,
            None,
            self.binary.as_deref(),
            BIN_ENV,
        )
        .health()
    }

    fn runtime(
        &self,
        machine: &MachineRef,
        spec: &MachineSpec,
        notes: Sink,
    ) -> Result<Arc<dyn Runtime>> {
        Ok(Arc::new(self.machine(machine, spec, notes)))
    }

    /// Machines of this state directory (`instance`) with a Firecracker pid
    /// file in their runtime directory.
    async fn owned_machine_ids(&self, _instance: &str) -> Result<Vec<String>> {
        match &self.run_root {
            Some(root) => files::machines_with_vmm(root, RuntimeKind::Firecracker),
            None => Ok(Vec::new()),
        }
    }
}
