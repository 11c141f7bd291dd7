//! The isolation technologies a machine can run under.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

    pub fn is_vm(self) -> bool {
        !matches!(self, RuntimeKind::Docker)
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
