//! The one place drivers are registered: which runtime kinds this daemon
//! serves and with what settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cloud_hypervisor::CloudHypervisorDriver;
use super::docker::{DockerDriver, DEFAULT_PULL_STALL};
use super::fake::FakeDriver;
use super::firecracker::FirecrackerDriver;
use super::Driver;
use crate::error::Result;

/// What the drivers are built from; read from the environment by the daemon.
#[derive(Debug, Clone, Default)]
pub struct DriverSettings {
    /// An image pull that reports nothing for this long fails.
    pub pull_stall: Option<Duration>,
    /// Default VMM binaries (a machine's `vmm_binary` overrides them).
    pub firecracker_bin: Option<PathBuf>,
    pub cloud_hypervisor_bin: Option<PathBuf>,
    /// Where machines' runtime directories are (`<state>/run`, see
    /// `core::run_dir`): the VM drivers look there for VMMs whose machine
    /// is gone. Set by the daemon, which knows its state directory.
    pub run_root: Option<PathBuf>,
    /// Tests only: `<kind>:<dir>` puts the fake runtime in place of `kind`.
    pub fake: Option<String>,
}

impl DriverSettings {
    /// `HYPERFLEET_PULL_STALL_SECS`, `HYPERFLEET_FIRECRACKER_BIN`,
    /// `HYPERFLEET_CLOUD_HYPERVISOR_BIN`, `HYPERFLEET_FAKE_RUNTIME`.
    pub fn from_env() -> DriverSettings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        DriverSettings {
            pull_stall: var("HYPERFLEET_PULL_STALL_SECS")
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| *s > 0.0)
                .map(Duration::from_secs_f64),
            firecracker_bin: var("HYPERFLEET_FIRECRACKER_BIN").map(PathBuf::from),
            cloud_hypervisor_bin: var("HYPERFLEET_CLOUD_HYPERVISOR_BIN").map(PathBuf::from),
            run_root: None,
            fake: var("HYPERFLEET_FAKE_RUNTIME"),
        }
    }
}

/// Every driver this build has, configured.
pub fn drivers(settings: &DriverSettings) -> Result<Vec<Arc<dyn Driver>>> {
    let mut firecracker = FirecrackerDriver::new(settings.firecracker_bin.clone());
    let mut cloud_hypervisor = CloudHypervisorDriver::new(settings.cloud_hypervisor_bin.clone());
    if let Some(root) = &settings.run_root {
        firecracker = firecracker.with_run_root(root);
        cloud_hypervisor = cloud_hypervisor.with_run_root(root);
    }
    let mut drivers: Vec<Arc<dyn Driver>> = vec![
        Arc::new(
            DockerDriver::new().with_pull_stall(settings.pull_stall.unwrap_or(DEFAULT_PULL_STALL)),
        ),
        Arc::new(firecracker),
        Arc::new(cloud_hypervisor),
    ];
    if let Some(setting) = &settings.fake {
        let fake = FakeDriver::from_setting(setting)?;
        drivers.retain(|d| d.kind() != fake.kind());
        drivers.push(Arc::new(fake));
    }
    Ok(drivers)
}
