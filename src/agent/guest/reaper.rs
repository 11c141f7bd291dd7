//! The one place that waits for child processes.
//!
//! As PID 1 (and as a subreaper otherwise) the agent inherits orphans that
//! must be reaped or they stay zombies forever. Reaping them with
//! `waitpid(-1)` would also reap the commands the agent is waiting for, so
//! all waiting happens here: one thread reaps every child, hands the status
//! of a registered command to its [`ExitWatch`], and drops the rest.
//!
//! A command is registered under the same lock the reaper takes to hand out
//! a status, and the lock is held from before the fork until the pid is
//! registered, so even a command that exits at once finds its watcher.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, Once};

use super::sys;

#[derive(Default)]
struct Registry {
    children: HashMap<i32, Slot>,
    /// Bumped at every spawn: wakes the reaper when it had no children.
    spawned: u64,
}

struct Slot {
    status: Option<i32>,
    /// Dropped when the status is in: the watcher's read end sees EOF.
    notify: Option<File>,
    /// The watcher is gone; forget the child once reaped.
    abandoned: bool,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static SPAWNED: Condvar = Condvar::new();
static START: Once = Once::new();

fn registry() -> MutexGuard<'static, Option<Registry>> {
    // A panic while holding the lock leaves the map consistent (every
    // update is a single insert or field write), so carry on.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the reaper thread (once).
pub fn start() -> io::Result<()> {
    let mut result = Ok(());
    START.call_once(|| {
        *registry() = Some(Registry::default());
        result = std::thread::Builder::new()
            .name("reaper".into())
            .spawn(reap_forever)
            .map(drop);
    });
    result
}

/// Notice of one child's end: its fd becomes readable (EOF) once the
/// status is in.
pub struct ExitWatch {
    pid: i32,
    ready: File,
}

impl ExitWatch {
    pub fn fd(&self) -> &File {
        &self.ready
    }

    /// The raw wait status, once the child has been reaped.
    pub fn status(&self) -> Option<i32> {
        registry()
            .as_ref()
            .and_then(|r| r.children.get(&self.pid))
            .and_then(|s| s.status)
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        let mut guard = registry();
        let Some(reg) = guard.as_mut() else { return };
        match reg.children.get_mut(&self.pid) {
            Some(slot) if slot.status.is_some() => {
                reg.children.remove(&self.pid);
            }
            Some(slot) => slot.abandoned = true,
            None => {}
        }
    }
}

/// Runs `fork` (which returns the child's pid in the parent) with the
/// registry locked and registers the child before anyone can reap it.
pub fn spawn_watched(fork: impl FnOnce() -> io::Result<i32>) -> io::Result<(i32, ExitWatch)> {
    start()?;
    let (ready, notify) = sys::pipe()?;
    let mut guard = registry();
    let pid = fork()?;
    if let Some(reg) = guard.as_mut() {
        reg.children.insert(
            pid,
            Slot {
                status: None,
                notify: Some(notify),
                abandoned: false,
            },
        );
        reg.spawned += 1;
    }
    drop(guard);
    SPAWNED.notify_all();
    Ok((pid, ExitWatch { pid, ready }))
}

fn reap_forever() {
    loop {
        let seen = registry().as_ref().map_or(0, |r| r.spawned);
        match sys::wait_any() {
            Ok((pid, status)) => {
                let mut guard = registry();
                let Some(reg) = guard.as_mut() else { continue };
                if let Some(slot) = reg.children.get_mut(&pid) {
                    if slot.abandoned {
                        reg.children.remove(&pid);
                    } else {
                        slot.status = Some(status);
                        slot.notify = None;
                    }
                }
                // Anything else was an orphan: reaping it was the point.
            }
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                // No children: sleep until a spawn. A spawn between the
                // failed wait and here has bumped the counter already.
                let mut guard = registry();
                while guard.as_ref().map_or(0, |r| r.spawned) == seen {
                    guard = SPAWNED.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                super::log(format_args!("waitpid failed: {e}; reaper retrying"));
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// A raw wait status as the protocol's exit status.
pub fn exit_status(raw: i32) -> crate::agent::protocol::ExitStatus {
    use crate::agent::protocol::ExitStatus;
    if libc::WIFSIGNALED(raw) {
        ExitStatus::Signal(libc::WTERMSIG(raw))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(raw))
    }
}
