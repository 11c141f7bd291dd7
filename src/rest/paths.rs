//! `--allow-host-paths PREFIX,...`: the host paths a REST client may name.
//!
//! A key with `machines:write` on a root daemon is root on the host, as
//! access to the Docker socket is: it can bind-mount `/` into a container.
//! With this option, every host path in a spec created or configured over
//! REST (volume host paths; a VM's kernel, initrd, root filesystem, disks
//! and VMM binary) must lie under one of the prefixes, and `privileged`
//! containers are refused, since they reach every host path anyway.
//!
//! A path is compared after resolving symbolic links in the longest part of
//! it that exists, so `/allowed/link-to-root/etc` is refused. A link made
//! under an allowed prefix after the check can still point elsewhere:
//! the prefixes should be directories that REST clients cannot write to
//! by other means.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::MachineSpec;

#[derive(Debug, Clone, Default)]
pub struct HostPaths {
    /// Canonical prefixes; empty means no confinement.
    prefixes: Vec<PathBuf>,
}

impl HostPaths {
    /// Confines to `prefixes`, which must be absolute and exist.
    pub fn new(prefixes: &[PathBuf]) -> Result<HostPaths> {
        let prefixes = prefixes
            .iter()
            .map(|p| {
                if !p.is_absolute() {
                    return Err(Error::InvalidCommand(format!(
                        "--allow-host-paths: {} is not an absolute path",
                        p.display()
                    )));
                }
                std::fs::canonicalize(p)
                    .map_err(|e| Error::io(format!("--allow-host-paths: {}", p.display()), e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HostPaths { prefixes })
    }

    pub fn is_confined(&self) -> bool {
        !self.prefixes.is_empty()
    }

    pub fn prefixes(&self) -> &[PathBuf] {
        &self.prefixes
    }

    /// Refuses a spec that names a host path outside the prefixes.
    pub fn check(&self, spec: &MachineSpec) -> Result<()> {
        if !self.is_confined() {
            return Ok(());
        }
        let mut named: Vec<(String, &Path)> = Vec::new();
        if let Some(c) = spec.container_spec() {
            if c.privileged {
                return Err(Error::InvalidConfig(
                    "privileged: refused: this daemon confines host paths (--allow-host-paths) \
                     and a privileged container reaches all of them"
                        .into(),
                ));
            }
            for (i, v) in c.volumes.iter().enumerate() {
                named.push((format!("volumes[{i}].host_path"), &v.host_path));
            }
        }
        if let Some(v) = spec.vm_spec() {
            for (field, p) in [
                ("kernel_image_path", &v.kernel_image_path),
                ("initrd_path", &v.initrd_path),
                ("rootfs_path", &v.rootfs_path),
                ("vmm_binary", &v.vmm_binary),
            ] {
                if let Some(p) = p {
                    named.push((field.to_owned(), p));
                }
            }
            for (i, d) in v.disks.iter().enumerate() {
                named.push((format!("disks[{i}].path"), &d.path));
            }
        }
        for (field, path) in named {
            let resolved = resolve(path);
            if !self.prefixes.iter().any(|p| resolved.starts_with(p)) {
                return Err(Error::InvalidConfig(format!(
                    "{field}: {} is outside the host paths this daemon allows ({})",
                    path.display(),
                    self.prefixes
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// `path` with the symbolic links of its longest existing ancestor resolved.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(canon) = std::fs::canonicalize(existing) {
            let mut out = canon;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> MachineSpec {
        MachineSpec::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn paths_outside_the_prefixes_are_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("srv");
        std::fs::create_dir(&allowed).unwrap();
        std::os::unix::fs::symlink("/", allowed.join("root")).unwrap();
        let hp = HostPaths::new(std::slice::from_ref(&allowed)).unwrap();
        let a = allowed.display();

        let ok = format!(
            r#"{{"image":"x","volumes":[{{"host_path":"{a}/data/new","container_path":"/d"}}]}}"#
        );
        hp.check(&spec(&ok)).unwrap();
        let vm = format!(
            r#"{{"runtime_type":"firecracker","kernel_image_path":"{a}/vmlinux","disks":[{{"path":"/etc/x.img"}}]}}"#
        );
        let e = hp.check(&spec(&vm)).unwrap_err().to_string();
        assert!(e.contains("disks[0].path: /etc/x.img is outside"), "{e}");
        let escape = format!(
            r#"{{"image":"x","volumes":[{{"host_path":"{a}/root/etc","container_path":"/d"}}]}}"#
        );
        let e = hp.check(&spec(&escape)).unwrap_err().to_string();
        assert!(e.contains("volumes[0].host_path"), "{e}");
        let e = hp
            .check(&spec(r#"{"image":"x","privileged":true}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("privileged"), "{e}");
        // Without prefixes nothing is confined.
        HostPaths::default().check(&spec(&escape)).unwrap();
        assert!(HostPaths::new(&[PathBuf::from("relative")]).is_err());
    }
}
