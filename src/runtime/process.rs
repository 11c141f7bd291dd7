//! Process supervision shared by runtimes: signalling process trees and
//! telling which pid namespace a process lives in.

use std::collections::HashMap;
use std::path::PathBuf;

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
