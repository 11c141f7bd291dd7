//! The files of one VM in its runtime directory, named once for both VMMs.
//!
//! ```text
//! <runtime dir>/                 the machine's private directory (<state>/run/<machine id>)
//!   api.sock                     the VMM's API socket
//!   vsock.sock                   the hybrid vsock device's host side
//!   console.log                  the guest's serial console (Firecracker's stdout)
//!   console.offset               how much of console.log is already in the machine's `logs`
//!   vmm.log                      the VMM's own log
//!   vmm.stdout, vmm.stderr       the VMM's other output (Cloud Hypervisor's stdout)
//!   metrics.json                 Firecracker's metrics
//!   <kind>.pid                   pid and start time of the VMM (see `process::ProcessHandle`)
//!   <kind>.started               the same, once its start has completed
//!   <kind>.exit                  how that VMM ended, when the daemon saw it end
//! ```
//!
//! The pid file is named after the runtime kind, so the Firecracker and
//! Cloud Hypervisor drivers each find their own VMMs in a shared run root
//! ([`machines_with_vmm`]). Sockets are removed before each spawn (a VMM
//! refuses to bind over an old one) and after the VMM is gone; `rmdir` of
//! the machine removes the whole directory.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::RuntimeKind;

pub const API_SOCKET: &str = "api.sock";
pub const VSOCK_SOCKET: &str = "vsock.sock";
pub const CONSOLE: &str = "console.log";
pub const CONSOLE_OFFSET: &str = "console.offset";
pub const VMM_LOG: &str = "vmm.log";
pub const VMM_STDOUT: &str = "vmm.stdout";
pub const VMM_STDERR: &str = "vmm.stderr";
pub const METRICS: &str = "metrics.json";

/// The longest path a Unix socket can be bound at: `sun_path` holds 108
/// bytes, the terminating NUL included.
pub const MAX_SOCKET_PATH: usize = 107;

/// Where one VM's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFiles {
    dir: PathBuf,
    kind: RuntimeKind,
    api_socket: PathBuf,
    vsock_socket: PathBuf,
}

impl VmFiles {
    pub fn new(dir: impl Into<PathBuf>, kind: RuntimeKind) -> VmFiles {
        let dir = dir.into();
        VmFiles {
            api_socket: dir.join(API_SOCKET),
            vsock_socket: dir.join(VSOCK_SOCKET),
            dir,
            kind,
        }
    }

    /// The API socket somewhere else than `<dir>/api.sock`.
    pub fn with_api_socket(mut self, path: impl Into<PathBuf>) -> VmFiles {
        self.api_socket = path.into();
        self
    }

    /// The vsock socket somewhere else than `<dir>/vsock.sock`.
    pub fn with_vsock_socket(mut self, path: impl Into<PathBuf>) -> VmFiles {
        self.vsock_socket = path.into();
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    pub fn api_socket(&self) -> &Path {
        &self.api_socket
    }

    pub fn vsock_socket(&self) -> &Path {
        &self.vsock_socket
    }

    pub fn console(&self) -> PathBuf {
        self.dir.join(CONSOLE)
    }

    pub fn console_offset(&self) -> PathBuf {
        self.dir.join(CONSOLE_OFFSET)
    }

    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join(VMM_LOG)
    }

    pub fn stdout(&self) -> PathBuf {
        self.dir.join(VMM_STDOUT)
    }

    pub fn stderr(&self) -> PathBuf {
        self.dir.join(VMM_STDERR)
    }

    pub fn metrics(&self) -> PathBuf {
        self.dir.join(METRICS)
    }

    pub fn pid_file(&self) -> PathBuf {
        pid_file(&self.dir, self.kind)
    }

    pub fn exit_file(&self) -> PathBuf {
        self.dir.join(format!("{}.exit", self.kind))
    }

    /// Names the VMM whose start completed (a live VMM it does not name is
    /// a start cut short).
    pub fn started_file(&self) -> PathBuf {
        self.dir.join(format!("{}.started", self.kind))
    }

    /// The sockets a VMM of this VM binds.
    pub fn sockets(&self) -> [&Path; 2] {
        [&self.api_socket, &self.vsock_socket]
    }

    /// Fails clearly when a socket path is too long to be bound, instead of
    /// letting the VMM die with a cryptic bind error.
    pub fn check_socket_paths(&self) -> Result<()> {
        self.sockets().into_iter().try_for_each(check_socket_path)
    }

    /// Removes the sockets a VMM left behind (Firecracker never removes its
    /// own). Anything that is not a socket is left alone.
    pub fn remove_sockets(&self) {
        for path in self.sockets() {
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if is_socket {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Removes everything in the directory, keeping the directory itself
    /// (the core owns it). Succeeds if it does not exist.
    pub fn clear(&self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("list {}", self.dir.display()), e)),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
            }
        }
        Ok(())
    }
}

/// Replaces `path` with `bytes` whole (a temp file renamed over it), so a
/// reader, a restarted daemon included, sees the old content or the new,
/// never half. Not synced: these files describe VMMs, which do not survive
/// the host going down either.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path))
}

fn pid_file(dir: &Path, kind: RuntimeKind) -> PathBuf {
    dir.join(format!("{kind}.pid"))
}

/// A socket path must fit in `sun_path`.
pub fn check_socket_path(path: &Path) -> Result<()> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Error::InvalidConfig(format!(
            "socket path {} is {len} bytes, more than the {MAX_SOCKET_PATH} a Unix socket allows; use a shorter state directory",
            path.display()
        )));
    }
    Ok(())
}

/// The machine ids (directory names) under `root` whose directory holds a
/// pid file of a `kind` VMM, live or not: what that driver owns there.
pub fn machines_with_vmm(root: &Path, kind: RuntimeKind) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("list {}", root.display()), e)),
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter(|e| pid_file(&e.path(), kind).exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_must_fit_sun_path() {
        let ok = VmFiles::new("/run/hf/0123", RuntimeKind::Firecracker);
        ok.check_socket_paths().unwrap();
        let long = VmFiles::new(format!("/{}", "d".repeat(100)), RuntimeKind::Firecracker);
        let err = long.check_socket_paths().unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL);
        assert!(err.to_string().contains("more than the 107"), "{err}");
    }

    #[test]
    fn each_kind_finds_its_own_vmms() {
        let root = tempfile::tempdir().unwrap();
        for (id, kind) in [
            ("a", RuntimeKind::Firecracker),
            ("b", RuntimeKind::CloudHypervisor),
        ] {
            let files = VmFiles::new(root.path().join(id), kind);
            std::fs::create_dir(files.dir()).unwrap();
            std::fs::write(files.pid_file(), "{}").unwrap();
        }
        std::fs::create_dir(root.path().join("c")).unwrap();
        assert_eq!(
            machines_with_vmm(root.path(), RuntimeKind::Firecracker).unwrap(),
            ["a"]
        );
        assert_eq!(
            machines_with_vmm(root.path(), RuntimeKind::CloudHypervisor).unwrap(),
            ["b"]
        );
        assert!(
            machines_with_vmm(&root.path().join("none"), RuntimeKind::Firecracker)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn clear_empties_the_directory_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = VmFiles::new(dir.path(), RuntimeKind::CloudHypervisor);
        std::fs::write(files.console(), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        drop(std::os::unix::net::UnixListener::bind(files.api_socket()).unwrap());
        files.clear().unwrap();
        assert!(dir.path().exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
