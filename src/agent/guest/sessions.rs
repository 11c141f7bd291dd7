//! The streaming commands running now, by pid, so a signal can reach one
//! over a connection of its own (`Request::Signal`, protocol 1.1): the
//! session's own connection may be stuck behind stdin the command does
//! not read, and then no in-band control frame gets through.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Mutex;

use super::sys;
use crate::agent::protocol::{ErrorKind, RemoteError};

/// Each running stream's pid and, with a pty, a handle on its master
/// (whose foreground group a signal goes to, as a keyboard's would).
static RUNNING: Mutex<BTreeMap<i32, Option<File>>> = Mutex::new(BTreeMap::new());

fn running() -> std::sync::MutexGuard<'static, BTreeMap<i32, Option<File>>> {
    // The map stays consistent whatever a panicking holder did.
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stream's entry, removed when dropped.
pub struct Registered(i32);

impl Drop for Registered {
    fn drop(&mut self) {
        running().remove(&self.0);
    }
}

pub fn register(pid: i32, pty_master: Option<File>) -> Registered {
    running().insert(pid, pty_master);
    Registered(pid)
}

/// Signals a stream's process group (with a pty: its terminal's
/// foreground group). Only registered streams: the host names a command
/// it started, never an arbitrary process.
pub fn signal(pid: i32, signal: i32) -> Result<(), RemoteError> {
    let group = {
        let map = running();
        let master = map.get(&pid).ok_or_else(|| {
            RemoteError::new(
                ErrorKind::NotFound,
                format!("no streaming command with pid {pid} is running"),
            )
        })?;
        target_group(pid, master.as_ref())
    };
    sys::kill_group(group, signal)
        .map_err(|e| RemoteError::from_io(format_args!("signal {signal} to group {group}"), &e))
}

/// The group a signal for the stream `pid` goes to.
pub fn target_group(pid: i32, pty_master: Option<&File>) -> i32 {
    pty_master
        .and_then(|m| sys::foreground_group(m).ok())
        .unwrap_or(pid)
}
