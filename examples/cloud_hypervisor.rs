//! Runs one Cloud Hypervisor microVM end to end through the library alone:
//! no daemon, no store, just `cloud_hypervisor::Machine` and the real binary.
//!
//! ```sh
//! HYPERFLEET_CLOUD_HYPERVISOR_BIN=/usr/bin/cloud-hypervisor cargo run --example cloud_hypervisor [-- /path/to/vmlinux]
//! ```
//!
//! The binary defaults to `../shared/vmm/cloud-hypervisor`; the kernel is
//! found as in `examples/firecracker.rs`. It boots the VM, hot-plugs vCPUs,
//! memory and a disk, takes the disk out again, tries a snapshot (which
//! fails on hosts whose nested KVM cannot save vCPU state; the VM carries
//! on), and shuts down.

mod common;

use std::time::{Duration, Instant};

use hyperfleet::runtime::cloud_hypervisor::{Config, Machine};
use hyperfleet::runtime::Runtime;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = common::vmm_binary("HYPERFLEET_CLOUD_HYPERVISOR_BIN", "cloud-hypervisor")?;
    let kernel = common::kernel()?;
    let dir = tempfile::Builder::new().prefix("hf-ch-").tempdir()?;
    let images = tempfile::tempdir()?;
    let data = common::disk(images.path(), "data.img", 4)?;

    let config = Config::new(&bin, dir.path(), &kernel)
        .with_cpus(1, 2)
        .with_memory_mib(128, Some(128));
    let vm = Machine::new(config);
    println!("start chain: {}", vm.handlers().start.names().join(" → "));
    let t = Instant::now();
    vm.start().await?;
    let pid = vm.process().map(|p| p.pid()).unwrap_or_default();
    println!("running in {:.1?}: cloud-hypervisor pid {pid}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    print!("console: {}", common::console(dir.path()));

    vm.resize(Some(2), Some(256)).await?;
    let pci = vm.hot_plug_disk(&data, "data", false).await?;
    let info = vm.api().vm_info().await?;
    println!(
        "resized and hot-plugged: {} vCPUs, {} MiB, disk at {:?}",
        info.config.cpus.map(|c| c.boot_vcpus).unwrap_or_default(),
        info.memory_actual_size.unwrap_or_default() >> 20,
        pci.map(|p| p.bdf)
    );
    vm.remove_device("data").await?;
    match vm.create_snapshot(&images.path().join("snapshot")).await {
        Ok(()) => println!("snapshot taken"),
        Err(e) => println!("snapshot failed: {}", e.report()),
    }
    println!("still {:?}", vm.observe().await?);

    vm.shutdown(Duration::from_secs(1)).await?;
    println!("shut down: {}", vm.wait().await?);
    vm.remove().await?;
    println!("removed");
    Ok(())
}
