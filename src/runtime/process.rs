//! Process supervision shared by runtimes: signalling process trees, telling
//! which pid namespace a process lives in, and knowing a process again after
//! a daemon restart ([`ProcessHandle`]: pid plus start time, kept in a pid
//! file) so that a VMM is re-adopted, never confused with a stranger that
//! got its pid, and stopped with grace.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pidfd::PidFd;

/// The pid namespace of `pid` ("self" for this process), if it can be read.
pub fn pid_namespace(pid: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// SIGKILLs `root` and all its descendants. The tree is frozen with
/// SIGSTOP first, so nothing forks a new child between listing and killing.
/// Fails only if `root` itself could not be signalled.
pub fn kill_tree(root: i32) -> Result<(), String> {
    let mut victims = vec![root];
    // Two passes: a child forked while the first pass was stopping its
    // parent shows up in the second.
    for _ in 0..2 {
        for pid in &victims {
            // SAFETY: kill(2) has no memory effects; `pid` is positive, so
            // it names one process, never a group or "all processes".
            unsafe { libc::kill(*pid, libc::SIGSTOP) };
        }
        victims = descendants(root);
        victims.insert(0, root);
    }
    let mut outcome = Ok(());
    for pid in victims {
        // SAFETY: as above.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 && pid == root {
            let errno = std::io::Error::last_os_error();
            // ESRCH: it exited on its own meanwhile, which is what we wanted.
            if errno.raw_os_error() != Some(libc::ESRCH) {
                outcome = Err(format!("kill({root}, SIGKILL): {errno}"));
            }
        }
    }
    outcome
}

/// Every live descendant of `root`, from /proc.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses; fields after
            // its closing parenthesis are fixed: state, then ppid.
            let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if child > 0 && !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Whether this process may send signals to `pid` (kill(2) with signal 0).
pub fn may_signal(pid: i32) -> bool {
    // SAFETY: signal 0 checks permission and existence; nothing is sent.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// `pid`'s pid inside its own (innermost) pid namespace, from the `NSpid`
/// line of /proc/<pid>/status.
pub fn namespaced_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The facts of `/proc/<pid>/stat` that tell one process from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// R, S, D, Z (exited, not yet reaped), X (dead), ...
    pub state: char,
    pub ppid: i32,
    /// Field 22: when the process started, in clock ticks since boot. A pid
    /// that is reused gets a new start time, so (pid, start time) names one
    /// process for the life of the host.
    pub start_time: u64,
}

impl ProcStat {
    /// Exited (a zombie waiting for its parent) or being torn down.
    pub fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `/proc/<pid>/stat`; `NotFound` when there is no such process.
pub fn proc_stat(pid: u32) -> std::io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unreadable /proc/{pid}/stat: {text:?}"),
        )
    })
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses; the fields
    // after its last closing parenthesis are fixed, starting at field 3.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// Why a process could not be tracked or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("pid file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pid file {path} holds {content:?}, not a pid and start time")]
    CorruptPidFile { path: PathBuf, content: String },
    #[error("process {pid}")]
    Inspect {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("sending signal {signal} to process {pid}")]
    Signal {
        pid: u32,
        signal: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} is still alive {after:?} after SIGKILL")]
    StillAlive { pid: u32, after: Duration },
}

/// How [`ProcessHandle::terminate`] ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It had exited before we asked.
    AlreadyGone,
    /// It exited within the grace period after SIGTERM.
    Exited,
    /// It outlived the grace period and was SIGKILLed.
    Killed,
}

/// How long a SIGKILLed process may take to be gone (it may be finishing
/// uninterruptible I/O) before we say it is stuck.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// One process, named by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessHandle {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessHandle {
    /// The process that has `pid` now.
    pub fn of(pid: u32) -> Result<Self, ProcessError> {
        let stat = proc_stat(pid).map_err(|source| ProcessError::Inspect { pid, source })?;
        Ok(ProcessHandle {
            pid,
            start_time: stat.start_time,
        })
    }

    /// True while this very process runs: its pid exists, was not reused
    /// (same start time) and it has not exited (a zombie is not alive).
    pub fn is_alive(&self) -> bool {
        proc_stat(self.pid).is_ok_and(|s| s.start_time == self.start_time && !s.has_exited())
    }

    /// Reads a pid file written by [`ProcessHandle::write`]; `None` when
    /// there is none. Whether that process still runs is for
    /// [`ProcessHandle::is_alive`] to say.
    pub fn read(pidfile: &Path) -> Result<Option<Self>, ProcessError> {
        let content = match std::fs::read_to_string(pidfile) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ProcessError::PidFile {
                    path: pidfile.to_owned(),
                    source,
                })
            }
        };
        serde_json::from_str(&content)
            .map(Some)
            .map_err(|_| ProcessError::CorruptPidFile {
                path: pidfile.to_owned(),
                content: content.chars().take(200).collect(),
            })
    }

    /// Writes the pid file atomically: a reader sees the old content or the
    /// whole new one, never a half-written file, even across a crash.
    pub fn write(&self, pidfile: &Path) -> Result<(), ProcessError> {
        let err = |source| ProcessError::PidFile {
            path: pidfile.to_owned(),
            source,
        };
        let mut tmp = pidfile.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_string(self).expect("two integers serialise");
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, pidfile)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(err)
    }

    /// A pidfd for this process, or `None` if it is gone (or its pid now
    /// belongs to another process).
    pub fn pidfd(&self) -> Result<Option<PidFd>, ProcessError> {
        PidFd::open(*self).map_err(|source| ProcessError::Inspect {
            pid: self.pid,
            source,
        })
    }

    /// Resolves once the process has exited. Works for any process, not
    /// only our children (pidfd_open + poll), but cannot tell the exit code.
    pub async fn wait_exit(&self) -> Result<(), ProcessError> {
        let Some(fd) = self.pidfd()? else {
            return Ok(());
        };
        fd.exited().await.map_err(|source| ProcessError::Inspect {
            pid: self.pid,
            source,
        })
    }

    /// Sends `signal` if the process is still this one; false if it is gone.
    pub fn signal(&self, signal: i32) -> Result<bool, ProcessError> {
        let Some(fd) = self.pidfd()? else {
            return Ok(false);
        };
        fd.send_signal(signal)
            .map_err(|source| ProcessError::Signal {
                pid: self.pid,
                signal,
                source,
            })
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`; returns
    /// once the process is gone. Signals go through a pidfd, so a pid reused
    /// meanwhile is never hit.
    pub async fn terminate(&self, grace: Duration) -> Result<Termination, ProcessError> {
        let Some(fd) = self.pidfd()? else {
            return Ok(Termination::AlreadyGone);
        };
        let inspect = |source| ProcessError::Inspect {
            pid: self.pid,
            source,
        };
        let signal = |signal| {
            fd.send_signal(signal)
                .map_err(|source| ProcessError::Signal {
                    pid: self.pid,
                    signal,
                    source,
                })
        };
        if fd.has_exited().map_err(inspect)? || !signal(libc::SIGTERM)? {
            return Ok(Termination::AlreadyGone);
        }
        if tokio::time::timeout(grace, fd.exited()).await.is_ok() {
            return Ok(Termination::Exited);
        }
        signal(libc::SIGKILL)?;
        match tokio::time::timeout(KILL_WAIT, fd.exited()).await {
            Ok(done) => done.map(|()| Termination::Killed).map_err(inspect),
            Err(_) => Err(ProcessError::StillAlive {
                pid: self.pid,
                after: KILL_WAIT,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name() {
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 50";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.start_time, 987654);
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessHandle::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        let impostor = ProcessHandle {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive());
    }
}
