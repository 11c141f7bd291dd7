//! Which VMM binary a machine runs, and where that choice came from, so that
//! every error about it names the setting to fix (`vmm_binary` in the
//! machine's config, or the daemon's `HYPERFLEET_FIRECRACKER_BIN`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::RuntimeKind;
use crate::runtime::Health;

/// A VMM binary, or the lack of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmBinary {
    kind: RuntimeKind,
    path: Option<PathBuf>,
    /// The setting the path came from (`vmm_binary`, an environment variable).
    setting: String,
}

impl VmmBinary {
    /// A binary given explicitly (library use).
    pub fn new(kind: RuntimeKind, path: impl Into<PathBuf>) -> VmmBinary {
        VmmBinary {
            kind,
            path: Some(path.into()),
            setting: "binary".into(),
        }
    }

    /// The machine's own binary if it names one, else the driver's default
    /// (from `env_var`), else none: a start then fails with ECONNREFUSED.
    pub fn resolve(
        kind: RuntimeKind,
        machine: Option<&Path>,
        default: Option<&Path>,
        env_var: &str,
    ) -> VmmBinary {
        let (path, setting) = match (machine, default) {
            (Some(p), _) => (Some(p.to_owned()), "vmm_binary".to_owned()),
            (None, Some(p)) => (Some(p.to_owned()), env_var.to_owned()),
            (None, None) => (None, env_var.to_owned()),
        };
        VmmBinary {
            kind,
            path,
            setting,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn setting(&self) -> &str {
        &self.setting
    }

    /// The path for messages ("firecracker" when there is none).
    pub fn display(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => self.kind.to_string(),
        }
    }

    /// The binary's path if it is there and executable. No binary at all is
    /// ECONNREFUSED (the runtime is unavailable), a missing one ENOENT, one
    /// that cannot be executed EACCES; each names the setting.
    pub fn check(&self) -> Result<&Path> {
        let Some(path) = &self.path else {
            return Err(Error::RuntimeUnavailable {
                runtime: self.kind.to_string(),
                reason: format!(
                    "no {} binary: set {} (or the machine's vmm_binary)",
                    self.kind, self.setting
                ),
            });
        };
        let md = std::fs::metadata(path).map_err(|e| Error::MissingFile {
            field: self.setting.clone(),
            reason: format!("{}: {e}", path.display()),
        })?;
        if !md.is_file() {
            return Err(Error::MissingFile {
                field: self.setting.clone(),
                reason: format!("{} is not a regular file", path.display()),
            });
        }
        if md.permissions().mode() & 0o111 == 0 {
            return Err(Error::AccessDenied(format!(
                "{}: {} is not executable",
                self.setting,
                path.display()
            )));
        }
        Ok(path)
    }

    /// Whether the driver can start machines that do not name their own
    /// binary.
    pub fn health(&self) -> Health {
        match self.check() {
            Ok(path) => Health::Available {
                detail: format!("{} at {}", self.kind, path.display()),
            },
            Err(Error::RuntimeUnavailable { reason, .. }) => Health::Unavailable { reason },
            Err(e) => Health::Unavailable {
                reason: e.report().to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FC: RuntimeKind = RuntimeKind::Firecracker;
    const VAR: &str = "HYPERFLEET_FIRECRACKER_BIN";

    #[test]
    fn the_machine_binary_wins_and_errors_name_the_setting() {
        let b = VmmBinary::resolve(FC, Some(Path::new("/m/fc")), Some(Path::new("/d/fc")), VAR);
        assert_eq!(b.path(), Some(Path::new("/m/fc")));
        let err = b.check().unwrap_err();
        assert_eq!(err.errno(), libc::ENOENT);
        assert!(err.to_string().starts_with("vmm_binary: /m/fc"), "{err}");

        let b = VmmBinary::resolve(FC, None, Some(Path::new("/d/fc")), VAR);
        let err = b.check().unwrap_err();
        assert!(err.to_string().starts_with(VAR), "{err}");

        let b = VmmBinary::resolve(FC, None, None, VAR);
        let err = b.check().unwrap_err();
        assert_eq!(err.errno(), libc::ECONNREFUSED);
        assert!(matches!(b.health(), Health::Unavailable { reason } if reason.contains(VAR)));
    }

    #[test]
    fn a_file_that_cannot_be_executed_is_eacces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fc");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        let b = VmmBinary::resolve(FC, Some(&path), None, VAR);
        assert_eq!(b.check().unwrap_err().errno(), libc::EACCES);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(b.check().unwrap(), path);
        assert!(b.health().is_available());
        let b = VmmBinary::resolve(FC, Some(dir.path()), None, VAR);
        assert_eq!(b.check().unwrap_err().errno(), libc::ENOENT);
    }
}
