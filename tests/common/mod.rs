//! Shared harness for the filesystem tests: a real daemon on a real FUSE
//! mount in a temp dir, driven by `sh -c` scripts, against the real Docker engine.
#![allow(dead_code)]

pub mod fake_vmm;
pub mod kernel;
pub mod registry;
pub mod rest;
pub mod vm;
pub mod vmm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hyperfleet");

/// The local test image, made by contrib/make-test-image.sh.
pub fn image() -> String {
    std::env::var("HYPERFLEET_TEST_IMAGE")
        .unwrap_or_else(|_| "hyperfleet-test/busybox:latest".into())
}

/// Fails the test (never skips it) when Docker or the test image is missing.
pub fn require_docker() {
    let out = Command::new("docker")
        .args(["image", "inspect", &image()])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "test image {} is not available ({}); start dockerd and run contrib/make-test-image.sh",
            image(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("cannot run the docker CLI ({e}); install docker.io and start dockerd"),
    }
}

/// The daemon inherits the test's environment; this adds the VMM binaries
/// (`HYPERFLEET_FIRECRACKER_BIN`, `HYPERFLEET_CLOUD_HYPERVISOR_BIN`) found
/// by [`vmm`]'s lookup where the environment does not set them.
pub fn vmm_env() -> Vec<(String, String)> {
    let mut envs = Vec::new();
    for (var, bin) in [
        ("HYPERFLEET_FIRECRACKER_BIN", vmm::firecracker_bin()),
        (
            "HYPERFLEET_CLOUD_HYPERVISOR_BIN",
            vmm::cloud_hypervisor_bin(),
        ),
    ] {
        let set = std::env::var_os(var).is_some_and(|v| !v.is_empty());
        if let (false, Some(bin)) = (set, bin) {
            envs.push((var.to_owned(), bin.display().to_string()));
        }
    }
    envs
}

