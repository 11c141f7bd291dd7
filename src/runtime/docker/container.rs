//! One machine as a Docker container: the [`Runtime`] implementation.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptions, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::connection::{docker_error, status_of, REQUEST_TIMEOUT};
use super::create::{self, check_id, container_name};
use super::inspect::{observed, runtime_info};
use super::{
    pull, DockerConnection, DEFAULT_PULL_STALL, LABEL_INSTANCE, LABEL_MACHINE_ID, NEXT_SUFFIX,
    PREV_SUFFIX, SDK_INSTANCE, STOP_GRACE,
};
use crate::error::{Error, Result, ResultExt};
use crate::model::{ExecOutput, ExecRequest, Exit, MachineSpec, RuntimeKind, StreamRequest};
use crate::runtime::{null_sink, ExecStreams, MachineRef, Observed, Runtime, RuntimeInfo, Sink};

/// Extra time a stop request gets beyond its grace period.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// One machine as a Docker container.
pub struct Container {
    pub(super) conn: DockerConnection,
    pub(super) machine: MachineRef,
    pub(super) spec: MachineSpec,
    pub(super) notes: Sink,
    pub(super) name: String,
    pub(super) pull_stall: Duration,
    /// The id of the container last made or seen under `name`.
    pub(super) known_id: std::sync::Mutex<Option<String>>,
}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.name)
            .field("machine", &self.machine)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Container {
    /// A container for machine `id` on the local engine (`DOCKER_HOST` or
    /// the default socket), labelled with the [`SDK_INSTANCE`] instance.
    /// Validates `id` and `spec`; contacts nothing.
    pub fn new(id: &str, spec: MachineSpec) -> Result<Container> {
        spec.validate()?;
        let machine = MachineRef {
            id: id.to_owned(),
            name: id.to_owned(),
            instance: SDK_INSTANCE.to_owned(),
            runtime_dir: std::env::temp_dir(),
        };
        Container::with_connection(DockerConnection::local(), machine, spec, null_sink())
    }

    /// A container on a given connection (or bollard client). Validates the
    /// machine id only: the spec is checked for completeness at `start`, so
    /// an incomplete spec can still be used to remove a container.
    pub fn with_connection(
        conn: impl Into<DockerConnection>,
        machine: MachineRef,
        spec: MachineSpec,
        notes: Sink,
    ) -> Result<Container> {
        check_id(&machine.id)?;
        Ok(Container {
            conn: conn.into(),
            name: container_name(&machine.id),
            machine,
            spec,
            notes,
            pull_stall: DEFAULT_PULL_STALL,
            known_id: std::sync::Mutex::new(None),
        })
    }

    /// Where image-pull progress lines go (by default, nowhere).
    pub fn with_notes(mut self, notes: Sink) -> Self {
        self.notes = notes;
        self
    }

    /// How long an image pull may go without reporting progress.
    pub fn with_pull_stall(mut self, stall: Duration) -> Self {
        self.pull_stall = stall;
        self
    }

    /// Docker's name for this container: `hyperfleet-<machine id>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn machine(&self) -> &MachineRef {
        &self.machine
    }

    pub fn spec(&self) -> &MachineSpec {
        &self.spec
    }

    pub fn connection(&self) -> &DockerConnection {
        &self.conn
    }

    /// Docker's full description of the container, or `None` if it does
    /// not exist.
    pub async fn inspect(&self) -> Result<Option<ContainerInspectResponse>> {
        let docker = self.conn.client().await?;
        self.inspect_with(&docker).await
    }

    /// Runs `cmd` with no extra environment and a one-minute timeout.
    pub async fn exec_cmd(&self, cmd: &[&str]) -> Result<ExecOutput> {
        let mut req = ExecRequest::new(cmd.iter().copied());
        req.timeout = Duration::from_secs(60);
        self.exec(&req).await
    }

    pub(super) async fn docker(&self) -> Result<Docker> {
        self.conn.client().await
    }

    fn next_name(&self) -> String {
        format!("{}{NEXT_SUFFIX}", self.name)
    }

    fn prev_name(&self) -> String {
        format!("{}{PREV_SUFFIX}", self.name)
    }

    pub(super) async fn inspect_with(
        &self,
        docker: &Docker,
    ) -> Result<Option<ContainerInspectResponse>> {
        let found = inspect_named(docker, &self.name).await?;
        if let Some(id) = found.as_ref().and_then(|c| c.id.clone()) {
            self.remember_id(id);
        }
        Ok(found)
    }

    fn remember_id(&self, id: String) {
        *self.known_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
    }

    pub(super) async fn inspect_existing(
        &self,
        docker: &Docker,
    ) -> Result<ContainerInspectResponse> {
        self.inspect_with(docker)
            .await?
            .ok_or_else(|| self.missing())
    }

    pub(super) fn missing(&self) -> Error {
        Error::Runtime(format!(
            "container {} does not exist (the machine is not started)",
            self.name
        ))
    }

    /// Ids of the containers labelled as this machine's, whatever their name.
    async fn labelled(&self, docker: &Docker) -> Result<Vec<String>> {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_INSTANCE}={}", self.machine.instance),
                format!("{LABEL_MACHINE_ID}={}", self.machine.id),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error(e, None))?;
        Ok(containers.into_iter().filter_map(|c| c.id).collect())
    }

    /// Stops with `grace` before SIGKILL. The request itself may take the
    /// whole grace period, so it gets a deadline that outlasts it.
    async fn stop_with_grace(&self, grace: Duration) -> Result<()> {
        let docker = self.docker().await?;
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let t = i32::try_from(secs).unwrap_or(i32::MAX);
        let patient = docker.with_timeout(
            REQUEST_TIMEOUT.max(Duration::from_secs(secs).saturating_add(STOP_SLACK)),
        );
        let options = StopContainerOptionsBuilder::default().t(t).build();
        // 304 (already stopped) is a success for bollard; 404 means there is
        // nothing left to stop.
        match patient.stop_container(&self.name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(docker_error(e, None)),
        }
    }

    /// Puts the started `-next` container in place of the last run's. The
    /// last run's is renamed aside first, so a failure half-way can be
    /// rolled back (here, or by [`Runtime::adopt`] after a crash).
    async fn swap_in(&self, docker: &Docker) -> Result<()> {
        let had_previous = inspect_named(docker, &self.name).await?.is_some();
        if had_previous {
            remove_container(docker, &self.prev_name()).await?;
            rename(docker, &self.name, &self.prev_name()).await?;
        }
        if let Err(e) = rename(docker, &self.next_name(), &self.name).await {
            if had_previous {
                let _ = rename(docker, &self.prev_name(), &self.name).await;
            }
            return Err(e);
        }
        // The new run is in place: the swap has happened. A `-prev` that
        // cannot be removed now is removed by `adopt`, `remove` or the next
        // start, so it must not turn this start into a failure.
        if had_previous {
            if let Err(e) = remove_container(docker, &self.prev_name()).await {
                tracing::warn!(container = %self.name, "cannot remove the last run's container: {}", e.report());
            }
        }
        Ok(())
    }
}

