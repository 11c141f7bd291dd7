//! [`Machine`]: one Firecracker microVM, usable from Rust without the daemon
//! (the SDK type) and, behind the [`Runtime`] trait, by the daemon's core.
//!
//! ```no_run
//! # async fn demo() -> hyperfleet::Result<()> {
//! use hyperfleet::runtime::firecracker::{Config, DrivesBuilder, Machine};
//! use hyperfleet::runtime::Runtime;
//!
//! let config = Config::new("/usr/bin/firecracker", "/run/vm1", "/images/vmlinux")
//!     .with_kernel_args("console=ttyS0 reboot=k panic=1")
//!     .with_vcpus(2)
//!     .with_memory_mib(256)
//!     .with_drives(DrivesBuilder::new("/images/rootfs.ext4").build());
//! let vm = Machine::new(config);
//! vm.start().await?;
//! vm.pause().await?;
//! vm.create_snapshot("/var/snapshots/vm1".as_ref()).await?;
//! vm.resume().await?;
//! vm.shutdown(std::time::Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! A `Machine` is a cheap handle (clones share the VM); its [`Handlers`]
//! are its own and can be changed before it starts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::api::FirecrackerApi;
use super::config::Config;
use super::handlers::{Handlers, Restore};
use crate::error::Result;
use crate::model::action::DEFAULT_SHUTDOWN_GRACE;
use crate::model::{ExecOutput, ExecRequest, Exit, RuntimeKind, StreamRequest};
use crate::runtime::guest_agent::GuestAgent;
use crate::runtime::http::UnixHttp;
use crate::runtime::vm::{errors, Supervisor, VmFiles, VmmProcess};
use crate::runtime::{null_sink, ExecStreams, Observed, Runtime, RuntimeInfo, Sink};

#[derive(Clone)]
pub struct Machine {
    inner: Arc<Inner>,
    handlers: Arc<Handlers>,
}

struct Inner {
    config: Config,
    files: VmFiles,
    api: FirecrackerApi,
    supervisor: Supervisor,
    notes: Sink,
    /// The guest agent: exec goes through it, over the vsock socket.
    agent: GuestAgent,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("firecracker::Machine")
            .field("vm_id", &self.inner.config.vm_id)
            .field("runtime_dir", &self.inner.config.runtime_dir)
            .finish_non_exhaustive()
    }
}

impl Machine {
    pub fn new(config: Config) -> Machine {
        Self::with_notes(config, null_sink())
    }

