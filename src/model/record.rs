//! A machine's persisted facts: what the store keeps and the core mirrors.

use super::{Exit, MachineName, MachineSpec, Status};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRecord {
    /// Never reused, so inode numbers derived from it stay unique.
    pub seq: u64,
    /// Stable, unique; names runtime resources.
    pub id: String,
    pub name: MachineName,
    pub spec: MachineSpec,
    pub status: Status,
    /// The last failure, one line; empty when none.
    pub error: String,
    /// How the last run ended, if it has.
    pub exit: Option<Exit>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub started_ms: Option<i64>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