pub struct Daemon {
    pub mount: PathBuf,
    pub state: PathBuf,
    child: Option<Child>,
    envs: Vec<(String, String)>,
    /// A command the daemon runs under (`unshare ...`), if any.
    wrapper: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with_env(&[])
    }

    /// A daemon that can run microVMs (see [`vmm_env`]).
    pub fn start_with_vmms() -> Daemon {
        let envs = vmm_env();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::start_with_env(&envs)
    }

    pub fn start_with_env(envs: &[(&str, &str)]) -> Daemon {
        Self::start_under(&[], envs)
    }

    /// A daemon run as the last words of `wrapper` (e.g. `unshare --pid
    /// --fork`): its pid is not the child's, so only its mount is waited for.
    pub fn start_under(wrapper: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("hf-test-")
            .tempdir()
            .expect("tempdir");
        let mut d = Daemon {
            mount: dir.path().join("mnt"),
            state: dir.path().join("state"),
            child: None,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            wrapper: wrapper.iter().map(|w| w.to_string()).collect(),
            _dir: dir,
        };
        d.spawn();
        d
    }

    /// Starts the daemon process on this daemon's mount and state dir.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join("daemon.log"))
            .expect("daemon log");
        let mut argv: Vec<String> = self.wrapper.clone();
        argv.push(BIN.to_owned());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .args(["daemon", "--foreground", "--mount"])
            .arg(&self.mount)
            .arg("--state-dir")
            .arg(&self.state)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        let pid = child.id().to_string();
        self.child = Some(child);
        // README alone is not enough: after a kill -9 the kernel answers
        // `stat` of the dead mount from its cache for a while. The daemon
        // writes its pid file once its own mount is up.
        let serving = |d: &Daemon| {
            d.mount.join("README").exists()
                && std::fs::read_to_string(d.state.join("hyperfleet.pid"))
                    .is_ok_and(|p| p.trim() == pid || !d.wrapper.is_empty())
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !serving(self) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("daemon exited early with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not mount; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// SIGKILL: no chance to unmount or to persist anything more.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal` (SIGTERM, SIGINT) and waits for the daemon to exit;
    /// returns its exit status.
    pub fn stop_with(&mut self, signal: libc::c_int) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("daemon ignored signal {signal}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a shell script in the mount point with `$IMAGE` and `$HF` (the
    /// hyperfleet binary) set.
    pub fn sh(&self, script: &str) -> Output {
        self.script(script).output().expect("run sh")
    }

    /// `sh -c script` in the mount point, with `$IMAGE` and `$HF` set.
    fn script(&self, script: &str) -> Command {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(script)
            .current_dir(&self.mount)
            .env("IMAGE", image())
            .env("HF", BIN)
            .env("HYPERFLEET_MOUNT", &self.mount);
        sh
    }

    /// Starts `script` as [`Daemon::sh`] does, its stdout piped, and returns
    /// once its process is blocked in a request the daemon has not answered
    /// (the kernel's wait for a FUSE answer): it, or one of its children.
    pub fn blocked(&self, script: &str) -> Child {
        let mut child = self
            .script(script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        for _ in 0..600 {
            if family(child.id()).into_iter().any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                    .is_ok_and(|w| w == "request_wait_answer")
            }) {
                return child;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.kill().ok();
        child.wait().ok();
        panic!("{script:?} never blocked in a FUSE request");
    }

    /// Runs a script that must succeed; returns its stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "script failed ({}):\n{script}\nstdout: {}\nstderr: {}\ndaemon log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a script that must fail; returns its stderr.
    pub fn fails(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            !out.status.success(),
            "script unexpectedly succeeded:\n{script}\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.mount.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// This daemon's instance id: every container it makes carries it as a label.
    pub fn instance(&self) -> String {
        let conn = rusqlite::Connection::open(self.state.join("hyperfleet.db")).expect("open db");
        conn.query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
            r.get(0)
        })
        .expect("instance id")
    }

    /// Docker containers (running or not) made by this daemon.
    pub fn containers(&self) -> Vec<String> {
        containers_with_label(&format!("hyperfleet.instance={}", self.instance()))
    }

    /// A running machine named `name` whose PID 1 is `cmd` (a JSON array).
    pub fn running(&self, name: &str, cmd_json: &str) {
        self.machine(name, cmd_json);
        self.ok(&format!("echo start > machines/{name}/ctl"));
        assert_eq!(self.read(&format!("machines/{name}/status")), "running\n");
    }

    /// Creates a machine with the test image running `cmd` (a JSON array).
    pub fn machine(&self, name: &str, cmd_json: &str) {
        self.ok(&format!(
            "mkdir machines/{name} && printf '%s' '{{\"image\":\"'\"$IMAGE\"'\",\"cmd\":{cmd_json}}}' > machines/{name}/config"
        ));
    }

    /// Creates machine `name` with `config` (any JSON), written with `cat`
    /// from a file, which spares the caller a layer of shell quoting.
    pub fn machine_with_config(&self, name: &str, config: &serde_json::Value) {
        let file = self._dir.path().join(format!("{name}.config.json"));
        std::fs::write(&file, config.to_string()).expect("write config file");
        self.ok(&format!(
            "mkdir machines/{name} && cat '{}' > machines/{name}/config",
            file.display()
        ));
    }

    /// Polls the shell condition `cond` until it holds (true) or `secs` have
    /// passed (false). For conditions that come true by themselves (a
    /// workload wrote something): no fixed sleep to guess.
    pub fn poll(&self, cond: &str, secs: u32) -> bool {
        self.sh(&format!(
            "end=$(( $(date +%s) + {secs} ))
             until {cond}; do
               [ $(date +%s) -lt $end ] || exit 99
               sleep 0.05
             done"
        ))
        .status
        .success()
    }

    /// [`Daemon::poll`] that fails the test, saying `what`, when time is up.
    pub fn until(&self, cond: &str, secs: u32, what: &str) {
        assert!(
            self.poll(cond, secs),
            "{what}: not so within {secs}s (condition: {cond})\ndaemon log tail:\n{}",
            tail(&self.log(), 30)
        );
    }

    /// A machine's `info`, parsed.
    pub fn info(&self, name: &str) -> serde_json::Value {
        let text = self.read(&format!("machines/{name}/info"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("info of {name}: {e}: {text}"))
    }
}

/// A host directory bind-mounted into a machine's container, where its
/// workload leaves marks (a line per start, "got TERM") that the test reads
/// from the host.
pub struct Shared {
    dir: tempfile::TempDir,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            dir: tempfile::Builder::new()
                .prefix("hf-shared-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The volume entry of a config that mounts this dir at `/shared`.
    pub fn volume(&self) -> serde_json::Value {
        serde_json::json!({"host_path": self.path(), "container_path": "/shared"})
    }

    /// A file's content, empty if it does not exist (yet).
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path().join(file)).unwrap_or_default()
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the docker CLI; it must succeed. Returns trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Asserts that a failed script's `stderr` names the expected errno.
pub fn expect_errno(stderr: &str, errno_text: &str) {
    assert!(
        stderr.contains(errno_text),
        "expected {errno_text:?} in stderr, got:\n{stderr}"
    );
}

pub fn containers_with_label(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label={label}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Remove this daemon's containers even when a test failed half-way.
        let ids = if self.state.join("hyperfleet.db").exists() {
            self.containers()
        } else {
            vec![]
        };
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
        if let Some(c) = self.child.as_mut() {
            // A wrapper (unshare) ignores SIGTERM while it waits for the
            // daemon; killed, it has the daemon sent SIGTERM (--kill-child).
            let signal = if self.wrapper.is_empty() {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            };
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, signal) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mount) {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
        // VMMs outlive their daemon by design: the test's go with it.
        vm::kill_vmms_under(&self.state);
    }
}

pub mod vsock_relay;

/// A process and its descendants, by the parent each process's `stat` names.
fn family(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // After the command's name in parentheses: state, then parent.
            let rest = &stat[stat.rfind(')')? + 1..];
            Some((p, rest.split_whitespace().nth(1)?.parse().ok()?))
        })
        .collect();
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    all
}
