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
    /// The last [`ERRORS_KEPT`] failures, oldest first: (unix ms, line).
    pub errors: Vec<(i64, String)>,
    /// How the last run ended, if it has.
    pub exit: Option<Exit>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub started_ms: Option<i64>,
}

/// Failures a machine remembers in `errors`.
pub const ERRORS_KEPT: usize = 20;

impl MachineRecord {
    /// Sets `error` to what a runtime reported (a workload that failed,
    /// a stop that reconcile finished); an empty line clears it.
    pub fn set_error(&mut self, line: String) {
        if line.is_empty() {
            self.error.clear();
        } else {
            self.push_error(line);
        }
    }

    /// Records a failure: the latest in `error`, and in the history.
    pub fn push_error(&mut self, line: String) {
        self.errors.push((now_ms(), line.clone()));
        let excess = self.errors.len().saturating_sub(ERRORS_KEPT);
        self.errors.drain(..excess);
        self.error = line;
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
