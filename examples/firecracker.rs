//! Runs one Firecracker microVM end to end through the library alone: no
//! daemon, no store, just `firecracker::Machine` and the real binary.
//!
//! ```sh
//! HYPERFLEET_FIRECRACKER_BIN=/usr/bin/firecracker cargo run --example firecracker [-- /path/to/vmlinux]
//! ```
//!
//! The binary defaults to `../shared/vmm/firecracker`. The kernel is the
//! first argument or `HYPERFLEET_KERNEL`; without one the example builds a
//! tiny PVH kernel (gcc and ld) that greets on its serial console and halts.
//! It boots the VM with a root disk, extends the start chain with a step of
//! its own, pauses, resumes, snapshots, restores the snapshot into a fresh
//! Firecracker, and shuts down.

mod common;

use std::time::{Duration, Instant};

use hyperfleet::runtime::firecracker::{handlers, Config, DrivesBuilder, Machine};
use hyperfleet::runtime::Runtime;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = common::vmm_binary("HYPERFLEET_FIRECRACKER_BIN", "firecracker")?;
    let kernel = common::kernel()?;
    // Short: Unix socket paths are limited to 107 bytes.
    let dir = tempfile::Builder::new().prefix("hf-fc-").tempdir()?;
    let images = tempfile::tempdir()?;
    let root = common::disk(images.path(), "root.img", 8)?;

    let config = Config::new(&bin, dir.path(), &kernel)
        .with_vcpus(1)
        .with_memory_mib(64)
        .with_drives(DrivesBuilder::new(&root).build());
    let mut vm = Machine::new(config);
    vm.handlers_mut().start.insert_before(
        handlers::INSTANCE_START,
        "announce",
        |m: Machine| async move {
            let config = m
                .api()
                .vm_config()
                .await
                .map_err(hyperfleet::runtime::vm::errors::http)?;
            println!("configured: {} drive(s); booting", config.drives.len());
            Ok(())
        },
    )?;
    println!("start chain: {}", vm.handlers().start.names().join(" → "));

    let t = Instant::now();
    vm.start().await?;
    let pid = vm.process().map(|p| p.pid()).unwrap_or_default();
    println!("running in {:.1?}: firecracker pid {pid}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    print!("console: {}", common::console(dir.path()));

    vm.pause().await?;
    println!("paused: {:?}", vm.observe().await?);
    vm.resume().await?;
    let snapshot = images.path().join("snapshot");
    vm.create_snapshot(&snapshot).await?;
    println!("snapshot in {}", snapshot.display());

    vm.shutdown(Duration::from_secs(1)).await?;
    println!("shut down: {}", vm.wait().await?);

    vm.restore_snapshot(&snapshot).await?;
    println!(
        "restored into pid {}: {:?}",
        vm.process().map(|p| p.pid()).unwrap_or_default(),
        vm.observe().await?
    );
    vm.kill().await?;
    vm.remove().await?;
    println!("removed");
    Ok(())
}
