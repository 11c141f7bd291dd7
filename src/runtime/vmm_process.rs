//! A VMM process (Firecracker or Cloud Hypervisor) run so that it outlives
//! the daemon: spawned detached into its own session, its output in files of
//! its runtime directory, its identity in a pid file, so that a daemon
//! started after a `kill -9` re-adopts it instead of starting a second one.
//!
//! The runtime directory holds, per machine:
//! - the API socket (and any vsock socket), removed before each spawn if a
//!   previous run left them behind (Firecracker refuses to bind over an old
//!   socket, and so does a vsock device);
//! - `vmm.stdout` and `vmm.stderr` (Firecracker's serial console is its
//!   stdout, so that file is the machine's console log);
//! - `vmm.pid`: pid and start time, see [`ProcessHandle`].

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::http::HttpError;
use super::process::{ProcessError, ProcessHandle, Termination};

/// Lines of each output file carried by an error.
const TAIL_LINES: usize = 20;
/// Bytes read from the end of an output file to find those lines.
const TAIL_BYTES: u64 = 16 * 1024;
/// How often the API socket is tried while a VMM starts. A VMM binds it a
/// few milliseconds after exec; a look costs one stat.
pub const READY_POLL: Duration = Duration::from_millis(2);

/// What to run and where its files go.
#[derive(Debug, Clone)]
pub struct VmmCommand {
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    /// Created (mode 0700) if missing.
    pub runtime_dir: PathBuf,
    /// Sockets the VMM creates (API, vsock): any left from an earlier run
    /// are removed before the spawn. Only sockets are removed; anything else
    /// at such a path fails the spawn.
    pub sockets: Vec<PathBuf>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub pid_file: PathBuf,
}

impl VmmCommand {
    /// `binary` with output and pid file at their default names in
    /// `runtime_dir`.
    pub fn new(binary: impl Into<PathBuf>, runtime_dir: impl Into<PathBuf>) -> Self {
        let runtime_dir = runtime_dir.into();
        VmmCommand {
            binary: binary.into(),
            args: Vec::new(),
            stdout: runtime_dir.join("vmm.stdout"),
            stderr: runtime_dir.join("vmm.stderr"),
            pid_file: runtime_dir.join("vmm.pid"),
            sockets: Vec::new(),
            runtime_dir,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A socket the VMM will create; removed before the spawn if stale.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.sockets.push(path.into());
        self
    }
}

/// How a VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmExit {
    Code(i32),
    Signal(i32),
    /// It was not our child (re-adopted after a daemon restart), so its
    /// status went to someone else. Never read as success.
    Unknown,
}

impl fmt::Display for VmmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmmExit::Code(c) => write!(f, "exit code {c}"),
            VmmExit::Signal(s) => write!(f, "killed by signal {s}"),
            VmmExit::Unknown => f.write_str("exit status unknown"),
        }
    }
}

impl From<std::process::ExitStatus> for VmmExit {
    fn from(status: std::process::ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => VmmExit::Code(code),
            (None, Some(signal)) => VmmExit::Signal(signal),
            (None, None) => VmmExit::Unknown,
        }
    }
}

/// The last lines a VMM wrote, for error messages. Displayed on one line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputTail {
    pub stderr: Vec<String>,
    pub stdout: Vec<String>,
}

