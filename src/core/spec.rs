//! The machine spec: what `config` holds and what the REST create body carries.
//!
//! Parsing is strict (unknown fields and wrong types are refused) and
//! validation runs before anything is stored, so a spec that made it into the
//! store is always well-formed. Completeness ("does it have enough to start?")
//! is checked separately at `start`, so a spec can be written in steps.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest write accepted by any file; also the largest spec.
pub const MAX_WRITE: usize = 1 << 20;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub enum RuntimeKind {
    #[default]
    #[serde(rename = "docker")]
    Docker,
    #[serde(rename = "firecracker")]
    Firecracker,
    #[serde(rename = "cloud-hypervisor")]
    CloudHypervisor,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 3] = [
        RuntimeKind::Docker,
        RuntimeKind::Firecracker,
        RuntimeKind::CloudHypervisor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Firecracker => "firecracker",
            RuntimeKind::CloudHypervisor => "cloud-hypervisor",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        RuntimeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::InvalidConfig(format!("unknown runtime_type {s:?}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    #[serde(rename = "no")]
    No,
    #[serde(rename = "always")]
    Always,
    #[serde(rename = "on-failure")]
    OnFailure,
    #[serde(rename = "unless-stopped")]
    UnlessStopped,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }
}

fn default_vcpus() -> u32 {
    1
}
fn default_mem() -> u64 {
    512
}

/// A machine's desired configuration. Every field has a default, so `{}` is a
/// valid (if incomplete) spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    #[serde(default)]
    pub runtime_type: RuntimeKind,
    #[serde(default = "default_vcpus")]
    pub vcpu_count: u32,
    #[serde(default = "default_mem")]
    pub mem_size_mib: u64,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub kernel_image_path: Option<PathBuf>,
    #[serde(default)]
    pub kernel_args: Option<String>,
    #[serde(default)]
    pub rootfs_path: Option<PathBuf>,
}

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec {
            runtime_type: RuntimeKind::Docker,
            vcpu_count: default_vcpus(),
            mem_size_mib: default_mem(),
            image: None,
            cmd: None,
            entrypoint: None,
            env: BTreeMap::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            working_dir: None,
            user: None,
            restart: RestartPolicy::No,
            kernel_image_path: None,
            kernel_args: None,
            rootfs_path: None,
        }
    }
}

pub const MAX_VCPUS: u32 = 256;
/// Docker refuses memory limits under 6 MiB; a smaller VM cannot boot Linux.
pub const MIN_MEM_MIB: u64 = 6;
pub const MAX_MEM_MIB: u64 = 1 << 22;

