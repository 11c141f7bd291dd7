//! Docker runtime: one machine is one container on the local Docker Engine.
//!
//! The container is always addressed by the deterministic name
//! `hyperfleet-<machine id>`, so a restarted daemon finds it again without
//! having stored Docker's own id. Every container also carries the labels
//! `hyperfleet.machine-id`, `hyperfleet.machine-name` and
//! `hyperfleet.instance`, which is how [`DockerDriver::owned_machine_ids`]
//! finds leftovers.
//!
//! [`Container`] is usable on its own from Rust (no daemon, no store):
//!
//! ```no_run
//! # async fn demo() -> hyperfleet::Result<()> {
//! use hyperfleet::core::MachineSpec;
//! use hyperfleet::runtime::{docker::Container, Runtime};
//!
//! let spec = MachineSpec {
//!     image: Some("hyperfleet-test/busybox:latest".into()),
//!     cmd: Some(vec!["sleep".into(), "300".into()]),
//!     ..Default::default()
//! };
//! let c = Container::new("demo", spec)?;
//! c.start().await?;
//! let out = c.exec_cmd(&["uname", "-a"]).await?;
//! print!("{}", String::from_utf8_lossy(&out.stdout));
//! c.remove().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ExecConfig,
    HostConfig, PortBinding, RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::{
    Capability, Driver, ExecOutput, ExecRequest, Health, LogOptions, LogStream, MachineRef,
    Observed, ProgressSink, Runtime, RuntimeInfo,
};
use crate::core::spec::RestartPolicy;
use crate::core::{MachineSpec, RuntimeKind};
use crate::error::{Error, Result};
use crate::runtime::process;

mod connection;

pub use connection::DockerConnection;
use connection::{docker_error, status_of, REQUEST_TIMEOUT};

/// Prefix of every container name; the rest is the machine id.
pub const NAME_PREFIX: &str = "hyperfleet-";
pub const LABEL_MACHINE_ID: &str = "hyperfleet.machine-id";
pub const LABEL_MACHINE_NAME: &str = "hyperfleet.machine-name";
pub const LABEL_INSTANCE: &str = "hyperfleet.instance";
/// Instance label of containers made through [`Container::new`], so that no
/// daemon's orphan sweep ever mistakes them for its own.
pub const SDK_INSTANCE: &str = "sdk";

/// Grace period of [`Runtime::stop`].
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Each of an exec's stdout and stderr keeps at most this much; the rest is
/// read and dropped so the process never blocks on a full pipe.
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// Extra time a stop request gets beyond its grace period.
const STOP_SLACK: Duration = Duration::from_secs(30);
pub(crate) const RUNTIME: &str = "docker";
const MAX_ID_LEN: usize = 128;

const ALL_CAPABILITIES: &[Capability] = &[
    Capability::Start,
    Capability::Stop,
    Capability::Restart,
    Capability::Pause,
    Capability::Resume,
    Capability::Shutdown,
    Capability::Kill,
    Capability::Exec,
    Capability::Logs,
];

// ---------------------------------------------------------------------------
// Driver

/// The per-host factory for Docker machines.
#[derive(Debug, Clone, Default)]
pub struct DockerDriver {
    conn: DockerConnection,
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
        DockerDriver { conn: conn.into() }
    }

    pub fn connection(&self) -> &DockerConnection {
        &self.conn
    }

    /// Like [`Driver::runtime`], keeping the concrete type.
    pub fn container(
        &self,
        machine: &MachineRef,
        spec: &MachineSpec,
        progress: ProgressSink,
    ) -> Result<Arc<Container>> {
        Container::with_connection(self.conn.clone(), machine.clone(), spec.clone(), progress)
            .map(Arc::new)
    }
}