impl fmt::Display for OutputTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (name, lines) in [("stderr", &self.stderr), ("stdout", &self.stdout)] {
            if !lines.is_empty() {
                parts.push(format!("{name}: {}", lines.join(" | ")));
            }
        }
        if parts.is_empty() {
            f.write_str("no output")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("VMM binary {path} does not exist")]
    BinaryMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("VMM binary {path} cannot be executed")]
    BinaryNotExecutable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start VMM {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("runtime directory {path}")]
    RuntimeDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "a VMM (pid {pid}, recorded in {pid_file}) is still running for this runtime directory"
    )]
    AlreadyRunning { pid: u32, pid_file: PathBuf },
    #[error("cannot remove stale socket {path}")]
    StaleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is in the way of a VMM socket and is not a socket; not removing it")]
    NotASocket { path: PathBuf },
    #[error("VMM output file {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{binary} exited before its API socket answered ({exit}); {output}")]
    EarlyExit {
        binary: PathBuf,
        exit: VmmExit,
        output: OutputTail,
    },
    #[error("API socket {socket} did not answer within {after:?}; {output}")]
    NotReady {
        socket: PathBuf,
        after: Duration,
        #[source]
        last_error: Option<Box<HttpError>>,
        output: OutputTail,
    },
    #[error("waiting for VMM process {pid}")]
    Wait {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A running (or exited, not yet waited for) VMM process.
///
/// Dropping it leaves the VMM running: that is the point. Stop it with
/// [`Vmm::terminate`].
#[derive(Debug)]
pub struct Vmm {
    handle: ProcessHandle,
    binary: PathBuf,
    /// Present when this process spawned it; `None` when re-adopted.
    child: Option<tokio::process::Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    pid_file: PathBuf,
}

impl Vmm {
    /// Starts `cmd` detached: its own session (no signal from the daemon's
    /// terminal or process group reaches it), stdin from /dev/null, stdout
    /// and stderr to files (truncated), no file descriptor of the daemon
    /// inherited. Refuses if the pid file names a VMM that still runs.
    /// Returns once the process exists; see [`Vmm::wait_ready`] for its API.
    /// A pid file that cannot be parsed also refuses the spawn: it may name
    /// a VMM we could no longer recognise. Must run inside a tokio runtime.
    pub fn spawn(cmd: &VmmCommand) -> Result<Vmm, VmmError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cmd.runtime_dir)
            .map_err(|source| VmmError::RuntimeDir {
                path: cmd.runtime_dir.clone(),
                source,
            })?;
        if let Some(running) = ProcessHandle::read(&cmd.pid_file)?.filter(|h| h.is_alive()) {
            return Err(VmmError::AlreadyRunning {
                pid: running.pid,
                pid_file: cmd.pid_file.clone(),
            });
        }
        for socket in &cmd.sockets {
            remove_stale_socket(socket)?;
        }
        let stdout = output_file(&cmd.stdout)?;
        let stderr = output_file(&cmd.stderr)?;

        let mut command = tokio::process::Command::new(&cmd.binary);
        command
            .args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(false);
        let fd_limit = open_fd_limit();
        // SAFETY: the closure runs in the forked child before exec and calls
        // only async-signal-safe system calls (setsid, close_range, fcntl).
        unsafe {
            command.pre_exec(move || detach_in_child(fd_limit));
        }
        let child = command.spawn().map_err(|source| {
            let path = cmd.binary.clone();
            match source.raw_os_error() {
                Some(libc::ENOENT) => VmmError::BinaryMissing { path, source },
                Some(libc::EACCES | libc::ENOEXEC | libc::EISDIR) => {
                    VmmError::BinaryNotExecutable { path, source }
                }
                _ => VmmError::Spawn { path, source },
            }
        })?;
        let pid = child.id().expect("a child not yet waited for has a pid");
        // The child cannot be reaped before we wait for it, so its stat is
        // readable even if it has already exited.
        let tracked = ProcessHandle::of(pid).and_then(|handle| {
            handle.write(&cmd.pid_file)?;
            Ok(handle)
        });
        let handle = match tracked {
            Ok(handle) => handle,
            Err(e) => {
                // A VMM we cannot find again after a restart must not run.
                let mut child = child;
                let _ = child.start_kill();
                return Err(e.into());
            }
        };
        tracing::debug!(pid, binary = %cmd.binary.display(), "VMM spawned");
        Ok(Vmm {
            handle,
            binary: cmd.binary.clone(),
            child: Some(child),
            stdout: cmd.stdout.clone(),
            stderr: cmd.stderr.clone(),
            pid_file: cmd.pid_file.clone(),
        })
    }

    /// The VMM that `cmd`'s pid file names, if it still runs (as after a
    /// daemon restart). It is not our child: [`Vmm::wait`] will not know its
    /// exit code. Callers should also check that its API socket answers.
    pub fn adopt(cmd: &VmmCommand) -> Result<Option<Vmm>, VmmError> {
        let Some(handle) = ProcessHandle::read(&cmd.pid_file)? else {
            return Ok(None);
        };
        if !handle.is_alive() {
            return Ok(None);
        }
        Ok(Some(Vmm {
            handle,
            binary: cmd.binary.clone(),
            child: None,
            stdout: cmd.stdout.clone(),
            stderr: cmd.stderr.clone(),
            pid_file: cmd.pid_file.clone(),
        }))
    }

    pub fn handle(&self) -> ProcessHandle {
        self.handle
    }

    pub fn pid(&self) -> u32 {
        self.handle.pid
    }

    /// True when this process spawned the VMM (and so learns its exit code).
    pub fn is_child(&self) -> bool {
        self.child.is_some()
    }

    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    pub fn pid_file(&self) -> &Path {
        &self.pid_file
    }

    /// The last lines of the VMM's stderr and stdout.
    pub fn output_tail(&self) -> OutputTail {
        OutputTail {
            stderr: tail_lines(&self.stderr, TAIL_LINES),
            stdout: tail_lines(&self.stdout, TAIL_LINES),
        }
    }

    /// Whether the VMM has exited, without waiting: its status if so.
    fn try_exit(&mut self) -> Result<Option<VmmExit>, VmmError> {
        match &mut self.child {
            Some(child) => child
                .try_wait()
                .map(|s| s.map(VmmExit::from))
                .map_err(|source| VmmError::Wait {
                    pid: self.handle.pid,
                    source,
                }),
            None => Ok((!self.handle.is_alive()).then_some(VmmExit::Unknown)),
        }
    }

    /// Waits until `socket` exists and `probe` (a cheap API call such as
    /// Firecracker's `GET /` or Cloud Hypervisor's `vmm.ping`) succeeds, for
    /// at most `timeout`. Fails at once if the VMM exits meanwhile, with the
    /// last lines of its output.
    pub async fn wait_ready<T, F, Fut>(
        &mut self,
        socket: &Path,
        timeout: Duration,
        mut probe: F,
    ) -> Result<T, VmmError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HttpError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            if let Some(exit) = self.try_exit()? {
                return Err(VmmError::EarlyExit {
                    binary: self.binary.clone(),
                    exit,
                    output: self.output_tail(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(VmmError::NotReady {
                    socket: socket.to_owned(),
                    after: timeout,
                    last_error,
                    output: self.output_tail(),
                });
            }
            if socket.exists() {
                match tokio::time::timeout(left, probe()).await {
                    Ok(Ok(answer)) => return Ok(answer),
                    Ok(Err(e)) => last_error = Some(Box::new(e)),
                    // The deadline passed mid-probe; the loop reports it.
                    Err(_) => {}
                }
            }
            tokio::time::sleep(READY_POLL.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    /// Waits for the VMM to exit. Its status when it is our child;
    /// [`VmmExit::Unknown`] when re-adopted.
    pub async fn wait(&mut self) -> Result<VmmExit, VmmError> {
        let pid = self.handle.pid;
        match &mut self.child {
            Some(child) => child
                .wait()
                .await
                .map(VmmExit::from)
                .map_err(|source| VmmError::Wait { pid, source }),
            None => {
                self.handle.wait_exit().await?;
                Ok(VmmExit::Unknown)
            }
        }
    }

    /// SIGTERM, SIGKILL after `grace`, and waits until the process is gone;
    /// then removes the pid file. Returns how it ended.
    pub async fn terminate(&mut self, grace: Duration) -> Result<VmmExit, VmmError> {
        let how = self.handle.terminate(grace).await?;
        tracing::debug!(pid = self.handle.pid, ?how, "VMM terminated");
        let exit = if self.child.is_some() {
            // It has exited (or was reaped by an earlier wait): this collects
            // the status at once.
            self.wait().await?
        } else if how == Termination::Killed {
            VmmExit::Signal(libc::SIGKILL)
        } else {
            VmmExit::Unknown
        };
        self.forget_pid_file();
        Ok(exit)
    }

    /// Removes the pid file if it still names this process.
    fn forget_pid_file(&self) {
        if let Ok(Some(recorded)) = ProcessHandle::read(&self.pid_file) {
            if recorded == self.handle {
                let _ = std::fs::remove_file(&self.pid_file);
            }
        }
    }
}

/// Removes a socket left by an earlier run. Anything that is not a socket is
/// left alone and reported: it is not ours to delete.
fn remove_stale_socket(path: &Path) -> Result<(), VmmError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(VmmError::StaleSocket {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(VmmError::NotASocket {
            path: path.to_owned(),
        });
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(VmmError::StaleSocket {
            path: path.to_owned(),
            source,
        }),
    }
}

/// An output file, truncated, readable by the owner only (a console log
/// may carry secrets).
fn output_file(path: &Path) -> Result<std::fs::File, VmmError> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| VmmError::Output {
            path: path.to_owned(),
            source,
        })
}

/// The last `n` lines of a file (its last few KiB), lossily decoded; empty
/// if it cannot be read.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    // Reading from the middle of the file: the first line is likely cut.
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let lines: Vec<String> = lines
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// The highest fd number that may be open, read before forking (the child
/// must not allocate).
fn open_fd_limit() -> i32 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok {
        i32::try_from(limit.rlim_cur)
            .unwrap_or(i32::MAX)
            .min(1 << 20)
    } else {
        1024
    }
}

