//! The flat JSON form of a spec, and its translation to and from the typed
//! [`MachineSpec`]. Every field is optional here so that the translation,
//! not serde, decides what a field of the other kind may hold.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{
    ContainerSpec, DiskSpec, MachineSpec, NetworkSpec, PortMapping, RestartPolicy, VmSpec,
    VolumeMount, Workload,
};
use crate::error::{Error, Result};
use crate::model::RuntimeKind;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Wire {
    #[serde(default)]
    runtime_type: Option<RuntimeKind>,
    #[serde(default)]
    vcpu_count: Option<u32>,
    #[serde(default)]
    mem_size_mib: Option<u64>,
    #[serde(default)]
    restart: Option<RestartPolicy>,
    // Container fields.
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    /// The original accepted a string as well as an array.
    #[serde(default, deserialize_with = "string_or_list")]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    ports: Option<Vec<PortMapping>>,
    #[serde(default)]
    volumes: Option<Vec<VolumeMount>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    privileged: Option<bool>,
    // VM fields.
    #[serde(default)]
    kernel_image_path: Option<PathBuf>,
    #[serde(default)]
    kernel_args: Option<String>,
    #[serde(default)]
    initrd_path: Option<PathBuf>,
    #[serde(default)]
    rootfs_path: Option<PathBuf>,
    #[serde(default)]
    disks: Option<Vec<DiskSpec>>,
    #[serde(default)]
    network: Option<NetworkSpec>,
    #[serde(default)]
    max_vcpus: Option<u32>,
    #[serde(default)]
    hotplug_mem_mib: Option<u64>,
    #[serde(default)]
    vmm_binary: Option<PathBuf>,
    #[serde(default)]
    agent_port: Option<u32>,
}

/// A field that holds nothing: absent, null, "", [] or {}. Clients of the
/// original send such values for fields of the runtime they do not use.
trait Blank {
    fn is_blank(&self) -> bool;
}
impl Blank for String {
    fn is_blank(&self) -> bool {
        self.is_empty()
    }
}
impl Blank for PathBuf {
    fn is_blank(&self) -> bool {
        self.as_os_str().is_empty()
    }
}
impl<T> Blank for Vec<T> {
    fn is_blank(&self) -> bool {
        self.is_empty()
    }
}
impl<K, V> Blank for BTreeMap<K, V> {
    fn is_blank(&self) -> bool {
        self.is_empty()
    }
}
impl Blank for bool {
    fn is_blank(&self) -> bool {
        !*self
    }
}
impl Blank for u32 {
    fn is_blank(&self) -> bool {
        false
    }
}
impl Blank for u64 {
    fn is_blank(&self) -> bool {
        false
    }
}
impl Blank for NetworkSpec {
    fn is_blank(&self) -> bool {
        false
    }
}

fn refuse_foreign<T: Blank>(field: &str, value: &Option<T>, kind: RuntimeKind) -> Result<()> {
    match value {
        Some(v) if !v.is_blank() => Err(Error::InvalidConfig(format!(
            "{field}: not a field of a {kind} machine"
        ))),
        _ => Ok(()),
    }
}

