//! The steps of a Cloud Hypervisor start and of a restore from a snapshot,
//! as named chains a caller can extend ([`Handlers`]).
//!
//! start:   validate → spawn → wait-ready → vm-create → vm-boot
//! restore: check-snapshot → spawn → wait-ready → vm-restore → vm-resume
//!
//! Cloud Hypervisor checks little at `vm.create`; `vm.boot` is where a bad
//! configuration (a kernel that is not one, misaligned memory) is refused.
//! Whatever the chain does, [`super::Machine`] makes the start all or
//! nothing: a failed step leaves no VMM behind.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use super::api::RestoreConfig;
use super::Machine;
use crate::error::{Error, Result};
use crate::model::spec::host_file;
use crate::runtime::vm::{errors, Chain};

pub const VALIDATE: &str = "validate";
pub const SPAWN: &str = "spawn";
pub const WAIT_READY: &str = "wait-ready";
pub const VM_CREATE: &str = "vm-create";
pub const VM_BOOT: &str = "vm-boot";
pub const CHECK_SNAPSHOT: &str = "check-snapshot";
pub const VM_RESTORE: &str = "vm-restore";
pub const VM_RESUME: &str = "vm-resume";

/// The file a Cloud Hypervisor snapshot directory always holds.
pub const SNAPSHOT_CONFIG: &str = "config.json";

/// What a restore step works on: the machine, and the snapshot directory.
#[derive(Debug, Clone)]
pub struct Restore {
    pub machine: Machine,
    pub dir: PathBuf,
}

/// The lifecycle chains of a Cloud Hypervisor machine.
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
            .append(VM_CREATE, vm_create)
            .append(VM_BOOT, vm_boot);
        let mut restore = Chain::new();
        restore
            .append(CHECK_SNAPSHOT, check_snapshot)
            .append(SPAWN, |r: Restore| spawn(r.machine))
            .append(WAIT_READY, |r: Restore| wait_ready(r.machine))
            .append(VM_RESTORE, vm_restore)
            .append(VM_RESUME, |r: Restore| vm_resume(r.machine));
        Handlers { start, restore }
    }
}

/// The binary, the socket paths, and every host file the VM boots from.
pub async fn validate(m: Machine) -> Result<()> {
    let c = m.config();
    c.binary.check()?;
    m.files().check_socket_paths()?;
    let kernel = c.kernel.as_deref().ok_or_else(|| {
        Error::IncompleteConfig(
            "cloud-hypervisor needs kernel_image_path; write it to config first".into(),
        )
    })?;
    host_file("kernel_image_path", kernel, false)?;
    if let Some(initramfs) = &c.initramfs {
        host_file("initrd_path", initramfs, false)?;
    }
    for d in &c.disks {
        if let Some(path) = &d.path {
            let id = d.id.as_deref().unwrap_or("?");
            host_file(&format!("disk {id}"), path, true)?;
        }
    }
    Ok(())
}

/// Spawns Cloud Hypervisor detached, its console and log emptied for the
/// new run.
pub async fn spawn(m: Machine) -> Result<()> {
    let sup = m.supervisor();
    if let Some(p) = m.process() {
        return Err(Error::Busy(format!(
            "a cloud-hypervisor VMM (pid {}) already runs for this machine",
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
        .note(&format!("cloud-hypervisor: spawned pid {}", p.pid()));
    Ok(())
}

/// Waits until `vmm.ping` answers, from this very process.
pub async fn wait_ready(m: Machine) -> Result<()> {
    let sup = m.supervisor();
    let p = sup
        .spawned()
        .ok_or_else(|| Error::Runtime(format!("{WAIT_READY}: no VMM was spawned before it")))?;
    let api = m.api();
    let ping = sup
        .wait_ready(&p, &m.config().binary, m.config().ready_timeout, || {
            api.vmm_ping()
        })
        .await?;
    match ping.pid {
        Some(pid) if pid != i64::from(p.pid()) => Err(Error::Runtime(format!(
            "the API socket {} is answered by pid {pid}, not by the cloud-hypervisor just spawned (pid {})",
            m.config().socket_path.display(),
            p.pid()
        ))),
        _ => Ok(()),
    }
}

pub async fn vm_create(m: Machine) -> Result<()> {
    m.api()
        .vm_create(&m.config().vm_config()?)
        .await
        .map_err(errors::http)
}

pub async fn vm_boot(m: Machine) -> Result<()> {
    m.api().vm_boot().await.map_err(errors::http)
}

/// The binary, the socket paths, and a snapshot directory.
pub async fn check_snapshot(r: Restore) -> Result<()> {
    r.machine.config().binary.check()?;
    r.machine.files().check_socket_paths()?;
    host_file("snapshot", &r.dir.join(SNAPSHOT_CONFIG), false)
}

/// Restores the snapshot into the fresh Cloud Hypervisor (paused).
pub async fn vm_restore(r: Restore) -> Result<()> {
    r.machine
        .api()
        .vm_restore(&RestoreConfig::from_dir(&r.dir))
        .await
        .map_err(errors::http)
}

pub async fn vm_resume(m: Machine) -> Result<()> {
    m.api().vm_resume().await.map_err(errors::http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_chains_name_every_api_step_in_order() {
        let h = Handlers::default();
        assert_eq!(
            h.start.names(),
            [VALIDATE, SPAWN, WAIT_READY, VM_CREATE, VM_BOOT]
        );
        assert_eq!(
            h.restore.names(),
            [CHECK_SNAPSHOT, SPAWN, WAIT_READY, VM_RESTORE, VM_RESUME]
        );
    }
}
