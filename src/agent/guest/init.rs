//! What the agent does as the guest's init: mount the kernel filesystems,
//! load the vsock modules, and power the machine off on request.
//!
//! Set-up runs only on a fresh boot (PID 1 and /proc not mounted yet); the
//! agent as PID 1 of a container-style PID namespace finds its filesystems
//! already there and leaves them alone. Reaping orphans is the reaper's job
//! and happens in every mode.

use std::path::Path;

use super::{log, modules, sys};

const NOSUID: u64 = libc::MS_NOSUID;
const NODEV: u64 = libc::MS_NODEV;
const NOEXEC: u64 = libc::MS_NOEXEC;

/// (source, target, type, flags, options), in mounting order.
const MOUNTS: &[(&str, &str, &str, u64, &str)] = &[
    ("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC, ""),
    ("sysfs", "/sys", "sysfs", NOSUID | NODEV | NOEXEC, ""),
    ("devtmpfs", "/dev", "devtmpfs", NOSUID, "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        NOSUID | NOEXEC,
        "gid=5,mode=0620,ptmxmode=0666",
    ),
    ("tmpfs", "/dev/shm", "tmpfs", NOSUID | NODEV, "mode=1777"),
    ("tmpfs", "/tmp", "tmpfs", NOSUID | NODEV, "mode=1777"),
    ("tmpfs", "/run", "tmpfs", NOSUID | NODEV, "mode=0755"),
];

pub fn is_pid1() -> bool {
    sys::getpid() == 1
}

/// Whether this is the first process of a freshly booted kernel.
pub fn fresh_boot() -> bool {
    is_pid1() && !Path::new("/proc/self").exists()
}

/// Mounts what commands expect and loads the kernel modules the image
/// lists. Failures are logged, not fatal: an init that exits panics the
/// kernel, and a guest with a missing /run can still run commands.
pub fn setup() {
    for &(source, target, fstype, flags, data) in MOUNTS {
        if let Err(e) = std::fs::create_dir_all(target) {
            log(format_args!("cannot create {target}: {e}"));
            continue;
        }
        match sys::mount(source, target, fstype, flags, data) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => log(format_args!("cannot mount {fstype} on {target}: {e}")),
        }
    }
    // What udev would add: the /dev/fd links shells use for <(...).
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, link);
    }
    sys::ensure_std_fds();
    modules::load_listed(Path::new(modules::LIST));
}

/// Syncs and powers off. Returns only if the kernel refused.
///
/// Firecracker has no power management: a guest leaves it by rebooting
/// (with `reboot=k`), so `hyperfleet.poweroff=reboot` on the kernel command
/// line makes "power off" a reboot.
pub fn power_off() -> std::io::Error {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let reboot = cmdline
        .split_whitespace()
        .any(|w| w == "hyperfleet.poweroff=reboot");
    log(format_args!(
        "powering off{}",
        if reboot { " (by reboot)" } else { "" }
    ));
    sys::sync();
    sys::power_off(reboot)
}