#[async_trait]
impl Driver for DockerDriver {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn capabilities(&self) -> &'static [Capability] {
        ALL_CAPABILITIES
    }

    async fn health(&self) -> Health {
        self.conn.health().await
    }

    fn runtime(
        &self,
        machine: &MachineRef,
        spec: &MachineSpec,
        progress: ProgressSink,
    ) -> Result<Arc<dyn Runtime>> {
        let container: Arc<dyn Runtime> = self.container(machine, spec, progress)?;
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

// ---------------------------------------------------------------------------
// Container

/// One machine as a Docker container.
pub struct Container {
    conn: DockerConnection,
    machine: MachineRef,
    spec: MachineSpec,
    progress: ProgressSink,
    name: String,
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
        };
        Container::with_connection(DockerConnection::local(), machine, spec, noop_progress())
    }

    /// A container on a given connection (or bollard client). Validates the
    /// machine id only: the spec is checked for completeness at `start`, so
    /// an incomplete spec can still be used to remove a container.
    pub fn with_connection(
        conn: impl Into<DockerConnection>,
        machine: MachineRef,
        spec: MachineSpec,
        progress: ProgressSink,
    ) -> Result<Container> {
        check_id(&machine.id)?;
        Ok(Container {
            conn: conn.into(),
            name: container_name(&machine.id),
            machine,
            spec,
            progress,
        })
    }

    /// Where image-pull progress lines go (by default, nowhere).
    pub fn with_progress(mut self, progress: ProgressSink) -> Self {
        self.progress = progress;
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
        self.exec(&ExecRequest {
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            env: Default::default(),
            timeout: Duration::from_secs(60),
        })
        .await
    }

    /// The output so far (stdout and stderr merged), optionally only the
    /// last `tail` lines, as text.
    pub async fn logs_text(&self, tail: Option<usize>) -> Result<String> {
        let mut stream = self
            .logs(LogOptions {
                follow: false,
                tail,
            })
            .await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn docker(&self) -> Result<Docker> {
        self.conn.client().await
    }

    async fn inspect_with(&self, docker: &Docker) -> Result<Option<ContainerInspectResponse>> {
        match docker.inspect_container(&self.name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(docker_error(e, None)),
        }
    }

    async fn inspect_existing(&self, docker: &Docker) -> Result<ContainerInspectResponse> {
        self.inspect_with(docker)
            .await?
            .ok_or_else(|| self.missing())
    }

    fn missing(&self) -> Error {
        Error::Runtime(format!(
            "container {} does not exist (the machine is not started)",
            self.name
        ))
    }

    fn progress(&self, line: &str) {
        (self.progress)(line);
    }

    async fn remove_with(&self, docker: &Docker) -> Result<()> {
        remove_container(docker, &self.name).await
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

    async fn ensure_image(&self, docker: &Docker, image: &str) -> Result<()> {
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(docker_error(e, None)),
        }
        self.progress(&format!("image {image} is not present locally; pulling it"));
        let (repo, tag) = split_image_reference(image);
        let mut options = CreateImageOptionsBuilder::default().from_image(repo);
        // Without a tag the engine would pull every tag of the repository.
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let mut pull = docker.create_image(Some(options.build()), None, None);
        let mut last = String::new();
        while let Some(item) = pull.next().await {
            let info = item.map_err(|e| match docker_error(e, Some(image)) {
                e @ (Error::RuntimeUnavailable { .. } | Error::ImageNotFound { .. }) => e,
                other => Error::ImageNotFound {
                    image: image.to_owned(),
                    reason: other.to_string(),
                },
            })?;
            // Byte-count ticks would flood the log; keep the step changes.
            let ticking = info
                .progress_detail
                .as_ref()
                .is_some_and(|p| p.current.is_some());
            let Some(status) = info.status.filter(|_| !ticking) else {
                continue;
            };
            let line = match info.id {
                Some(id) if !id.is_empty() => format!("{id}: {status}"),
                _ => status,
            };
            if line != last {
                self.progress(&line);
                last = line;
            }
        }
        self.progress(&format!("pulled image {image}"));
        Ok(())
    }

    fn create_body(&self, image: &str) -> Result<ContainerCreateBody> {
        let spec = &self.spec;
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &spec.ports {
            let key = format!("{}/{}", p.container_port, p.protocol.as_str());
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: None,
                    host_port: Some(p.host_port.to_string()),
                });
        }
        let mut binds = Vec::new();
        for v in &spec.volumes {
            let host = v.host_path.to_string_lossy();
            let guest = v.container_path.to_string_lossy();
            // The bind syntax is colon-separated; a colon in a path would
            // silently change its meaning.
            if host.contains(':') || guest.contains(':') {
                return Err(Error::InvalidConfig(format!(
                    "volume paths must not contain ':' ({host} -> {guest})"
                )));
            }
            let mut bind = format!("{host}:{guest}");
            if v.read_only {
                bind.push_str(":ro");
            }
            binds.push(bind);
        }
        let memory = i64::try_from(spec.mem_size_mib)
            .ok()
            .and_then(|m| m.checked_mul(1 << 20))
            .ok_or_else(|| Error::InvalidConfig("mem_size_mib is too large".into()))?;
        let nano_cpus = i64::from(spec.vcpu_count) * 1_000_000_000;
        let labels = HashMap::from([
            (LABEL_MACHINE_ID.to_owned(), self.machine.id.clone()),
            (LABEL_MACHINE_NAME.to_owned(), self.machine.name.clone()),
            (LABEL_INSTANCE.to_owned(), self.machine.instance.clone()),
        ]);
        Ok(ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: spec.cmd.clone(),
            entrypoint: spec.entrypoint.clone(),
            env: (!spec.env.is_empty())
                .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: (!binds.is_empty()).then_some(binds),
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                restart_policy: Some(DockerRestartPolicy {
                    name: Some(restart_policy(spec.restart)),
                    maximum_retry_count: None,
                }),
                nano_cpus: Some(nano_cpus),
                memory: Some(memory),
                // A machine of N MiB has N MiB, not N more in swap.
                memory_swap: Some(memory),
                ..Default::default()
            }),
            ..Default::default()
        })
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

    async fn run_exec(&self, docker: &Docker, exec_id: &str) -> Result<ExecOutput> {
        let started = docker
            .start_exec(
                exec_id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| docker_error(e, None))?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(Error::Runtime(
                "docker started the exec detached although output was requested".into(),
            ));
        };
        let mut out = ExecOutput::default();
        while let Some(item) = output.next().await {
            match item.map_err(|e| docker_error(e, None))? {
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => {
                    push_capped(&mut out.stdout, &message)
                }
                bollard::container::LogOutput::StdErr { message } => {
                    push_capped(&mut out.stderr, &message)
                }
                bollard::container::LogOutput::StdIn { .. } => {}
            }
        }
        drop(input);
        // The output ends when the process closes it, which may be a moment
        // before Docker has recorded the exit code.
        let mut delay = Duration::from_millis(5);
        loop {
            let inspected = docker
                .inspect_exec(exec_id)
                .await
                .map_err(|e| docker_error(e, None))?;
            if inspected.running != Some(true) {
                out.exit_code = inspected.exit_code.ok_or_else(|| {
                    Error::Runtime("docker reported no exit code for the exec".into())
                })?;
                return Ok(out);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Kills a timed-out exec process (and what it started) with SIGKILL.
    /// Docker has no API for that, so this goes through the host's kill(2),
    /// which is only right when the engine runs on this host: the target
    /// must share the container's pid namespace and not ours.
    async fn kill_exec(&self, docker: &Docker, exec_id: &str) -> Result<(), String> {
        let exec = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| docker_error(e, None).to_string())?;
        if exec.running != Some(true) {
            return Ok(());
        }
        let pid = exec
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or("docker did not report the exec's pid")?;
        let init = self
            .inspect_with(docker)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|c| c.state?.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or("the container has no running init process")?;
        let target = process::pid_namespace(&pid.to_string());
        if target.is_none()
            || target != process::pid_namespace(&init.to_string())
            || target == process::pid_namespace("self")
        {
            return Err(format!(
                "pid {pid} is not a process of container {} on this host \
                 (is the engine remote?)",
                self.name
            ));
        }
        process::kill_tree(pid)?;
        // Wait for Docker to see the exit, so the process is gone (not just
        // signalled) once the caller hears about the timeout.
        for _ in 0..100 {
            match docker.inspect_exec(exec_id).await {
                Ok(e) if e.running == Some(true) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => return Ok(()),
            }
        }
        Err(format!("pid {pid} was sent SIGKILL but still runs"))
    }
}