    /// A machine whose progress lines (a spawn, ...) go to `notes`.
    pub fn with_notes(config: Config, notes: Sink) -> Machine {
        let files = config.files();
        Machine {
            inner: Arc::new(Inner {
                api: FirecrackerApi::with_client(
                    UnixHttp::new(&config.socket_path).with_timeout(config.api_timeout),
                ),
                supervisor: Supervisor::new(files.clone()),
                agent: GuestAgent::new(
                    config
                        .vsock
                        .as_ref()
                        .map(|v| v.uds_path.clone())
                        .unwrap_or_else(|| files.vsock_socket().to_owned()),
                    config.agent_port,
                ),
                files,
                config,
                notes,
            }),
            handlers: Arc::new(Handlers::default()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn api(&self) -> &FirecrackerApi {
        &self.inner.api
    }

    pub fn files(&self) -> &VmFiles {
        &self.inner.files
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    pub fn notes(&self) -> &Sink {
        &self.inner.notes
    }

    pub fn socket_path(&self) -> &Path {
        &self.inner.config.socket_path
    }

    pub fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    /// This handle's chains, to change before a start.
    pub fn handlers_mut(&mut self) -> &mut Handlers {
        Arc::make_mut(&mut self.handlers)
    }

    /// The running Firecracker process, if one runs.
    pub fn process(&self) -> Option<Arc<VmmProcess>> {
        self.supervisor().process().filter(|p| p.ended().is_none())
    }

    pub(super) fn running(&self) -> Result<Arc<VmmProcess>> {
        self.process()
            .ok_or_else(|| errors::not_running(&self.config().binary))
    }

    /// Restores the machine from a snapshot made by
    /// [`Machine::create_snapshot`]: a fresh Firecracker loads it and resumes.
    pub async fn restore_snapshot(&self, dir: &Path) -> Result<()> {
        let restore = Restore {
            machine: self.clone(),
            dir: dir.to_owned(),
        };
        self.supervisor()
            .start(&self.config().binary, self.handlers.restore.run(restore))
            .await
    }
}

#[async_trait]
impl Runtime for Machine {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Firecracker
    }

    /// Runs the start chain; all or nothing.
    async fn start(&self) -> Result<()> {
        self.supervisor()
            .start(&self.config().binary, self.handlers.start.run(self.clone()))
            .await?;
        // The guest boots on its own time: its agent is looked for meanwhile.
        self.inner.agent.watch_boot();
        Ok(())
    }

    async fn abandon_start(&self) -> Result<()> {
        self.supervisor().abandon_start().await
    }

    async fn stop(&self) -> Result<()> {
        self.halt(DEFAULT_SHUTDOWN_GRACE).await
    }

    /// Ctrl+Alt+Del to the guest; SIGTERM after `grace`; SIGKILL.
    async fn shutdown(&self, grace: Duration) -> Result<()> {
        self.halt(grace).await
    }

    async fn kill(&self) -> Result<()> {
        self.inner.agent.stop_watching();
        self.supervisor().kill().await
    }

    async fn pause(&self) -> Result<()> {
        self.running()?;
        self.api().pause().await.map_err(errors::http)
    }

    async fn resume(&self) -> Result<()> {
        self.running()?;
        self.api().resume().await.map_err(errors::http)
    }

    async fn remove(&self) -> Result<()> {
        self.supervisor().remove().await
    }

    async fn observe(&self) -> Result<Observed> {
        self.look(false).await
    }

    async fn adopt(&self) -> Result<Observed> {
        let seen = self.look(true).await?;
        if matches!(seen, Observed::Running | Observed::Paused) {
            self.inner.agent.watch_boot();
        }
        Ok(seen)
    }

    async fn wait(&self) -> Result<Exit> {
        Ok(self.supervisor().wait_exit().await)
    }

    async fn info(&self) -> Result<RuntimeInfo> {
        self.describe().await
    }

    async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput> {
        self.inner.agent.exec(req).await
    }

    async fn exec_stream(&self, req: &StreamRequest) -> Result<ExecStreams> {
        self.inner.agent.exec_stream(req).await
    }

    async fn copy_out(&self, path: &str) -> Result<ExecStreams> {
        self.inner.agent.copy_out(path).await
    }

    async fn copy_in(&self, path: &str, mode: u32) -> Result<ExecStreams> {
        self.inner.agent.copy_in(path, mode).await
    }

    fn agent_state(&self) -> Option<&'static str> {
        Some(self.inner.agent.state().as_str())
    }

    /// The VMM this machine supervises, while it lives.
    fn known(&self) -> crate::runtime::Known {
        crate::runtime::Known {
            container_id: None,
            pid: self.process().map(|p| p.pid()),
        }
    }

    async fn wait_agent(&self, timeout: Duration) -> Result<()> {
        self.inner.agent.wait_ready(timeout).await
    }

    async fn follow_output(&self, sink: Sink, resume: bool) -> Result<()> {
        self.supervisor().follow_console(sink, resume).await
    }

    async fn snapshot(&self, dir: &Path) -> Result<()> {
        self.create_snapshot(dir).await
    }

    async fn restore(&self, dir: &Path) -> Result<()> {
        self.restore_snapshot(dir).await?;
        self.inner.agent.watch_boot();
        Ok(())
    }
}
