//! The machine lifecycle: pending → starting → running ⇄ paused → stopping → stopped, and failed.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Pending,
    Starting,
    Running,
    Paused,
    Stopping,
    Stopped,
    Failed,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Starting,
        Status::Running,
        Status::Paused,
        Status::Stopping,
        Status::Stopped,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }

    /// A machine in one of these states owns live runtime resources.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Starting | Status::Running | Status::Paused | Status::Stopping
        )
    }

    /// States from which `start` may be issued.
    pub fn can_start(self) -> bool {
        matches!(self, Status::Pending | Status::Stopped | Status::Failed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_name() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>(), Ok(st));
        }
        assert!("runing".parse::<Status>().is_err());
    }
}
