//! The steps of a Firecracker start and of a restore from a snapshot, as
//! named chains a caller can extend ([`Handlers`], like firecracker-go-sdk's).
//!
//! start:   validate → spawn → wait-ready → machine-config → boot-source →
//!          drives → network-interfaces → vsock → instance-start
//! restore: check-snapshot → spawn → wait-ready → load-snapshot → resume
//!
//! Every step is a public function, so a chain that had one removed can put
//! it back elsewhere. Whatever the chain does, [`super::Machine`] makes the
//! start all or nothing: a failed step leaves no VMM behind.
//!
//! ```no_run
//! # async fn demo() -> hyperfleet::Result<()> {
//! use hyperfleet::runtime::firecracker::{handlers, Config, Machine};
//! use hyperfleet::runtime::Runtime;
//!
//! let config = Config::new("/usr/bin/firecracker", "/run/vm1", "/images/vmlinux");
//! let mut vm = Machine::new(config);
//! // No vsock device, and a word in the log before the boot.
//! vm.handlers_mut().start.remove(handlers::VSOCK);
//! vm.handlers_mut()
//!     .start
//!     .insert_before(handlers::INSTANCE_START, "hello", |m: Machine| async move {
//!         m.notes().note("booting now");
//!         Ok(())
//!     })?;
//! vm.start().await?;
//! # Ok(())
//! # }
//! ```

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use super::api::{MemoryBackend, NetworkOverride, SnapshotLoadParams, VsockOverride};
use super::snapshot::{MEMORY_FILE, STATE_FILE};
use super::Machine;
use crate::error::{Error, Result};
use crate::model::spec::host_file;
use crate::runtime::vm::{errors, Chain};

pub const VALIDATE: &str = "validate";
pub const SPAWN: &str = "spawn";
pub const WAIT_READY: &str = "wait-ready";
pub const MACHINE_CONFIG: &str = "machine-config";
pub const BOOT_SOURCE: &str = "boot-source";
pub const DRIVES: &str = "drives";
pub const NETWORK_INTERFACES: &str = "network-interfaces";
pub const VSOCK: &str = "vsock";
pub const INSTANCE_START: &str = "instance-start";
pub const CHECK_SNAPSHOT: &str = "check-snapshot";
pub const LOAD_SNAPSHOT: &str = "load-snapshot";
pub const RESUME: &str = "resume";

/// What a restore step works on: the machine, and the snapshot directory.
#[derive(Debug, Clone)]
pub struct Restore {
    pub machine: Machine,
    pub dir: PathBuf,
}

/// The lifecycle chains of a Firecracker machine.
#[derive(Debug, Clone)]
pub struct Handlers {
    pub start: Chain<Machine>,
    pub restore: Chain<Restore>,
}

impl Default for Handlers {
    fn default() -> Self {
        let mut start = Chain::new();
        start
            .append(VALIDATE, validate)
            .append(SPAWN, spawn)
            .append(WAIT_READY, wait_ready)
            .append(MACHINE_CONFIG, machine_config)
            .append(BOOT_SOURCE, boot_source)
            .append(DRIVES, drives)
            .append(NETWORK_INTERFACES, network_interfaces)
            .append(VSOCK, vsock)
            .append(INSTANCE_START, instance_start);
        let mut restore = Chain::new();
        restore
            .append(CHECK_SNAPSHOT, check_snapshot)
            .append(SPAWN, |r: Restore| spawn(r.machine))
            .append(WAIT_READY, |r: Restore| wait_ready(r.machine))
            .append(LOAD_SNAPSHOT, load_snapshot)
            .append(RESUME, |r: Restore| resume(r.machine));
        Handlers { start, restore }
    }
}

/// The binary, the socket paths, and every host file the VM boots from.
pub async fn validate(m: Machine) -> Result<()> {
    let c = m.config();
    c.binary.check()?;
    m.files().check_socket_paths()?;
    let kernel = c.kernel_image_path.as_deref().ok_or_else(|| {
        Error::IncompleteConfig(
            "firecracker needs kernel_image_path; write it to config first".into(),
        )
    })?;
    host_file("kernel_image_path", kernel, false)?;
    if let Some(initrd) = &c.initrd_path {
        host_file("initrd_path", initrd, false)?;
    }
    for d in &c.drives {
        if let Some(path) = &d.path_on_host {
            host_file(&format!("drive {}", d.drive_id), path, true)?;
        }
    }
    Ok(())
}

