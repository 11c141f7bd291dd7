//! Loading the kernel modules a guest image ships (vsock and virtio, when
//! the kernel has them as modules), in the order its list gives.
//!
//! The image builder resolves dependencies and writes the list; the agent
//! only loads each file with finit_module(2), passing the module the
//! `name.param=value` options of the kernel command line as modprobe
//! would (Firecracker describes its virtio-mmio devices that way).

use std::fs::File;
use std::path::Path;

use super::{log, sys};

/// The list: one module file per line, dependencies first; `#` comments.
pub const LIST: &str = "/etc/hyperfleet/modules";

/// Loads every module the list names; failures are logged and skipped.
pub fn load_listed(list: &Path) {
    let Ok(text) = std::fs::read_to_string(list) else {
        return;
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = module_name(line);
        let params = params_for(&cmdline, &name);
        let compressed = [".xz", ".zst", ".gz"].iter().any(|s| line.ends_with(s));
        let loaded = File::open(line).and_then(|f| sys::finit_module(&f, &params, compressed));
        match loaded {
            Ok(()) => log(format_args!("loaded module {name}")),
            // Built in, or loaded already.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => log(format_args!("cannot load module {line}: {e}")),
        }
    }
}

/// `/lib/.../vmw_vsock-virtio.ko.xz` -> `vmw_vsock_virtio` (the kernel's
/// spelling, which treats `-` and `_` alike).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The space-separated `param=value` options for `module` on the kernel
/// command line (`module.param=value`).
pub fn params_for(cmdline: &str, module: &str) -> String {
    cmdline
        .split_whitespace()
        .filter_map(|word| {
            let (name, param) = word.split_once('.')?;
            (name.replace('-', "_") == module && param.contains('=')).then_some(param)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_directories_and_suffixes() {
        assert_eq!(
            module_name("/lib/modules/6.1/kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko"),
            "vmw_vsock_virtio_transport"
        );
        assert_eq!(module_name("virtio-mmio.ko.xz"), "virtio_mmio");
    }

    #[test]
    fn params_come_from_the_module_own_options() {
        let cmdline = "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
            virtio-mmio.device=4K@0xd0001000:6 vsock.x hyperfleet.agent_port=52";
        assert_eq!(
            params_for(cmdline, "virtio_mmio"),
            "device=4K@0xd0000000:5 device=4K@0xd0001000:6"
        );
        assert_eq!(params_for(cmdline, "vsock"), "");
        assert_eq!(params_for(cmdline, "virtio"), "");
    }
}