impl Wire {
    pub(super) fn into_spec(self) -> Result<MachineSpec> {
        let kind = self.runtime_type.unwrap_or_default();
        let defaults = MachineSpec::default();
        let vm_fields_blank = |w: &Wire| -> Result<()> {
            refuse_foreign("kernel_image_path", &w.kernel_image_path, kind)?;
            refuse_foreign("kernel_args", &w.kernel_args, kind)?;
            refuse_foreign("initrd_path", &w.initrd_path, kind)?;
            refuse_foreign("rootfs_path", &w.rootfs_path, kind)?;
            refuse_foreign("disks", &w.disks, kind)?;
            refuse_foreign("network", &w.network, kind)?;
            refuse_foreign("max_vcpus", &w.max_vcpus, kind)?;
            refuse_foreign("hotplug_mem_mib", &w.hotplug_mem_mib, kind)?;
            refuse_foreign("vmm_binary", &w.vmm_binary, kind)?;
            refuse_foreign("agent_port", &w.agent_port, kind)
        };
        let container_fields_blank = |w: &Wire| -> Result<()> {
            refuse_foreign("image", &w.image, kind)?;
            refuse_foreign("cmd", &w.cmd, kind)?;
            refuse_foreign("entrypoint", &w.entrypoint, kind)?;
            refuse_foreign("env", &w.env, kind)?;
            refuse_foreign("ports", &w.ports, kind)?;
            refuse_foreign("volumes", &w.volumes, kind)?;
            refuse_foreign("working_dir", &w.working_dir, kind)?;
            refuse_foreign("user", &w.user, kind)?;
            refuse_foreign("privileged", &w.privileged, kind)
        };
        let workload = match kind {
            RuntimeKind::Docker => {
                vm_fields_blank(&self)?;
                Workload::Container(ContainerSpec {
                    image: self.image,
                    cmd: self.cmd,
                    entrypoint: self.entrypoint,
                    env: self.env.unwrap_or_default(),
                    ports: self.ports.unwrap_or_default(),
                    volumes: self.volumes.unwrap_or_default(),
                    working_dir: self.working_dir,
                    user: self.user,
                    privileged: self.privileged.unwrap_or(false),
                })
            }
            RuntimeKind::Firecracker | RuntimeKind::CloudHypervisor => {
                container_fields_blank(&self)?;
                if kind == RuntimeKind::Firecracker {
                    // Firecracker has no hot-plug: these would be silently ignored.
                    refuse_foreign("max_vcpus", &self.max_vcpus, kind)?;
                    refuse_foreign("hotplug_mem_mib", &self.hotplug_mem_mib, kind)?;
                }
                let vm = VmSpec {
                    kernel_image_path: self.kernel_image_path.filter(|p| !p.is_blank()),
                    kernel_args: self.kernel_args,
                    initrd_path: self.initrd_path.filter(|p| !p.is_blank()),
                    rootfs_path: self.rootfs_path.filter(|p| !p.is_blank()),
                    disks: self.disks.unwrap_or_default(),
                    network: self.network,
                    max_vcpus: self.max_vcpus,
                    hotplug_mem_mib: self.hotplug_mem_mib,
                    vmm_binary: self.vmm_binary.filter(|p| !p.is_blank()),
                    agent_port: self.agent_port.unwrap_or(super::DEFAULT_AGENT_PORT),
                };
                if kind == RuntimeKind::Firecracker {
                    Workload::Firecracker(vm)
                } else {
                    Workload::CloudHypervisor(vm)
                }
            }
        };
        let spec = MachineSpec {
            vcpu_count: self.vcpu_count.unwrap_or(defaults.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(defaults.mem_size_mib),
            restart: self.restart.unwrap_or_default(),
            workload,
        };
        spec.validate()?;
        Ok(spec)
    }
}

#[derive(Serialize)]
struct ContainerOut<'a> {
    runtime_type: RuntimeKind,
    vcpu_count: u32,
    mem_size_mib: u64,
    restart: RestartPolicy,
    image: &'a Option<String>,
    cmd: &'a Option<Vec<String>>,
    entrypoint: &'a Option<Vec<String>>,
    env: &'a BTreeMap<String, String>,
    ports: &'a [PortMapping],
    volumes: &'a [VolumeMount],
    working_dir: &'a Option<String>,
    user: &'a Option<String>,
    privileged: bool,
}

#[derive(Serialize)]
struct VmOut<'a> {
    runtime_type: RuntimeKind,
    vcpu_count: u32,
    mem_size_mib: u64,
    restart: RestartPolicy,
    kernel_image_path: &'a Option<PathBuf>,
    kernel_args: &'a Option<String>,
    initrd_path: &'a Option<PathBuf>,
    rootfs_path: &'a Option<PathBuf>,
    disks: &'a [DiskSpec],
    network: &'a Option<NetworkSpec>,
    // Cloud Hypervisor only; absent from a Firecracker machine's config.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_vcpus: Option<&'a Option<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hotplug_mem_mib: Option<&'a Option<u64>>,
    vmm_binary: &'a Option<PathBuf>,
    agent_port: u32,
}

pub(super) fn serialize<S: serde::Serializer>(spec: &MachineSpec, s: S) -> Result<S::Ok, S::Error> {
    let kind = spec.runtime_type();
    match &spec.workload {
        Workload::Container(c) => ContainerOut {
            runtime_type: kind,
            vcpu_count: spec.vcpu_count,
            mem_size_mib: spec.mem_size_mib,
            restart: spec.restart,
            image: &c.image,
            cmd: &c.cmd,
            entrypoint: &c.entrypoint,
            env: &c.env,
            ports: &c.ports,
            volumes: &c.volumes,
            working_dir: &c.working_dir,
            user: &c.user,
            privileged: c.privileged,
        }
        .serialize(s),
        Workload::Firecracker(v) | Workload::CloudHypervisor(v) => {
            let ch = kind == RuntimeKind::CloudHypervisor;
            VmOut {
                runtime_type: kind,
                vcpu_count: spec.vcpu_count,
                mem_size_mib: spec.mem_size_mib,
                restart: spec.restart,
                kernel_image_path: &v.kernel_image_path,
                kernel_args: &v.kernel_args,
                initrd_path: &v.initrd_path,
                rootfs_path: &v.rootfs_path,
                disks: &v.disks,
                network: &v.network,
                max_vcpus: ch.then_some(&v.max_vcpus),
                hotplug_mem_mib: ch.then_some(&v.hotplug_mem_mib),
                vmm_binary: &v.vmm_binary,
                agent_port: v.agent_port,
            }
            .serialize(s)
        }
    }
}

/// `"entrypoint": "/bin/sh"` as well as `["/bin/sh", "-c"]`.
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or an array of strings")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            // An empty string means "no entrypoint" to the original's clients.
            Ok((!s.is_empty()).then(|| vec![s.to_owned()]))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_any(V)
}
