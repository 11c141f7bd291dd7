//! The VMM process of one machine, on top of [`crate::runtime::vmm_process`]:
//! spawned detached (its own session, output in files, identity in a pid
//! file) so that it outlives the daemon, watched while the daemon lives, and
//! found again after a restart.
//!
//! Each process gets a watcher task (the "reaper") that waits for its exit:
//! with `waitpid` when the daemon spawned it (exit code or signal known),
//! with a pidfd when it was adopted from the pid file (the status went to
//! whoever reaped it: [`Exit::Unknown`]). Everyone else learns the exit from
//! the reaper, so nobody waits on the child twice and no operation holds the
//! process while another needs it. Signals go through pidfds, so a pid that
//! is reused is never hit.
//!
//! Once a start has succeeded the run is *committed*: `<kind>.started`
//! names it, and its exit is then also written to `<kind>.exit` (by the
//! daemon that spawned it, the one that knows the status), so that
//! how a run ended is known to anyone who looks later, a restarted daemon
//! included. A start that fails never commits, and leaves no pid file: the
//! last run's exit file stays as it was. A live VMM that `<kind>.started`
//! does not name is a start cut short by a daemon's death.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::binary::VmmBinary;
use super::console::Console;
use super::errors;
use super::files::{self, VmFiles};
use crate::error::{Error, Result};
use crate::model::Exit;
use crate::runtime::http::HttpError;
use crate::runtime::process::ProcessHandle;
use crate::runtime::vmm_process::{tail_lines, Vmm, VmmCommand, VmmExit, READY_POLL};
use crate::runtime::{Observed, Sink};

/// How long a SIGKILLed VMM may take to be gone before we say it is stuck.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How a VMM process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub pid: u32,
    pub start_time: u64,
    /// `code`, `signal` or `unknown` ([`Exit::to_parts`]).
    kind: String,
    number: Option<i64>,
    /// The VMM's last log line when it ended.
    pub last_line: Option<String>,
}

impl Ended {
    fn new(handle: ProcessHandle, exit: Exit, last_line: Option<String>) -> Ended {
        let (kind, number) = exit.to_parts();
        Ended {
            pid: handle.pid,
            start_time: handle.start_time,
            kind: kind.to_owned(),
            number,
            last_line,
        }
    }

    pub fn exit(&self) -> Exit {
        Exit::from_parts(Some(&self.kind), self.number).unwrap_or(Exit::Unknown)
    }