impl MachineSpec {
    /// Parses and validates a spec written by a user.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_WRITE {
            return Err(Error::TooLarge { limit: MAX_WRITE });
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::InvalidConfig("config is not valid UTF-8".into()))?;
        // The error names the field at fault ("ports[0].host_port: ..."),
        // not only a line and column.
        let de = &mut serde_json::Deserializer::from_str(text);
        let spec: MachineSpec = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Error::InvalidConfig(if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            })
        })?;
        // Trailing garbage after the document is as wrong as a bad field.
        de.end().map_err(|e| Error::InvalidConfig(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every field's value; says which field is wrong and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.vcpu_count == 0 || self.vcpu_count > MAX_VCPUS {
            return bad(format!("vcpu_count must be 1..={MAX_VCPUS}"));
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_size_mib) {
            return bad(format!(
                "mem_size_mib must be {MIN_MEM_MIB}..={MAX_MEM_MIB}"
            ));
        }
        if let Some(image) = &self.image {
            if image.is_empty() || image.len() > 255 {
                return bad("image must be 1..=255 characters".into());
            }
            if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad("image must not contain whitespace or control characters".into());
            }
        }
        for (field, args) in [("cmd", &self.cmd), ("entrypoint", &self.entrypoint)] {
            if let Some(args) = args {
                if args.iter().any(|a| a.contains('\0')) {
                    return bad(format!("{field} must not contain NUL bytes"));
                }
            }
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return bad(format!(
                    "env key {k:?} must be non-empty, without '=' or NUL"
                ));
            }
        }
        let mut seen = HashSet::new();
        for p in &self.ports {
            if p.host_port == 0 || p.container_port == 0 {
                return bad("ports must be 1..=65535".into());
            }
            if !seen.insert((p.host_port, p.protocol)) {
                return bad(format!(
                    "host port {}/{} is mapped twice",
                    p.host_port,
                    p.protocol.as_str()
                ));
            }
        }
        for v in &self.volumes {
            check_path("volumes.host_path", &v.host_path)?;
            check_path("volumes.container_path", &v.container_path)?;
            // Bind mounts are written "host:guest[:ro]"; a colon would split wrongly.
            for p in [&v.host_path, &v.container_path] {
                if p.as_os_str().as_encoded_bytes().contains(&b':') {
                    return bad(format!("volume path {} must not contain ':'", p.display()));
                }
            }
        }
        if let Some(dir) = &self.working_dir {
            check_path("working_dir", Path::new(dir))?;
        }
        if let Some(user) = &self.user {
            if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad("user must be non-empty, without whitespace".into());
            }
        }
        if let Some(p) = &self.kernel_image_path {
            check_path("kernel_image_path", p)?;
        }
        if let Some(p) = &self.rootfs_path {
            check_path("rootfs_path", p)?;
        }
        if let Some(args) = &self.kernel_args {
            if args.contains('\0') || args.len() > 4096 {
                return bad("kernel_args must be under 4096 bytes, without NUL".into());
            }
        }
        Ok(())
    }

    /// Checks that the spec carries everything its runtime needs to start.
    pub fn check_complete(&self) -> Result<()> {
        let missing = |field: &str| {
            Err(Error::IncompleteConfig(format!(
                "{} needs {field}; write it to config first",
                self.runtime_type
            )))
        };
        match self.runtime_type {
            RuntimeKind::Docker if self.image.is_none() => missing("image"),
            RuntimeKind::Firecracker | RuntimeKind::CloudHypervisor
                if self.kernel_image_path.is_none() =>
            {
                missing("kernel_image_path")
            }
            _ => Ok(()),
        }
    }

    /// The spec as `config` shows it: every field, pretty, newline-terminated.
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// Host and guest paths must be absolute and must not climb with `..`: a spec
/// is never allowed to name a place relative to wherever the daemon runs.
fn check_path(field: &str, path: &Path) -> Result<()> {
    let s = path.as_os_str();
    if s.is_empty() || !path.is_absolute() {
        return Err(Error::InvalidConfig(format!(
            "{field} must be an absolute path"
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::InvalidConfig(format!(
            "{field} must not contain '..'"
        )));
    }
    if s.as_encoded_bytes().contains(&0) {
        return Err(Error::InvalidConfig(format!(
            "{field} must not contain NUL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_docker_spec_takes_defaults() {
        let s = MachineSpec::parse(br#"{"runtime_type":"docker","image":"busybox"}"#).unwrap();
        assert_eq!(s.vcpu_count, 1);
        assert_eq!(s.mem_size_mib, 512);
        assert_eq!(s.image.as_deref(), Some("busybox"));
        s.check_complete().unwrap();
    }

    #[test]
    fn pretty_output_round_trips() {
        let s = MachineSpec::parse(
            br#"{"image":"x","ports":[{"host_port":8080,"container_port":80}],"env":{"A":"1"},"restart":"on-failure"}"#,
        )
        .unwrap();
        let again = MachineSpec::parse(s.to_json_pretty().as_bytes()).unwrap();
        assert_eq!(s, again);
    }

    #[test]
    fn rejects_unknown_and_ill_typed_fields() {
        for bad in [
            &br#"{"imgae":"x"}"#[..],
            br#"{"vcpu_count":"two"}"#,
            br#"{"vcpu_count":0}"#,
            br#"{"runtime_type":"qemu"}"#,
            br#"{"ports":[{"host_port":70000,"container_port":1}]}"#,
            br#"{"restart":"sometimes"}"#,
            br#"not json"#,
            b"{\"image\":\"\xff\"}",
        ] {
            assert!(
                MachineSpec::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn errors_name_the_field_at_fault() {
        let err = MachineSpec::parse(br#"{"ports":[{"host_port":"x","container_port":1}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ports[0].host_port"), "{err}");
        let err = MachineSpec::parse(br#"{"image":"x"} trailing"#).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)));
    }

    #[test]
    fn rejects_relative_and_climbing_paths() {
        for bad in [
            &br#"{"volumes":[{"host_path":"data","container_path":"/d"}]}"#[..],
            br#"{"volumes":[{"host_path":"/srv/../etc","container_path":"/d"}]}"#,
            br#"{"kernel_image_path":"../vmlinux"}"#,
            br#"{"rootfs_path":"/a/../../b"}"#,
            br#"{"volumes":[{"host_path":"/a:b","container_path":"/d"}]}"#,
        ] {
            let err = MachineSpec::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        }
    }

    #[test]
    fn completeness_depends_on_runtime() {
        assert!(MachineSpec::default().check_complete().is_err());
        let vm = MachineSpec::parse(br#"{"runtime_type":"firecracker","kernel_image_path":"/k"}"#)
            .unwrap();
        vm.check_complete().unwrap();
    }
}
