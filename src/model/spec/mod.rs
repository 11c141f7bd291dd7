//! The machine spec: what `config` holds and what the REST create body carries.
//!
//! On the wire a spec is one flat JSON object, the original Hyperfleet's
//! create body less `name`. In memory it is typed by runtime: a container
//! spec and a VM spec share only the sizing and restart fields, so a Docker
//! machine cannot carry a kernel nor a VM an image. A field of the other
//! kind is refused and named, except empty strings and nulls (and empty
//! lists), which clients of the original send for fields they do not use
//! (`"kernel_image_path": ""` on a Docker machine): those are ignored.
//!
//! Parsing is strict (unknown fields and wrong types are refused) and
//! validation runs before anything is stored, so a spec that made it into
//! the store is always well-formed. Completeness ("does it have enough to
//! start?") is checked separately at `start`, so a spec can be written in steps.

mod check;
mod container;
mod vm;
mod wire;

use serde::{Deserialize, Serialize};

pub use container::{ContainerSpec, PortMapping, Protocol, VolumeMount};
pub use vm::{host_file, DiskSpec, NetworkSpec, VmSpec, DEFAULT_AGENT_PORT, ROOTFS_DRIVE_ID};

use super::RuntimeKind;
use crate::error::{Error, Result};

/// Largest write accepted by any file; also the largest spec.
pub const MAX_WRITE: usize = 1 << 20;
pub const MAX_VCPUS: u32 = 256;
/// Docker refuses memory limits under 6 MiB.
pub const MIN_MEM_MIB: u64 = 6;
pub const MAX_MEM_MIB: u64 = 1 << 22;

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

    /// Whether a workload that ended by itself (not by a stop) with
    /// `success` is brought back.
    pub fn restarts(self, success: bool) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure => !success,
        }
    }
}

/// What runs: a container or a VM, with the fields of its kind only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Container(ContainerSpec),
    Firecracker(VmSpec),
    CloudHypervisor(VmSpec),
}

/// A machine's desired configuration. `{}` is a valid (if incomplete) spec:
/// a Docker machine with every default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    pub restart: RestartPolicy,
    pub workload: Workload,
}

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec {
            vcpu_count: 1,
            mem_size_mib: 512,
            restart: RestartPolicy::No,
            workload: Workload::Container(ContainerSpec::default()),
        }
    }
}

impl MachineSpec {
    /// A Docker machine running `image` with every other field at its default.
    pub fn container(image: impl Into<String>) -> MachineSpec {
        MachineSpec {
            workload: Workload::Container(ContainerSpec {
                image: Some(image.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn runtime_type(&self) -> RuntimeKind {
        match self.workload {
            Workload::Container(_) => RuntimeKind::Docker,
            Workload::Firecracker(_) => RuntimeKind::Firecracker,
            Workload::CloudHypervisor(_) => RuntimeKind::CloudHypervisor,
        }
    }

    pub fn container_spec(&self) -> Option<&ContainerSpec> {
        match &self.workload {
            Workload::Container(c) => Some(c),
            _ => None,
        }
    }

    pub fn vm_spec(&self) -> Option<&VmSpec> {
        match &self.workload {
            Workload::Firecracker(v) | Workload::CloudHypervisor(v) => Some(v),
            Workload::Container(_) => None,
        }
    }

    /// Parses and validates a spec written by a user. Errors name the field
    /// at fault (`ports[0].host_port: ...`).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_WRITE {
            return Err(Error::TooLarge { limit: MAX_WRITE });
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::InvalidConfig("config is not valid UTF-8".into()))?;
        let de = &mut serde_json::Deserializer::from_str(text);
        let raw: wire::Wire = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
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
        raw.into_spec()
    }

    /// Parses a JSON value (a REST body less its `name`).
    pub fn from_value(v: serde_json::Value) -> Result<Self> {
        Self::parse(v.to_string().as_bytes())
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
        match &self.workload {
            Workload::Container(c) => c.validate(),
            Workload::Firecracker(v) | Workload::CloudHypervisor(v) => v.validate(self),
        }
    }

    /// Checks that the spec carries everything its runtime needs to start.
    pub fn check_complete(&self) -> Result<()> {
        let missing = |field: &str| {
            Err(Error::IncompleteConfig(format!(
                "{} needs {field}; write it to config first",
                self.runtime_type()
            )))
        };
        match &self.workload {
            Workload::Container(c) if c.image.is_none() => missing("image"),
            Workload::Firecracker(v) | Workload::CloudHypervisor(v)
                if v.kernel_image_path.is_none() =>
            {
                missing("kernel_image_path")
            }
            _ => Ok(()),
        }
    }

    /// The spec as `config` shows it: every field of its kind, pretty,
    /// newline-terminated.
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl Serialize for MachineSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        wire::serialize(self, s)
    }
}

/// Stored specs are read back through the same strict parser.
impl<'de> Deserialize<'de> for MachineSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = wire::Wire::deserialize(d)?;
        raw.into_spec()
            .map_err(|e| serde::de::Error::custom(e.report()))
    }
}

#[cfg(test)]
mod tests;
