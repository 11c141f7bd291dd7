#![allow(dead_code)]

//! What the VM examples share: finding the VMM binary and a guest kernel.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

#[allow(dead_code)]
#[path = "../../tests/common/kernel.rs"]
mod kernel;

/// The VMM binary: `$var`, else the shared build beside the repository
/// (`../shared/vmm/<name>`).
pub fn vmm_binary(var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/vmm")
        .join(name);
    if shared.is_file() {
        return Ok(shared);
    }
    bail!("no {name} binary: set {var}")
}

/// The guest kernel: the first argument, else `HYPERFLEET_KERNEL`, else the
/// tiny PVH test kernel (built with gcc and ld), which says hello on its
/// serial console and halts.
pub fn kernel() -> anyhow::Result<PathBuf> {
    let given = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("HYPERFLEET_KERNEL"))
        .map(PathBuf::from);
    match given {
        Some(path) => {
            anyhow::ensure!(path.is_file(), "kernel {} does not exist", path.display());
            Ok(path)
        }
        None => std::panic::catch_unwind(kernel::greeting_kernel)
            .ok()
            .context("cannot build the test kernel (install gcc and binutils, or pass a kernel)"),
    }
}

/// A sparse raw disk image of `mib` MiB.
pub fn disk(dir: &Path, name: &str, mib: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::File::create(&path)?.set_len(mib << 20)?;
    Ok(path)
}

/// The guest's serial console so far.
pub fn console(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("console.log")).unwrap_or_default()
}
