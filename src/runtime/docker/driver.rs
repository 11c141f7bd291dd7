//! The per-host factory for Docker machines.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::ListContainersOptionsBuilder;

use super::connection::docker_error;
use super::{Container, DockerConnection, DEFAULT_PULL_STALL, LABEL_INSTANCE, LABEL_MACHINE_ID};
use crate::error::Result;
use crate::model::{MachineSpec, RuntimeKind, Verb};
use crate::runtime::{Driver, Health, MachineRef, Runtime, Sink, LIFECYCLE_VERBS};

#[derive(Debug, Clone)]
pub struct DockerDriver {
    conn: DockerConnection,
    pull_stall: Duration,
}

impl Default for DockerDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl DockerDriver {
    /// The local engine (`DOCKER_HOST` or the default socket). Touches nothing.
    pub fn new() -> Self {
        Self::with_connection(DockerConnection::local())
    }

    /// An engine at an explicit address, e.g. `unix:///run/docker.sock`.
    pub fn with_host(host: impl Into<String>) -> Self {
        Self::with_connection(DockerConnection::with_host(host))
    }

    pub fn with_connection(conn: impl Into<DockerConnection>) -> Self {
        DockerDriver {
            conn: conn.into(),
            pull_stall: DEFAULT_PULL_STALL,
        }
    }

    /// How long an image pull may go without reporting progress.
    pub fn with_pull_stall(mut self, stall: Duration) -> Self {
        self.pull_stall = stall;
        self
    }

    pub fn connection(&self) -> &DockerConnection {
        &self.conn
    }

    /// Like [`Driver::runtime`], keeping the concrete type.
    pub fn container(
        &self,
        machine: &MachineRef,
        spec: &MachineSpec,
        notes: Sink,
    ) -> Result<Arc<Container>> {
        Container::with_connection(self.conn.clone(), machine.clone(), spec.clone(), notes)
            .map(|c| Arc::new(c.with_pull_stall(self.pull_stall)))
    }
}

#[async_trait]
impl Driver for DockerDriver {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn verbs(&self) -> &'static [Verb] {
        LIFECYCLE_VERBS
    }

    fn restarts_natively(&self) -> bool {
        true
    }

    async fn health(&self) -> Health {
        self.conn.health().await
    }

    fn runtime(
        &self,
        machine: &MachineRef,
        spec: &MachineSpec,
        notes: Sink,
    ) -> Result<Arc<dyn Runtime>> {
        let container: Arc<dyn Runtime> = self.container(machine, spec, notes)?;
        Ok(container)
    }

    async fn owned_machine_ids(&self, instance: &str) -> Result<Vec<String>> {
        let docker = self.conn.client().await?;
        let filters = HashMap::from([("label", vec![format!("{LABEL_INSTANCE}={instance}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error(e, None))?;
        let ids: BTreeSet<String> = containers
            .into_iter()
            .filter_map(|c| c.labels?.remove(LABEL_MACHINE_ID))
            .collect();
        Ok(ids.into_iter().collect())
    }
}
