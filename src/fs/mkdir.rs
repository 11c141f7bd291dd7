//! `mkdir -p machines/x/y` makes `x`, then fails on `y` (a machine holds no
//! directories of its own). So that the command creates nothing rather
//! than half, the machine it made a moment ago is deleted again.

use fuser::{Errno, ReplyEntry};

use super::MachineFs;
use crate::model::MachineSpec;

/// Machines `mkdir` made in the last moments, by which process and user:
/// enough to tell the first half of a `mkdir -p machines/x/y` from anything
/// else. When in doubt it is not a half: a machine wrongly kept costs an
/// `rmdir`, one wrongly deleted costs what someone else just made.
#[derive(Default)]
pub(super) struct RecentMkdirs(std::sync::Mutex<Vec<Made>>);

struct Made {
    seq: u64,
    pid: u32,
    uid: u32,
    at: std::time::Instant,
}

/// How long after its mkdir a machine still counts as the first half of one.
const HALF_MKDIR: std::time::Duration = std::time::Duration::from_secs(5);

impl RecentMkdirs {
    pub(super) fn note(&self, seq: u64, pid: u32, uid: u32) {
        // Pid 0 is every process the daemon's pid namespace cannot see
        // (other containers'): it names no one process, so no two mkdirs
        // can be told to be one command's.
        if pid == 0 {
            return;
        }
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|m| m.at.elapsed() < HALF_MKDIR);
        v.push(Made {
            seq,
            pid,
            uid,
            at: std::time::Instant::now(),
        });
    }

    /// Whether process `pid` of user `uid` made machine `seq` just now
    /// (forgetting it if so).
    fn take(&self, seq: u64, pid: u32, uid: u32) -> bool {
        if pid == 0 {
            return false;
        }
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let found = v.iter().position(|m| {
            m.seq == seq && m.pid == pid && m.uid == uid && m.at.elapsed() < HALF_MKDIR
        });
        found.map(|i| v.remove(i)).is_some()
    }
}

impl MachineFs {
    pub(super) fn undo_half_mkdir(&self, seq: u64, pid: u32, uid: u32, reply: ReplyEntry) {
        let Ok(m) = self.machine(seq) else {
            return reply.error(Errno::EPERM);
        };
        // Only a machine still exactly as mkdir made it.
        let untouched = m.with_record(|r| {
            r.status == crate::model::Status::Pending
                && r.spec == MachineSpec::default()
                && r.error.is_empty()
        });
        if !untouched || !self.made.take(seq, pid, uid) {
            return reply.error(Errno::EPERM);
        }
        let core = self.core.clone();
        self.rt.spawn(async move {
            if let Err(e) = core.delete(&m).await {
                tracing::warn!(machine = %m.name(), "undoing a half mkdir -p: {}", e.report());
            }
            reply.error(Errno::EPERM)
        });
    }
}