async fn inspect_named(docker: &Docker, name: &str) -> Result<Option<ContainerInspectResponse>> {
    match docker.inspect_container(name, None).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if status_of(&e) == Some(404) => Ok(None),
        Err(e) => Err(docker_error(e, None)),
    }
}

async fn rename(docker: &Docker, from: &str, to: &str) -> Result<()> {
    docker
        .rename_container(
            from,
            RenameContainerOptions {
                name: to.to_owned(),
            },
        )
        .await
        .map_err(|e| docker_error(e, None))
        .with_context(|| format!("rename container {from} to {to}"))
}

async fn remove_container(docker: &Docker, name_or_id: &str) -> Result<()> {
    // Anonymous volumes go too (`v`): they belong to this container alone.
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name_or_id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => {
            Err(docker_error(e, None)).with_context(|| format!("remove container {name_or_id}"))
        }
    }
}

fn is_running(c: &ContainerInspectResponse) -> bool {
    matches!(
        observed(c),
        Observed::Running | Observed::Paused | Observed::Restarting
    )
}

#[async_trait]
impl Runtime for Container {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn known(&self) -> crate::runtime::Known {
        crate::runtime::Known {
            container_id: self
                .known_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            pid: None,
        }
    }

    async fn start(&self) -> Result<()> {
        let c = self.spec.container_spec().ok_or_else(|| {
            Error::InvalidConfig("a Docker machine needs a container spec".into())
        })?;
        let image = c.image.as_deref().ok_or_else(|| {
            Error::IncompleteConfig("docker needs image; write it to config first".into())
        })?;
        let body = create::body(&self.machine, &self.spec, c, image)?;
        let docker = self.docker().await?;
        // The image first: a start that fails for want of it must leave the
        // last run's container (its exit code, its logs) where it was.
        pull::ensure_image(&docker, image, self.pull_stall, &*self.notes)
            .await
            .context("pull image")?;
        let next = self.next_name();
        // A leftover of an interrupted start would hold the name.
        remove_container(&docker, &next).await?;
        let options = CreateContainerOptionsBuilder::default().name(&next).build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| docker_error(e, Some(image)))
            .context("create container")?;
        if let Err(e) = docker.start_container(&next, None).await {
            let err = docker_error(e, None).context("start container");
            // The last run's container stays; the new one would only be litter.
            if let Err(cleanup) = remove_container(&docker, &next).await {
                tracing::warn!(container = %next, "cannot remove after failed start: {}", cleanup.report());
            }
            return Err(err);
        }
        if let Err(e) = self.swap_in(&docker).await {
            let _ = remove_container(&docker, &next).await;
            return Err(e);
        }
        // Renamed into place, it is the one `name` now names.
        self.remember_id(created.id);
        Ok(())
    }

    async fn abandon_start(&self) -> Result<()> {
        let docker = self.docker().await?;
        remove_container(&docker, &self.next_name()).await
    }

    async fn stop(&self) -> Result<()> {
        self.stop_with_grace(STOP_GRACE).await
    }

    async fn pause(&self) -> Result<()> {
        let docker = self.docker().await?;
        docker
            .pause_container(&self.name)
            .await
            .map_err(|e| docker_error(e, None))
    }

    async fn resume(&self) -> Result<()> {
        let docker = self.docker().await?;
        docker
            .unpause_container(&self.name)
            .await
            .map_err(|e| docker_error(e, None))
    }

    async fn shutdown(&self, timeout: Duration) -> Result<()> {
        self.stop_with_grace(timeout).await
    }

    async fn kill(&self) -> Result<()> {
        let docker = self.docker().await?;
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match docker.kill_container(&self.name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // Docker answers 409 for a container that is not running; ask
            // rather than parse the message.
            Err(e) if status_of(&e) == Some(409) => match self.inspect_with(&docker).await? {
                Some(c) if c.state.as_ref().and_then(|s| s.running) == Some(true) => {
                    Err(docker_error(e, None))
                }
                _ => Ok(()),
            },
            Err(e) => Err(docker_error(e, None)),
        }
    }

    async fn remove(&self) -> Result<()> {
        let docker = self.docker().await?;
        for name in [self.next_name(), self.name.clone(), self.prev_name()] {
            remove_container(&docker, &name).await?;
        }
        // Orphans are found by label (see `owned_machine_ids`), so whatever
        // carries this machine's labels under another name goes too.
        for id in self.labelled(&docker).await? {
            remove_container(&docker, &id).await?;
        }
        Ok(())
    }

    async fn observe(&self) -> Result<Observed> {
        let docker = self.docker().await?;
        Ok(match self.inspect_with(&docker).await? {
            None => Observed::Missing,
            Some(c) => observed(&c),
        })
    }

    /// Completes or rolls back a swap an earlier daemon was killed in: a
    /// running `-next` is the run that start created, so it is put in place;
    /// one that is not running is removed; a `-prev` left aside goes back
    /// if nothing took its place, or goes.
    async fn adopt(&self) -> Result<Observed> {
        let docker = self.docker().await?;
        if let Some(next) = inspect_named(&docker, &self.next_name()).await? {
            if is_running(&next) {
                self.swap_in(&docker)
                    .await
                    .context("finish an interrupted start")?;
            } else {
                remove_container(&docker, &self.next_name()).await?;
            }
        }
        if inspect_named(&docker, &self.prev_name()).await?.is_some() {
            if inspect_named(&docker, &self.name).await?.is_some() {
                remove_container(&docker, &self.prev_name()).await?;
            } else {
                rename(&docker, &self.prev_name(), &self.name).await?;
            }
        }
        self.observe().await
    }

    async fn wait(&self) -> Result<Exit> {
        let docker = self.docker().await?;
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waited = docker.wait_container(&self.name, Some(options));
        match waited.next().await {
            Some(Ok(r)) => Ok(Exit::Code(r.status_code)),
            // bollard reports a non-zero exit as an error; it is a result.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(Exit::Code(code)),
            Some(Err(e)) if status_of(&e) == Some(404) => Err(self.missing()),
            Some(Err(e)) => Err(docker_error(e, None)),
            None => Err(Error::Runtime(
                "docker ended the wait without an exit code".into(),
            )),
        }
    }

    async fn info(&self) -> Result<RuntimeInfo> {
        let docker = self.docker().await?;
        let Some(c) = self.inspect_with(&docker).await? else {
            return Ok(RuntimeInfo {
                runtime: RuntimeKind::Docker,
                state: "missing".into(),
                ..Default::default()
            });
        };
        Ok(runtime_info(c))
    }

    async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput> {
        self.exec_once(req).await
    }

    async fn exec_stream(&self, req: &StreamRequest) -> Result<ExecStreams> {
        self.exec_attached(req).await
    }

    async fn follow_output(&self, sink: Sink, resume: bool) -> Result<()> {
        self.follow(sink, resume).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_engine_is_unavailable() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = DockerConnection::with_host("unix:///nonexistent.sock");
        let err = rt.block_on(conn.client()).unwrap_err();
        assert!(matches!(err, Error::RuntimeUnavailable { .. }), "{err}");
        let err = rt
            .block_on(DockerConnection::with_host("ssh://x").client())
            .unwrap_err();
        assert!(matches!(err, Error::RuntimeUnavailable { .. }), "{err}");
    }
}
