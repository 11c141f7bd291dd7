//! Helpers for the filesystem tests of microVMs: which VMM, a daemon that
//! can run it, configs, and the host's own view of VMM processes (from
//! /proc, not from the daemon) so that "exactly N VMMs run" is checked
//! against reality.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyperfleet::runtime::process::{proc_stat, ProcessHandle};

use super::{vmm, Daemon};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    Firecracker,
    CloudHypervisor,
}

impl Vmm {
    pub fn runtime_type(self) -> &'static str {
        match self {
            Vmm::Firecracker => "firecracker",
            Vmm::CloudHypervisor => "cloud-hypervisor",
        }
    }

    /// The binary, or `None` (with a note) when there is none: skip.
    pub fn binary(self) -> Option<PathBuf> {
        match self {
            Vmm::Firecracker => vmm::firecracker_bin(),
            Vmm::CloudHypervisor => vmm::cloud_hypervisor_bin(),
        }
    }

    /// What `cat ctl` lists for this runtime.
    pub fn ctl_listing(self) -> &'static str {
        match self {
            Vmm::Firecracker => "start\nstop\nrestart\npause\nresume\nshutdown [grace_secs]\nkill\nsnapshot <dir>\nrestore <dir>\nwait <status|agent> [timeout_secs]\n",
            Vmm::CloudHypervisor => "start\nstop\nrestart\npause\nresume\nshutdown [grace_secs]\nkill\nresize [vcpus=N] [mem=MiB]\nadd-disk <path> [id=ID] [ro]\nremove-device <id>\nsnapshot <dir>\nrestore <dir>\nwait <status|agent> [timeout_secs]\n",
        }
    }
}

/// A daemon able to run `kind`'s VMs; `None` when its binary is missing
/// (the caller returns: the test is skipped, with the note printed).
pub fn daemon(kind: Vmm) -> Option<Daemon> {
    kind.binary()?;
    Some(Daemon::start_with_vmms())
}

/// A config for a `kind` VM booting `kernel` with 64 MiB, plus `extra`
/// fields (JSON members, without braces).
pub fn config(kind: Vmm, kernel: &Path, extra: &str) -> String {
    let mut s = format!(
        r#"{{"runtime_type":"{}","kernel_image_path":"{}","mem_size_mib":64"#,
        kind.runtime_type(),
        kernel.display()
    );
    if !extra.is_empty() {
        s.push(',');
        s.push_str(extra);
    }
    s.push('}');
    s
}

/// Creates machine `name` with `config`.
pub fn create(d: &Daemon, name: &str, config: &str) {
    d.ok(&format!(
        "mkdir machines/{name} && printf '%s' '{config}' > machines/{name}/config"
    ));
}

pub fn status(d: &Daemon, name: &str) -> String {
    d.read(&format!("machines/{name}/status")).trim().to_owned()
}

pub fn error(d: &Daemon, name: &str) -> String {
    d.read(&format!("machines/{name}/error")).trim().to_owned()
}

pub fn logs(d: &Daemon, name: &str) -> String {
    d.read(&format!("machines/{name}/logs"))
}

pub fn info(d: &Daemon, name: &str) -> serde_json::Value {
    let text = d.read(&format!("machines/{name}/info"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("info of {name}: {e}: {text}"))
}

/// The pid of the machine's VMM, as `info` reports it.
pub fn vmm_pid(d: &Daemon, name: &str) -> u32 {
    let info = info(d, name);
    info["runtime_info"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no VMM pid in info of {name}: {info:#}")) as u32
}

/// The machine's runtime directory.
pub fn run_dir(d: &Daemon, name: &str) -> PathBuf {
    let id = d.read(&format!("machines/{name}/id"));
    d.state.join("run").join(id.trim())
}

/// Whether `pid` is a process that has not exited (a zombie has).
pub fn alive(pid: u32) -> bool {
    proc_stat(pid).is_ok_and(|s| !s.has_exited())
}

/// The live VMM processes of a daemon's state directory, as the host sees
/// them: every process whose command line names `<state>/run/`, plus the
/// live processes its pid files name (a stand-in VMM may exec away its
/// arguments).
pub fn processes_under(state: &Path) -> BTreeSet<u32> {
    let needle = format!("{}/run/", state.display());
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && alive(pid) {
            found.insert(pid);
        }
    }
    for dir in std::fs::read_dir(state.join("run"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|e| e == "pid") {
                if let Ok(Some(h)) = ProcessHandle::read(&file.path()) {
                    if h.is_alive() {
                        found.insert(h.pid);
                    }
                }
            }
        }
    }
    found
}

/// The live VMMs of this daemon.
pub fn vmm_processes(d: &Daemon) -> BTreeSet<u32> {
    processes_under(&d.state)
}

/// SIGKILLs every VMM of a state directory and waits (bounded) until they
/// are gone: the cleanup of a test, pass or fail.
pub fn kill_vmms_under(state: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = processes_under(state);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) on a pid that names one process of this test.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs the live processes named by the pid files in `dir` (one VM's
/// runtime directory, in library tests) when dropped: cleanup even when a
/// test fails half-way.
pub struct KillVmmsIn(pub PathBuf);

impl Drop for KillVmmsIn {
    fn drop(&mut self) {
        for file in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if file.path().extension().is_some_and(|e| e == "pid") {
                if let Ok(Some(h)) = ProcessHandle::read(&file.path()) {
                    if h.is_alive() {
                        let _ = h.signal(libc::SIGKILL);
                    }
                }
            }
        }
    }
}

/// Polls `f` until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An executable shell script (a stand-in VMM binary).
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The names of the files in a machine's runtime directory.
pub fn run_files(d: &Daemon, name: &str) -> BTreeSet<String> {
    std::fs::read_dir(run_dir(d, name))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
