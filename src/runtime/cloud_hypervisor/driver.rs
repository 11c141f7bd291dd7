//! The per-host factory for Cloud Hypervisor machines.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::config::{Config, BIN_ENV};
use super::Machine;
use crate::error::Result;
use crate::model::{MachineSpec, RuntimeKind, Verb};
use crate::runtime::vm::{files, VmmBinary};
use crate::runtime::{Driver, Health, MachineRef, Runtime, Sink};

/// What `cat ctl` lists for a Cloud Hypervisor machine: every verb.
pub const VERBS: &[Verb] = &Verb::ALL;

#[derive(Debug, Clone, Default)]
pub struct CloudHypervisorDriver {
    /// The daemon's Cloud Hypervisor (`HYPERFLEET_CLOUD_HYPERVISOR_BIN`); a
    /// machine's `vmm_binary` overrides it.
    binary: Option<PathBuf>,
    /// Where machines' runtime directories are (`<state>/run`), to find
    /// VMMs whose machine is gone. Unknown in library use.
    run_root: Option<PathBuf>,
}

impl CloudHypervisorDriver {
    pub fn new(binary: Option<PathBuf>) -> Self {
        CloudHypervisorDriver {
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
impl Driver for CloudHypervisorDriver {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::CloudHypervisor
    }

    fn verbs(&self) -> &'static [Verb] {
        VERBS
    }

    fn restarts_natively(&self) -> bool {
        false
    }

    async fn health(&self) -> Health {
        VmmBinary::resolve(
            RuntimeKind::CloudHypervisor,
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

    /// Machines of this state directory (`instance`) with a Cloud
    /// Hypervisor pid file in their runtime directory.
    async fn owned_machine_ids(&self, _instance: &str) -> Result<Vec<String>> {
        match &self.run_root {
            Some(root) => files::machines_with_vmm(root, RuntimeKind::CloudHypervisor),
            None => Ok(Vec::new()),
        }
    }
}