/// Runs in the forked child before exec: a new session, and every fd above
/// stderr marked close-on-exec so the VMM inherits nothing from the daemon
/// (FUSE device, SQLite, sockets). Marked rather than closed: std's spawn
/// reports exec failures through a close-on-exec pipe among them.
fn detach_in_child(fd_limit: i32) -> std::io::Result<()> {
    // SAFETY: setsid has no memory effects. It cannot fail here: a freshly
    // forked child is never a process-group leader.
    if unsafe { libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets fd flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc != 0 {
        // Kernels before 5.11 lack the flag: set it fd by fd.
        for fd in 3..fd_limit {
            // SAFETY: fcntl on a number that may not be an open fd fails
            // with EBADF and changes nothing.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = tail_lines(&path, 3);
        assert_eq!(tail, ["line 97", "line 98", "line 99"]);
        assert!(tail_lines(&dir.path().join("missing"), 3).is_empty());
    }

    #[test]
    fn output_tail_reads_on_one_line() {
        let tail = OutputTail {
            stderr: vec!["Error: bind".into()],
            stdout: vec!["a".into(), "b".into()],
        };
        assert_eq!(tail.to_string(), "stderr: Error: bind; stdout: a | b");
        assert_eq!(OutputTail::default().to_string(), "no output");
    }

    #[test]
    fn stale_sockets_go_and_other_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(listener);
        remove_stale_socket(&sock).unwrap();
        assert!(!sock.exists());
        remove_stale_socket(&sock).unwrap();

        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        assert!(matches!(
            remove_stale_socket(&file),
            Err(VmmError::NotASocket { .. })
        ));
        assert!(file.exists());
    }
}