/// Spawns Firecracker detached, its console and log emptied for the new run.
pub async fn spawn(m: Machine) -> Result<()> {
    let sup = m.supervisor();
    if let Some(p) = m.process() {
        return Err(Error::Busy(format!(
            "a firecracker VMM (pid {}) already runs for this machine",
            p.pid()
        )));
    }
    let cmd = m.config().command()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cmd.runtime_dir)
        .map_err(|e| Error::io(format!("create {}", cmd.runtime_dir.display()), e))?;
    sup.console().reset()?;
    let log = m.files().vmm_log();
    std::fs::write(&log, b"").map_err(|e| Error::io(format!("create {}", log.display()), e))?;
    let p = sup.spawn(&cmd, &m.config().binary)?;
    m.notes()
        .note(&format!("firecracker: spawned pid {}", p.pid()));
    Ok(())
}

/// Waits until the API answers, as this machine's Firecracker.
pub async fn wait_ready(m: Machine) -> Result<()> {
    let sup = m.supervisor();
    let p = sup
        .spawned()
        .ok_or_else(|| Error::Runtime(format!("{WAIT_READY}: no VMM was spawned before it")))?;
    let api = m.api();
    let info = sup
        .wait_ready(&p, &m.config().binary, m.config().ready_timeout, || {
            api.describe_instance()
        })
        .await?;
    if info.id != m.config().vm_id {
        return Err(Error::Runtime(format!(
            "the API socket {} answers as Firecracker {:?}, not as {:?}",
            m.config().socket_path.display(),
            info.id,
            m.config().vm_id
        )));
    }
    Ok(())
}

pub async fn machine_config(m: Machine) -> Result<()> {
    m.api()
        .put_machine_config(&m.config().machine_configuration())
        .await
        .map_err(errors::http)
}

pub async fn boot_source(m: Machine) -> Result<()> {
    let boot = m
        .config()
        .boot_source()
        .ok_or_else(|| Error::IncompleteConfig("firecracker needs kernel_image_path".into()))?;
    m.api().put_boot_source(&boot).await.map_err(errors::http)
}

pub async fn drives(m: Machine) -> Result<()> {
    for drive in &m.config().drives {
        m.api().put_drive(drive).await.map_err(errors::http)?;
    }
    Ok(())
}

pub async fn network_interfaces(m: Machine) -> Result<()> {
    for iface in &m.config().network_interfaces {
        m.api()
            .put_network_interface(iface)
            .await
            .map_err(errors::http)?;
    }
    Ok(())
}

pub async fn vsock(m: Machine) -> Result<()> {
    match &m.config().vsock {
        Some(v) => m.api().put_vsock(v).await.map_err(errors::http),
        None => Ok(()),
    }
}

pub async fn instance_start(m: Machine) -> Result<()> {
    m.api().instance_start().await.map_err(errors::http)
}

/// The binary, the socket paths, and the snapshot's two files.
pub async fn check_snapshot(r: Restore) -> Result<()> {
    r.machine.config().binary.check()?;
    r.machine.files().check_socket_paths()?;
    for name in [STATE_FILE, MEMORY_FILE] {
        host_file("snapshot", &r.dir.join(name), false)?;
    }
    Ok(())
}

/// Loads the snapshot into the fresh Firecracker, paused, with its vsock
/// and network interfaces on this machine's socket and TAP devices.
pub async fn load_snapshot(r: Restore) -> Result<()> {
    let c = r.machine.config();
    let params = SnapshotLoadParams {
        snapshot_path: r.dir.join(STATE_FILE),
        mem_backend: MemoryBackend::file(r.dir.join(MEMORY_FILE)),
        resume_vm: Some(false),
        track_dirty_pages: None,
        network_overrides: c
            .network_interfaces
            .iter()
            .map(|i| NetworkOverride {
                iface_id: i.iface_id.clone(),
                host_dev_name: i.host_dev_name.clone(),
            })
            .collect(),
        vsock_override: c.vsock.as_ref().map(|v| VsockOverride {
            uds_path: v.uds_path.clone(),
        }),
    };
    r.machine
        .api()
        .load_snapshot(&params)
        .await
        .map_err(errors::http)
}

pub async fn resume(m: Machine) -> Result<()> {
    m.api().resume().await.map_err(errors::http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_chains_name_every_api_step_in_order() {
        let h = Handlers::default();
        assert_eq!(
            h.start.names(),
            [
                VALIDATE,
                SPAWN,
                WAIT_READY,
                MACHINE_CONFIG,
                BOOT_SOURCE,
                DRIVES,
                NETWORK_INTERFACES,
                VSOCK,
                INSTANCE_START
            ]
        );
        assert_eq!(
            h.restore.names(),
            [CHECK_SNAPSHOT, SPAWN, WAIT_READY, LOAD_SNAPSHOT, RESUME]
        );
    }
}