#[async_trait]
impl Runtime for Container {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    async fn start(&self) -> Result<()> {
        let image = self.spec.image.as_deref().ok_or_else(|| {
            Error::IncompleteConfig("docker needs image; write it to config first".into())
        })?;
        let body = self.create_body(image)?;
        let docker = self.docker().await?;
        // The image first: a start that fails for want of it must leave the
        // last run's container (its exit code, its logs) where it was.
        self.ensure_image(&docker, image).await?;
        // A leftover from an earlier run would hold the name.
        self.remove_with(&docker).await?;
        let options = CreateContainerOptionsBuilder::default()
            .name(&self.name)
            .build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| docker_error(e, Some(image)))?;
        if let Err(e) = docker.start_container(&self.name, None).await {
            let err = docker_error(e, None);
            // A created-but-unstartable container would only be litter.
            if let Err(cleanup) = self.remove_with(&docker).await {
                tracing::warn!("cannot remove {} after failed start: {cleanup}", self.name);
            }
            return Err(err);
        }
        Ok(())
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
        self.remove_with(&docker).await?;
        // Orphans are found by label (see `owned_machine_ids`), so whatever
        // carries this machine's labels under another name goes too.
        for id in self.labelled(&docker).await? {
            remove_container(&docker, &id).await?;
        }
        Ok(())
    }

    /// True while the workload runs; false when it is paused, stopped or
    /// gone (see [`Runtime::observe`] for which).
    async fn is_running(&self) -> Result<bool> {
        Ok(self.observe().await? == Observed::Running)
    }

    async fn pid(&self) -> Result<Option<u32>> {
        let docker = self.docker().await?;
        Ok(self
            .inspect_with(&docker)
            .await?
            .and_then(|c| c.state?.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0))
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

    async fn observe(&self) -> Result<Observed> {
        let docker = self.docker().await?;
        Ok(match self.inspect_with(&docker).await? {
            None => Observed::Missing,
            Some(c) => observed(&c),
        })
    }

    async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput> {
        if req.cmd.is_empty() {
            return Err(Error::InvalidCommand("exec needs a command".into()));
        }
        let docker = self.docker().await?;
        let config = ExecConfig {
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(req.cmd.clone()),
            env: (!req.env.is_empty())
                .then(|| req.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            ..Default::default()
        };
        let created = match docker.create_exec(&self.name, config).await {
            Ok(c) => c,
            Err(e) => {
                return Err(match status_of(&e) {
                    Some(404) => self.missing(),
                    Some(409) => Error::Runtime(format!(
                        "cannot exec in container {}: {}",
                        self.name,
                        if e.to_string().contains("paused") {
                            "it is paused"
                        } else {
                            "it is not running"
                        }
                    )),
                    _ => docker_error(e, None),
                })
            }
        };
        match tokio::time::timeout(req.timeout, self.run_exec(&docker, &created.id)).await {
            Ok(result) => result,
            Err(_) => {
                let outcome = match self.kill_exec(&docker, &created.id).await {
                    Ok(()) => "it was killed".to_owned(),
                    Err(why) => format!("it could not be killed: {why}"),
                };
                Err(Error::Timeout(format!(
                    "{:?} did not finish within {:?}; {outcome}",
                    req.cmd.join(" "),
                    req.timeout
                )))
            }
        }
    }

    async fn logs(&self, opts: LogOptions) -> Result<LogStream> {
        let docker = self.docker().await?;
        // Up front, because a stream would report a missing container only
        // once it is polled.
        self.inspect_existing(&docker).await?;
        let tail = opts
            .tail
            .map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(opts.follow)
            .tail(&tail)
            .build();
        let stream = docker.logs(&self.name, Some(options)).map(|item| {
            item.map(bollard::container::LogOutput::into_bytes)
                .map_err(|e| docker_error(e, None))
        });
        Ok(stream.boxed())
    }

    async fn wait(&self) -> Result<i64> {
        let docker = self.docker().await?;
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waited = docker.wait_container(&self.name, Some(options));
        match waited.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as an error; it is a result.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) if status_of(&e) == Some(404) => Err(self.missing()),
            Some(Err(e)) => Err(docker_error(e, None)),
            None => Err(Error::Runtime(
                "docker ended the wait without an exit code".into(),
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

async fn remove_container(docker: &Docker, name_or_id: &str) -> Result<()> {
    // Anonymous volumes go too (`v`): they belong to this container alone.
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name_or_id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(docker_error(e, None)),
    }
}

fn noop_progress() -> ProgressSink {
    Arc::new(|_: &str| {})
}

fn container_name(id: &str) -> String {
    format!("{NAME_PREFIX}{id}")
}

/// Docker names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; the prefix supplies the
/// first character.
fn check_id(id: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidName {
        name: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("machine id is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid("machine id is longer than 128 bytes"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "machine id may only hold letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

fn restart_policy(p: RestartPolicy) -> RestartPolicyNameEnum {
    match p {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
    }
}

/// Splits `repo[:tag]` (a digest reference stays whole). The tag is the
/// part after the last ':' of the last path component, so a registry port
/// (`host:5000/x`) is not mistaken for one.
fn split_image_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], Some(&image[last + i + 1..])),
        None => (image, Some("latest")),
    }
}

fn push_capped(buf: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_EXEC_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Docker's zero time, meaning "never".
fn real_time(t: Option<String>) -> Option<String> {
    t.filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}

fn observed(c: &ContainerInspectResponse) -> Observed {
    let Some(state) = &c.state else {
        return Observed::Missing;
    };
    let exited = |reason: Option<String>| Observed::Exited {
        exit_code: state.exit_code.unwrap_or(0),
        reason,
    };
    let error = state.error.clone().filter(|e| !e.is_empty());
    match state.status {
        Some(ContainerStateStatusEnum::PAUSED) => Observed::Paused,
        // A restarting container is in its restart policy's hands; from the
        // machine's point of view it has not stopped.
        Some(ContainerStateStatusEnum::RUNNING)
        | Some(ContainerStateStatusEnum::RESTARTING)
        | Some(ContainerStateStatusEnum::STOPPING) => Observed::Running,
        Some(ContainerStateStatusEnum::CREATED) => {
            exited(error.or_else(|| Some("created but never started".into())))
        }
        Some(ContainerStateStatusEnum::DEAD) => exited(error.or_else(|| Some("dead".into()))),
        _ if state.paused == Some(true) => Observed::Paused,
        _ if state.running == Some(true) => Observed::Running,
        _ if state.oom_killed == Some(true) => exited(Some("OOM killed".into())),
        _ => exited(error),
    }
}

fn runtime_info(c: ContainerInspectResponse) -> RuntimeInfo {
    let state = c.state.unwrap_or_default();
    let word = state
        .status
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let stopped = !matches!(
        state.status,
        Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::PAUSED)
            | Some(ContainerStateStatusEnum::RESTARTING)
            | Some(ContainerStateStatusEnum::CREATED)
    );
    let mut error = state.error.filter(|e| !e.is_empty());
    if state.oom_killed == Some(true) && error.is_none() {
        error = Some("OOM killed".into());
    }
    let mut addresses = BTreeSet::new();
    let mut ports = BTreeSet::new();
    if let Some(net) = c.network_settings {
        for endpoint in net.networks.unwrap_or_default().into_values() {
            for addr in [endpoint.ip_address, endpoint.global_ipv6_address]
                .into_iter()
                .flatten()
            {
                if !addr.is_empty() {
                    addresses.insert(addr);
                }
            }
        }
        for (guest, bindings) in net.ports.unwrap_or_default() {
            for b in bindings.unwrap_or_default() {
                let Some(host_port) = b.host_port.filter(|p| !p.is_empty()) else {
                    continue;
                };
                let ip = b.host_ip.unwrap_or_default();
                // IPv4 and IPv6 wildcards are one published port to a reader.
                if ip.is_empty() || ip == "0.0.0.0" || ip == "::" {
                    ports.insert(format!("{host_port}->{guest}"));
                } else {
                    ports.insert(format!("{ip}:{host_port}->{guest}"));
                }
            }
        }
    }
    RuntimeInfo {
        runtime: RuntimeKind::Docker,
        state: word,
        pid: state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0),
        handle: c.id,
        started_at: real_time(state.started_at),
        finished_at: real_time(state.finished_at),
        exit_code: if stopped { state.exit_code } else { None },
        error,
        addresses: addresses.into_iter().collect(),
        ports: ports.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_at_the_tag() {
        assert_eq!(
            split_image_reference("busybox"),
            ("busybox", Some("latest"))
        );
        assert_eq!(
            split_image_reference("busybox:1.36"),
            ("busybox", Some("1.36"))
        );
        assert_eq!(
            split_image_reference("localhost:5000/x/y"),
            ("localhost:5000/x/y", Some("latest"))
        );
        assert_eq!(
            split_image_reference("localhost:5000/x/y:v2"),
            ("localhost:5000/x/y", Some("v2"))
        );
        assert_eq!(
            split_image_reference("busybox@sha256:abcd"),
            ("busybox@sha256:abcd", None)
        );
    }

    #[test]
    fn machine_ids_must_make_valid_container_names() {
        check_id("3f1c2a9e-0b7d-4c1e-9a53-1d2f3e4a5b6c").unwrap();
        check_id("web.1_a").unwrap();
        for bad in ["", "a/b", "a b", "ä", "a:b", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(
                matches!(check_id(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn exec_output_is_capped() {
        let mut buf = vec![0; MAX_EXEC_OUTPUT - 2];
        push_capped(&mut buf, b"abcd");
        assert_eq!(buf.len(), MAX_EXEC_OUTPUT);
        assert_eq!(&buf[MAX_EXEC_OUTPUT - 2..], b"ab");
        push_capped(&mut buf, b"more");
        assert_eq!(buf.len(), MAX_EXEC_OUTPUT);
    }

    #[test]
    fn create_body_carries_the_spec() {
        let spec = MachineSpec::parse(
            br#"{"image":"img","vcpu_count":2,"mem_size_mib":64,
                 "ports":[{"host_port":8080,"container_port":80},
                          {"host_port":8081,"container_port":80},
                          {"host_port":5353,"container_port":53,"protocol":"udp"}],
                 "volumes":[{"host_path":"/srv","container_path":"/data","read_only":true}],
                 "env":{"A":"1"},"restart":"on-failure","user":"nobody","working_dir":"/tmp"}"#,
        )
        .unwrap();
        let machine = MachineRef {
            id: "m1".into(),
            name: "web".into(),
            instance: "i1".into(),
        };
        let c = Container::with_connection(
            DockerConnection::with_host("unix:///nonexistent.sock"),
            machine,
            spec,
            noop_progress(),
        )
        .unwrap();
        assert_eq!(c.name(), "hyperfleet-m1");
        let body = c.create_body("img").unwrap();
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(2_000_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.binds, Some(vec!["/srv:/data:ro".to_owned()]));
        let bindings = host.port_bindings.unwrap();
        assert_eq!(bindings["80/tcp"].as_ref().unwrap().len(), 2);
        assert_eq!(
            bindings["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("5353")
        );
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::ON_FAILURE)
        );
        assert_eq!(body.env, Some(vec!["A=1".to_owned()]));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_MACHINE_ID], "m1");
        assert_eq!(labels[LABEL_MACHINE_NAME], "web");
        assert_eq!(labels[LABEL_INSTANCE], "i1");
        let mut exposed = body.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp".to_owned(), "80/tcp".to_owned()]);
    }

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