    fn handle(&self) -> ProcessHandle {
        ProcessHandle {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// `: last log line: ...`, or nothing when the VMM said nothing.
    pub fn said(&self) -> String {
        self.last_line
            .as_deref()
            .map(|l| format!("; its last log line: {l}"))
            .unwrap_or_default()
    }

    /// What `error` says beside the exit status: which VMM, and its last words.
    pub fn reason(&self, binary: &VmmBinary) -> String {
        format!("{} pid {}{}", binary.display(), self.pid, self.said())
    }

    fn load(path: &Path) -> Option<Ended> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn save(&self, path: &Path) {
        let text = serde_json::to_string(self).expect("plain fields serialise");
        if let Err(e) = files::replace(path, text.as_bytes()) {
            tracing::warn!(path = %path.display(), "cannot record VMM exit: {e}");
        }
    }
}

impl From<VmmExit> for Exit {
    fn from(e: VmmExit) -> Exit {
        match e {
            VmmExit::Code(c) => Exit::Code(i64::from(c)),
            VmmExit::Signal(s) => Exit::Signal(s),
            VmmExit::Unknown => Exit::Unknown,
        }
    }
}

/// Longest last log line kept (a VMM may log a whole configuration at once).
const MAX_LAST_LINE: usize = 400;

/// The last non-empty line the VMM wrote, from whichever of its log and its
/// stderr was written last, cut to a readable length.
pub fn last_words(files: &VmFiles) -> Option<String> {
    let mut candidates: Vec<(std::time::SystemTime, String)> = [files.vmm_log(), files.stderr()]
        .iter()
        .filter_map(|path| {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
            let line = tail_lines(path, 1).pop()?;
            Some((modified, line))
        })
        .collect();
    candidates.sort_by_key(|(t, _)| *t);
    candidates.pop().map(|(_, line)| shorten(line))
}

fn shorten(mut line: String) -> String {
    if line.len() > MAX_LAST_LINE {
        let mut end = MAX_LAST_LINE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

#[derive(Default)]
struct Record {
    /// The run was committed: its exit goes to the exit file.
    committed: bool,
    ended: Option<Ended>,
}

/// One VMM process: spawned by this daemon, or adopted from its pid file.
pub struct VmmProcess {
    handle: ProcessHandle,
    child: bool,
    exit_file: std::path::PathBuf,
    record: Mutex<Record>,
    ended: watch::Receiver<Option<Ended>>,
}

impl std::fmt::Debug for VmmProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmProcess")
            .field("handle", &self.handle)
            .field("child", &self.child)
            .finish_non_exhaustive()
    }
}

impl VmmProcess {
    /// Takes over `vmm` and starts its reaper.
    fn watch(mut vmm: Vmm, files: &VmFiles) -> Arc<VmmProcess> {
        let (tx, rx) = watch::channel(None);
        let process = Arc::new(VmmProcess {
            handle: vmm.handle(),
            child: vmm.is_child(),
            exit_file: files.exit_file(),
            record: Mutex::new(Record::default()),
            ended: rx,
        });
        let reaped = process.clone();
        let files = files.clone();
        tokio::spawn(async move {
            let exit = match vmm.wait().await {
                Ok(exit) => exit,
                Err(e) => {
                    tracing::warn!(pid = reaped.handle.pid, "cannot wait for VMM: {e}");
                    while reaped.handle.is_alive() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    VmmExit::Unknown
                }
            };
            let ended = Ended::new(reaped.handle, exit.into(), last_words(&files));
            tracing::debug!(pid = ended.pid, exit = %ended.exit(), "VMM ended");
            let mut record = reaped.lock();
            if record.committed && reaped.child {
                ended.save(&reaped.exit_file);
            }
            record.ended = Some(ended.clone());
            tx.send_replace(Some(ended));
        });
        process
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pid(&self) -> u32 {
        self.handle.pid
    }

    pub fn handle(&self) -> ProcessHandle {
        self.handle
    }

    /// Whether this daemon spawned it (and so learns its exit status).
    pub fn is_child(&self) -> bool {
        self.child
    }

    /// When the process started, as RFC 3339 UTC (from its start time in
    /// clock ticks since boot, and the boot time).
    pub fn started_at(&self) -> Option<String> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let boot: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // SAFETY: sysconf has no memory effects.
        let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
        let ms = boot * 1000 + self.handle.start_time * 1000 / ticks.max(1);
        Some(rfc3339(ms))
    }

    /// The run is the machine's current one: its exit is recorded on disk
    /// from now on (at once if it has already ended). Only by its parent:
    /// an adopter knows no more than the pid file already tells, and must
    /// not write over the parent's exact record.
    pub fn commit(&self) {
        let mut record = self.lock();
        record.committed = true;
        if let (true, Some(ended)) = (self.child, &record.ended) {
            ended.save(&self.exit_file);
        }
    }

    /// How it ended, if it has.
    pub fn ended(&self) -> Option<Ended> {
        self.ended.borrow().clone()
    }

    /// Resolves once the process has ended.
    pub async fn wait(&self) -> Ended {
        let mut rx = self.ended.clone();
        let waited = rx
            .wait_for(Option::is_some)
            .await
            .map(|ended| ended.clone());
        match waited {
            Ok(ended) => ended.expect("waited for Some"),
            // The reaper is gone without a word (the runtime is shutting
            // down): see for ourselves.
            Err(_) => {
                while self.handle.is_alive() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ended::new(self.handle, Exit::Unknown, None)
            }
        }
    }

    /// Waits at most `limit` for the end.
    pub async fn wait_for(&self, limit: Duration) -> Option<Ended> {
        tokio::time::timeout(limit, self.wait()).await.ok()
    }

    /// Sends `signal`; false if the process is already gone.
    pub fn signal(&self, signal: i32) -> Result<bool> {
        self.handle
            .signal(signal)
            .map_err(|e| Error::Runtime(errors::chain(&e)))
    }

    /// SIGKILL, and waits until it is gone.
    pub async fn kill(&self) -> Result<Ended> {
        if let Some(ended) = self.ended() {
            return Ok(ended);
        }
        self.signal(libc::SIGKILL)?;
        self.wait_for(KILL_WAIT).await.ok_or_else(|| {
            Error::Runtime(format!(
                "VMM pid {} is still alive {}s after SIGKILL",
                self.handle.pid,
                KILL_WAIT.as_secs()
            ))
        })
    }

    /// SIGTERM, then SIGKILL if it still runs after `grace`.
    pub async fn terminate(&self, grace: Duration) -> Result<Ended> {
        if let Some(ended) = self.ended() {
            return Ok(ended);
        }
        self.signal(libc::SIGTERM)?;
        if let Some(ended) = self.wait_for(grace).await {
            return Ok(ended);
        }
        self.kill().await
    }
}

/// `ms` since the epoch as `2026-11-26T06:33:37.941Z`.
fn rfc3339(ms: u64) -> String {
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// The VMM of one machine.
#[derive(Debug)]
pub struct Supervisor {
    files: VmFiles,
    current: Mutex<Option<Arc<VmmProcess>>>,
    /// The process the start in progress spawned, until it is committed.
    starting: Mutex<Option<Arc<VmmProcess>>>,
}

impl Supervisor {
    pub fn new(files: VmFiles) -> Supervisor {
        Supervisor {
            files,
            current: Mutex::new(None),
            starting: Mutex::new(None),
        }
    }

    fn starting(&self) -> MutexGuard<'_, Option<Arc<VmmProcess>>> {
        self.starting.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn console(&self) -> Console {
        Console::new(self.files.console(), self.files.console_offset())
    }

    pub fn files(&self) -> &VmFiles {
        &self.files
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<VmmProcess>>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `cmd` (whose pid file must be this machine's) detached; it is
    /// this supervisor's process from now on. Refused (EBUSY) while a VMM
    /// of the machine runs.
    pub fn spawn(&self, cmd: &VmmCommand, binary: &VmmBinary) -> Result<Arc<VmmProcess>> {
        debug_assert_eq!(cmd.pid_file, self.files.pid_file());
        let vmm = Vmm::spawn(cmd).map_err(|e| errors::vmm(e, binary))?;
        let process = VmmProcess::watch(vmm, &self.files);
        *self.slot() = Some(process.clone());
        *self.starting() = Some(process.clone());
        Ok(process)
    }

    /// The process spawned by the start in progress.
    pub fn spawned(&self) -> Option<Arc<VmmProcess>> {
        self.starting().clone()
    }

    /// Runs a start (`steps`: spawn, configure, boot) so that it either
    /// leaves a committed, running VMM or nothing new: on failure the VMM it
    /// spawned is killed and its pid file and sockets removed, and the error
    /// says how the VMM ended if it died on its own.
    pub async fn start(
        &self,
        binary: &VmmBinary,
        steps: impl Future<Output = Result<()>>,
    ) -> Result<()> {
        self.starting().take();
        let res = steps.await;
        let spawned = self.starting().take();
        match (res, spawned) {
            (Ok(()), Some(p)) => match p.ended() {
                None => {
                    let marked = self.mark_started(&p);
                    if marked.is_err() {
                        let _ = self.undo_start(&p).await;
                    }
                    marked
                }
                Some(ended) => {
                    let _ = self.undo_start(&p).await;
                    Err(errors::exited(binary, &ended, "as it booted"))
                }
            },
            // The chain brought its own VMM (its spawn step was replaced).
            (Ok(()), None) => Ok(()),
            (Err(e), spawned) => {
                let Some(p) = spawned else { return Err(e) };
                let text = e.report().to_string();
                let e = match p.ended() {
                    Some(ended) if !text.contains(&format!("pid {}) exited", ended.pid)) => {
                        errors::exited(binary, &ended, "while being set up").context(text)
                    }
                    _ => e,
                };
                if let Err(undo) = self.undo_start(&p).await {
                    tracing::warn!(
                        pid = p.pid(),
                        "cannot undo a failed start: {}",
                        undo.report()
                    );
                }
                Err(e)
            }
        }
    }

    /// After a start was dropped half-way (a `kill` cancelled it): the VMM
    /// it spawned, if any, goes, as on a failed start.
    pub async fn abandon_start(&self) -> Result<()> {
        let spawned = self.starting().take();
        match spawned {
            Some(p) => self.undo_start(&p).await,
            None => Ok(()),
        }
    }

    /// The process this supervisor spawned or adopted, ended or not.
    pub fn current(&self) -> Option<Arc<VmmProcess>> {
        self.slot().clone()
    }

    /// The machine's VMM: the one this supervisor holds, else the live one
    /// its pid file names (adopted now, after a daemon restart or by another
    /// runtime object of the same machine).
    pub fn process(&self) -> Option<Arc<VmmProcess>> {
        let mut slot = self.slot();
        if let Some(p) = slot.as_ref() {
            if p.ended().is_none() {
                return Some(p.clone());
            }
        }
        let named = ProcessHandle::read(&self.files.pid_file()).ok().flatten();
        match named {
            Some(handle) if slot.as_ref().is_some_and(|p| p.handle == handle) => slot.clone(),
            Some(handle) if handle.is_alive() => {
                let mut cmd = VmmCommand::new(self.files.kind().as_str(), self.files.dir());
                cmd.pid_file = self.files.pid_file();
                cmd.stdout = self.files.stdout();
                cmd.stderr = self.files.stderr();
                match Vmm::adopt(&cmd) {
                    Ok(Some(vmm)) => {
                        let p = VmmProcess::watch(vmm, &self.files);
                        // Adopted because it runs as the machine's run.
                        p.commit();
                        *slot = Some(p.clone());
                        Some(p)
                    }
                    _ => slot.clone(),
                }
            }
            _ => slot.clone(),
        }
    }

    /// How the machine's last VMM ended, known from what is on disk (or in
    /// memory), when none runs: the exit it recorded, or — for one that died
    /// unwatched, while the daemon was down — an unknown exit with its last
    /// log line. `None` when a VMM runs or none ever did.
    pub fn last_exit(&self) -> Option<Ended> {
        if let Some(p) = self.current() {
            if let Some(ended) = p.ended() {
                return Some(self.settle(ended));
            }
        }
        let named = ProcessHandle::read(&self.files.pid_file()).ok().flatten();
        let recorded = Ended::load(&self.files.exit_file());
        match (named, recorded) {
            (Some(h), Some(e)) if e.handle() == h => Some(e),
            (Some(h), _) if h.is_alive() => None,
            (Some(h), _) => Some(Ended::new(h, Exit::Unknown, last_words(&self.files))),
            (None, recorded) => recorded,
        }
    }

    /// Records that `p`'s start completed: it is the machine's run.
    pub fn mark_started(&self, p: &VmmProcess) -> Result<()> {
        let path = self.files.started_file();
        let text = serde_json::to_string(&p.handle()).expect("two integers serialise");
        files::replace(&path, text.as_bytes())
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        p.commit();
        Ok(())
    }

    /// Whether `p`'s start completed (see the module's documentation).
    pub fn was_started(&self, p: &VmmProcess) -> bool {
        ProcessHandle::read(&self.files.started_file())
            .ok()
            .flatten()
            .is_some_and(|h| h == p.handle)
    }

    /// An exit this supervisor could not know (an adopted process) is
    /// completed from the exit file, if the VMM's parent wrote one.
    fn settle(&self, ended: Ended) -> Ended {
        if ended.exit() != Exit::Unknown {
            return ended;
        }
        match Ended::load(&self.files.exit_file()) {
            Some(recorded) if recorded.handle() == ended.handle() => recorded,
            _ => ended,
        }
    }

    /// How `p` ended, completed from the exit file if need be.
    pub fn ended(&self, p: &VmmProcess) -> Option<Ended> {
        p.ended().map(|e| self.settle(e))
    }

    /// Waits until the API socket exists and `probe` succeeds, for at most
    /// `timeout`; fails at once if the VMM exits meanwhile.
    pub async fn wait_ready<T, F, Fut>(
        &self,
        p: &VmmProcess,
        binary: &VmmBinary,
        timeout: Duration,
        mut probe: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HttpError>>,
    {
        let socket = self.files.api_socket();
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(ended) = p.ended() {
                return Err(errors::exited(
                    binary,
                    &ended,
                    "before its API socket answered",
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(errors::not_ready(socket, timeout, last.as_ref()));
            }
            if socket.exists() {
                match tokio::time::timeout(left, probe()).await {
                    Ok(Ok(answer)) => return Ok(answer),
                    Ok(Err(e)) => last = Some(e),
                    Err(_) => {}
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(READY_POLL.min(left)) => {}
                _ = p.wait() => {}
            }
        }
    }

    /// Undoes a start that failed or was cancelled: the VMM it spawned is
    /// killed, its pid file and sockets removed; the last run's exit record
    /// is left as it was.
    pub async fn undo_start(&self, p: &VmmProcess) -> Result<()> {
        let killed = p.kill().await;
        if let Ok(Some(named)) = ProcessHandle::read(&self.files.pid_file()) {
            if named == p.handle {
                let _ = std::fs::remove_file(self.files.pid_file());
            }
        }
        self.files.remove_sockets();
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|c| c.handle == p.handle) {
            *slot = None;
        }
        killed.map(drop)
    }

    /// After the VMM is gone: its sockets go (Firecracker leaves them).
    pub fn after_exit(&self) {
        self.files.remove_sockets();
    }

    /// SIGKILL to the machine's VMM, if one runs; returns once it is gone.
    pub async fn kill(&self) -> Result<()> {
        if let Some(p) = self.process() {
            p.kill().await?;
        }
        self.after_exit();
        Ok(())
    }

    /// Kills any VMM of the machine and removes every file of its runtime
    /// directory (the directory itself is the core's).
    pub async fn remove(&self) -> Result<()> {
        self.kill().await?;
        self.slot().take();
        self.files.clear()
    }

    /// Waits until the machine's VMM has ended; at once if none runs.
    pub async fn wait_exit(&self) -> Exit {
        match self.process() {
            Some(p) => self.settle(p.wait().await).exit(),
            None => self.last_exit().map_or(Exit::Unknown, |e| e.exit()),
        }
    }

    /// What to say of a machine whose VMM does not run.
    pub fn observe_ended(&self, binary: &VmmBinary) -> Observed {
        match self.last_exit() {
            Some(e) => Observed::Exited {
                exit: e.exit(),
                reason: Some(e.reason(binary)),
            },
            None => Observed::Missing,
        }
    }

    /// Copies the serial console into `sink` until the VMM ends.
    pub async fn follow_console(&self, sink: Sink, resume: bool) -> Result<()> {
        let running = self.process();
        self.console()
            .follow(&sink, resume, async move {
                if let Some(p) = running {
                    p.wait().await;
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RuntimeKind;

    fn files(dir: &Path) -> VmFiles {
        VmFiles::new(dir, RuntimeKind::CloudHypervisor)
    }

    fn command(files: &VmFiles, script: &str) -> VmmCommand {
        let mut cmd = VmmCommand::new("/bin/sh", files.dir())
            .arg("-c")
            .arg(script)
            .socket(files.api_socket());
        cmd.pid_file = files.pid_file();
        cmd.stdout = files.stdout();
        cmd.stderr = files.stderr();
        cmd
    }

    fn binary() -> VmmBinary {
        VmmBinary::new(RuntimeKind::CloudHypervisor, "/bin/sh")
    }

    #[tokio::test]
    async fn a_committed_run_records_its_exit_and_an_uncommitted_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let sup = Supervisor::new(files.clone());

        let p = sup
            .spawn(&command(&files, "echo failing >&2; exit 3"), &binary())
            .unwrap();
        let ended = p.wait().await;
        assert_eq!(ended.exit(), Exit::Code(3));
        assert_eq!(ended.last_line.as_deref(), Some("failing"));
        assert!(!files.exit_file().exists(), "not committed");

        let p = sup.spawn(&command(&files, "exit 4"), &binary()).unwrap();
        p.commit();
        assert_eq!(p.wait().await.exit(), Exit::Code(4));
        // A fresh supervisor (a restarted daemon) knows how it ended.
        let later = Supervisor::new(files.clone());
        assert_eq!(later.last_exit().unwrap().exit(), Exit::Code(4));
        assert!(later.process().is_none());
    }

    #[tokio::test]
    async fn a_vmm_found_by_its_pid_file_is_adopted_and_its_death_seen() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let spawner = Supervisor::new(files.clone());
        let p = spawner
            .spawn(&command(&files, "exec sleep 30"), &binary())
            .unwrap();
        p.commit();

        let other = Supervisor::new(files.clone());
        let adopted = other.process().expect("adopted from the pid file");
        assert_eq!(adopted.pid(), p.pid());
        assert!(!adopted.is_child());
        assert!(other.last_exit().is_none(), "it runs");

        adopted.kill().await.unwrap();
        // The spawner, its parent, learns the signal; the adopter only that
        // it ended, completed from the exit file once the parent wrote it.
        assert_eq!(p.wait().await.exit(), Exit::Signal(libc::SIGKILL));
        let seen = other.settle(adopted.wait().await);
        assert_eq!(seen.exit(), Exit::Signal(libc::SIGKILL));
        assert_eq!(
            Supervisor::new(files).last_exit().unwrap().exit(),
            Exit::Signal(libc::SIGKILL)
        );
    }

    #[test]
    fn start_times_read_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_674_804_765), "2026-11-26T06:33:24.765Z");
    }

    #[tokio::test]
    async fn readiness_fails_fast_on_exit_and_times_out_on_silence() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let sup = Supervisor::new(files.clone());
        let probe = || async { Ok::<(), HttpError>(()) };

        let p = sup
            .spawn(
                &command(&files, "echo no such option >&2; exit 1"),
                &binary(),
            )
            .unwrap();
        let err = sup
            .wait_ready(&p, &binary(), Duration::from_secs(10), probe)
            .await
            .unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
        let text = err.to_string();
        assert!(text.contains("exited with code 1"), "{text}");
        assert!(text.contains("no such option"), "{text}");

        let p = sup
            .spawn(&command(&files, "exec sleep 30"), &binary())
            .unwrap();
        let started = Instant::now();
        let err = sup
            .wait_ready(&p, &binary(), Duration::from_millis(200), probe)
            .await
            .unwrap_err();
        assert_eq!(err.errno(), libc::ETIMEDOUT);
        assert!(started.elapsed() < Duration::from_secs(5));
        sup.undo_start(&p).await.unwrap();
        assert!(!p.handle().is_alive());
        assert!(!files.pid_file().exists());
        assert!(sup.current().is_none());
    }
}
