//! The fields only a container (Docker) machine has.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::check;
use crate::error::{Error, Result};

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Required to start; pulled if missing.
    pub image: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<VolumeMount>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub privileged: bool,
}

impl ContainerSpec {
    pub(super) fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if let Some(image) = &self.image {
            if image.is_empty() || image.len() > 255 {
                return bad("image must be 1..=255 characters".into());
            }
            if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad("image must not contain whitespace or control characters".into());
            }
        }
        if let Some(cmd) = &self.cmd {
            check::no_nul("cmd", cmd)?;
        }
        if let Some(ep) = &self.entrypoint {
            check::no_nul("entrypoint", ep)?;
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return bad(format!(
                    "env key {k:?} must be non-empty, without '=' or NUL"
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.host_port == 0 || p.container_port == 0 {
                return bad(format!("ports[{i}]: ports must be 1..=65535"));
            }
            if !seen.insert((p.host_port, p.protocol)) {
                return bad(format!(
                    "ports[{i}]: host port {}/{} is mapped twice",
                    p.host_port,
                    p.protocol.as_str()
                ));
            }
        }
        for (i, v) in self.volumes.iter().enumerate() {
            check::path(&format!("volumes[{i}].host_path"), &v.host_path)?;
            check::path(&format!("volumes[{i}].container_path"), &v.container_path)?;
            // Bind mounts are written "host:guest[:ro]"; a colon would split wrongly.
            for p in [&v.host_path, &v.container_path] {
                if p.as_os_str().as_encoded_bytes().contains(&b':') {
                    return bad(format!(
                        "volumes[{i}]: path {} must not contain ':'",
                        p.display()
                    ));
                }
            }
        }
        if let Some(dir) = &self.working_dir {
            check::path("working_dir", Path::new(dir))?;
        }
        if let Some(user) = &self.user {
            if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad("user must be non-empty, without whitespace".into());
            }
        }
        Ok(())
    }
}
