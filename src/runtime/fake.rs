//! A fake runtime for tests: the same [`Driver`] and [`Runtime`] traits, with
//! an "engine" whose state is one JSON file per machine in a directory.
//!
//! Because the engine lives on disk, it outlives the daemon: a test can kill
//! the daemon in the middle of a start and have the engine finish that start
//! afterwards (`finish_start_after_ms`), the way a real engine completes a
//! request the daemon sent just before it died. Time-based effects (a start
//! that lands later, a workload that exits by itself) are evaluated lazily
//! whenever the state is read, so no process has to be alive to apply them.
//!
//! Behaviour is steered by `knobs.json` in the same directory, re-read at
//! every call, so a test can change it while the daemon runs: every
//! operation can be delayed, made to fail, or made to hang until the knob
//! is cleared. The daemon uses this driver only when
//! `HYPERFLEET_FAKE_RUNTIME=<kind>:<dir>` is set; it is never a default.

mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use self::stream::FakeStream;
use super::{
    exec_channels, Driver, ExecStreams, Health, MachineRef, Observed, Runtime, RuntimeInfo, Sink,
};
use crate::error::{Error, Result};
use crate::model::{
    now_ms, ExecOutput, ExecRequest, Exit, MachineSpec, RuntimeKind, StreamRequest, Verb,
};

const POLL: Duration = Duration::from_millis(10);

/// How one operation misbehaves.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpKnob {
    pub delay_ms: u64,
    /// Fail with this message (after the delay).
    pub fail: Option<String>,
    /// Block until the knob is cleared.
    pub hang: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Keyed by operation: start, stop, kill, pause, resume, remove,
    /// observe, exec, wait, info, resize, snapshot, restore; or by
    /// `<operation>:<machine name>` for one machine only.
    pub ops: BTreeMap<String, OpKnob>,
    /// The engine answers nothing at all.
    pub down: bool,
    /// A started workload is `created` for this long before it runs. The
    /// start call waits for it, like a real engine's; if the caller goes
    /// away meanwhile (the daemon died), the engine finishes on its own.
    pub finish_start_after_ms: Option<u64>,
    /// A started workload exits by itself this long after starting...
    pub exit_after_ms: Option<u64>,
    /// ...with this code.
    pub exit_code: i64,
    /// What a run prints when it starts.
    pub output: Option<String>,
}

/// The engine's record of one machine's workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineState {
    /// created, running, paused, exited
    pub state: String,
    pub exit_code: i64,
    /// How many times a workload was started.
    pub starts: u64,
    pub started_ms: i64,
    pub runs_at_ms: Option<i64>,
    pub exits_at_ms: Option<i64>,
    pub exit_code_at_exit: i64,
    pub vcpus: Option<u32>,
    pub disks: Vec<String>,
    /// The state before the start in progress, for `abandon_start`.
    pub before_start: Option<Box<EngineState>>,
}

impl EngineState {
    /// Applies what time has brought since the state was written.
    fn settle(&mut self, now: i64) {
        if self.state == "created" && self.runs_at_ms.is_some_and(|t| t <= now) {
            self.state = "running".into();
            self.runs_at_ms = None;
            self.before_start = None;
        }
        if self.state == "running" && self.exits_at_ms.is_some_and(|t| t <= now) {
            self.state = "exited".into();
            self.exit_code = self.exit_code_at_exit;
            self.exits_at_ms = None;
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeDriver {
    kind: RuntimeKind,
    dir: PathBuf,
}

impl FakeDriver {
    pub fn new(kind: RuntimeKind, dir: impl Into<PathBuf>) -> Self {
        FakeDriver {
            kind,
            dir: dir.into(),
        }
    }

    /// `<kind>:<dir>`, as `HYPERFLEET_FAKE_RUNTIME` gives it.
    pub fn from_setting(setting: &str) -> Result<Self> {
        let (kind, dir) = setting.split_once(':').ok_or_else(|| {
            Error::InvalidConfig(format!(
                "fake runtime setting {setting:?} is not <kind>:<dir>"
            ))
        })?;
        Ok(Self::new(kind.parse()?, dir))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn set_knobs(&self, knobs: &Knobs) -> Result<()> {
        write_json(&self.dir.join("knobs.json"), knobs)
    }

    /// The engine's state of a machine, settled to now.
    pub fn state(&self, id: &str) -> Option<EngineState> {
        let mut s: EngineState = read_json(&self.dir.join(format!("{id}.json")))?;
        s.settle(now_ms());
        Some(s)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Written whole (temp file + rename) so a reader in another process never
/// sees half a state.
fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let bytes = serde_json::to_vec(v).map_err(|e| Error::Runtime(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("rename {}", tmp.display()), e))
}

#[async_trait]
impl Driver for FakeDriver {
    fn kind(&self) -> RuntimeKind {
        self.kind
    }

    fn verbs(&self) -> &'static [Verb] {
        &Verb::ALL
    }

    fn restarts_natively(&self) -> bool {
        false
    }

    async fn health(&self) -> Health {
        let knobs: Knobs = read_json(&self.dir.join("knobs.json")).unwrap_or_default();
        if knobs.down {
            Health::Unavailable {
                reason: "the fake engine is down".into(),
            }
        } else {
            Health::Available {
                detail: format!("fake engine in {}", self.dir.display()),
            }
        }
    }

    fn runtime(
        &self,
        machine: &MachineRef,
        spec: &MachineSpec,
        notes: Sink,
    ) -> Result<Arc<dyn Runtime>> {
        Ok(Arc::new(FakeRuntime {
            kind: self.kind,
            dir: self.dir.clone(),
            machine: machine.clone(),
            spec: spec.clone(),
            notes,
            run: std::sync::Mutex::new(None),
        }))
    }

    async fn owned_machine_ids(&self, _instance: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("list {}", self.dir.display()), e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if id != "knobs" {
                    ids.push(id.to_owned());
                }
            }
        }
        Ok(ids)
    }
}

pub struct FakeRuntime {
    kind: RuntimeKind,
    dir: PathBuf,
    machine: MachineRef,
    spec: MachineSpec,
    notes: Sink,
    /// The run this runtime started (the engine's `starts` then), if any.
    /// As a real engine's old container is gone once a new one runs, a
    /// later run makes this one's workload exited to this runtime.
    run: std::sync::Mutex<Option<u64>>,
}

impl FakeRuntime {
    /// Whether a run other than the one this runtime started is the
    /// engine's current one.
    fn replaced(&self, s: &EngineState) -> bool {
        let run = *self.run.lock().unwrap_or_else(|p| p.into_inner());
        run.is_some_and(|run| run != s.starts)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.machine.id))
    }

    fn knobs(&self) -> Knobs {
        read_json(&self.dir.join("knobs.json")).unwrap_or_default()
    }

    fn load(&self) -> Option<EngineState> {
        let mut s: EngineState = read_json(&self.path())?;
        s.settle(now_ms());
        Some(s)
    }

    fn save(&self, s: &EngineState) -> Result<()> {
        write_json(&self.path(), s)
    }

    /// Applies the operation's knob: waits out a hang and a delay, then
    /// fails if told to. Cancel-safe: dropping the future abandons the wait.
    async fn knob(&self, op: &str) -> Result<Knobs> {
        loop {
            let knobs = self.knobs();
            if knobs.down {
                return Err(Error::RuntimeUnavailable {
                    runtime: self.kind.to_string(),
                    reason: "the fake engine is down".into(),
                });
            }
            let k = knobs
                .ops
                .get(&format!("{op}:{}", self.machine.name))
                .or_else(|| knobs.ops.get(op))
                .cloned()
                .unwrap_or_default();
            if k.hang {
                tokio::time::sleep(POLL).await;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(k.delay_ms)).await;
            if let Some(msg) = k.fail {
                return Err(Error::Runtime(format!("fake {op}: {msg}")));
            }
            return Ok(knobs);
        }
    }

    fn existing(&self) -> Result<EngineState> {
        self.load().ok_or_else(|| {
            Error::Runtime(format!(
                "fake engine has no workload for {}",
                self.machine.id
            ))
        })
    }

    /// Ends a running workload. One that is only `created` is left as it
    /// is, as a real engine does (a kill of a created container is refused).
    fn end(&self, code: i64) -> Result<()> {
        let mut s = self.existing()?;
        if matches!(s.state.as_str(), "running" | "paused") {
            s.state = "exited".into();
            s.exit_code = code;
            s.exits_at_ms = None;
            s.runs_at_ms = None;
        }
        self.save(&s)
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// What `info` says of the handle, once this runtime made a run.
    fn known(&self) -> super::Known {
        let started = self.run.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        super::Known {
            container_id: started.then(|| self.path().display().to_string()),
            pid: None,
        }
    }

    async fn start(&self) -> Result<()> {
        self.spec.check_complete()?;
        self.notes.note("fake engine: starting");
        let knobs = self.knob("start").await?;
        let previous = self.load();
        let now = now_ms();
        let mut s = EngineState {
            starts: previous.as_ref().map_or(0, |p| p.starts) + 1,
            started_ms: now,
            exit_code_at_exit: knobs.exit_code,
            vcpus: Some(self.spec.vcpu_count),
            ..Default::default()
        };
        match knobs.finish_start_after_ms {
            Some(ms) => {
                s.state = "created".into();
                s.runs_at_ms = Some(now + ms as i64);
                s.before_start = previous.map(Box::new);
            }
            None => s.state = "running".into(),
        }
        let runs_at = s.runs_at_ms.unwrap_or(now);
        s.exits_at_ms = knobs.exit_after_ms.map(|ms| runs_at + ms as i64);
        self.save(&s)?;
        *self.run.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.starts);
        while self.load().is_some_and(|s| s.state == "created") {
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    async fn abandon_start(&self) -> Result<()> {
        let Some(s) = self.load() else { return Ok(()) };
        if s.state != "created" {
            return Ok(());
        }
        match s.before_start {
            Some(prev) => self.save(&prev),
            None => {
                std::fs::remove_file(self.path()).map_err(|e| Error::io("remove fake state", e))
            }
        }
    }

    async fn stop(&self) -> Result<()> {
        self.knob("stop").await?;
        self.end(0)
    }

    async fn shutdown(&self, _grace: Duration) -> Result<()> {
        self.knob("stop").await?;
        self.end(0)
    }

    async fn kill(&self) -> Result<()> {
        self.knob("kill").await?;
        self.end(137)
    }

    async fn pause(&self) -> Result<()> {
        self.knob("pause").await?;
        let mut s = self.existing()?;
        if s.state != "running" {
            return Err(Error::Runtime(format!(
                "fake: cannot pause a {} workload",
                s.state
            )));
        }
        s.state = "paused".into();
        self.save(&s)
    }

    async fn resume(&self) -> Result<()> {
        self.knob("resume").await?;
        let mut s = self.existing()?;
        if s.state != "paused" {
            return Err(Error::Runtime(format!(
                "fake: cannot resume a {} workload",
                s.state
            )));
        }
        s.state = "running".into();
        self.save(&s)
    }

    async fn remove(&self) -> Result<()> {
        self.knob("remove").await?;
        match std::fs::remove_file(self.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove fake state", e)),
        }
    }

    async fn observe(&self) -> Result<Observed> {
        self.knob("observe").await?;
        Ok(match self.load() {
            None => Observed::Missing,
            Some(s) if self.replaced(&s) => Observed::Exited {
                exit: Exit::Code(0),
                reason: Some("a later run replaced it".into()),
            },
            Some(s) => match s.state.as_str() {
                "running" => Observed::Running,
                "paused" => Observed::Paused,
                "created" => Observed::Transitional("created".into()),
                "restarting" => Observed::Restarting,
                _ => Observed::Exited {
                    exit: Exit::Code(s.exit_code),
                    reason: None,
                },
            },
        })
    }

    async fn wait(&self) -> Result<Exit> {
        self.knob("wait").await?;
        loop {
            match self.load() {
                None => return Err(Error::Runtime("fake workload vanished".into())),
                Some(s) if self.replaced(&s) => return Ok(Exit::Code(0)),
                Some(s) if s.state == "exited" => return Ok(Exit::Code(s.exit_code)),
                Some(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    async fn info(&self) -> Result<RuntimeInfo> {
        self.knob("info").await?;
        let s = self.load().unwrap_or_default();
        Ok(RuntimeInfo {
            runtime: self.kind,
            state: s.state.clone(),
            handle: Some(self.path().display().to_string()),
            details: serde_json::json!({ "starts": s.starts, "vcpus": s.vcpus, "disks": s.disks }),
            ..Default::default()
        })
    }

    /// `echo ARGS` prints them; `exit N` exits with N; `sleep SECS` sleeps
    /// (honouring the timeout); anything else prints what it was asked.
    async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput> {
        req.validate()?;
        self.knob("exec").await?;
        let mut out = ExecOutput::default();
        match req
            .cmd
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["exit", n] => out.exit_code = n.parse().unwrap_or(1),
            ["sleep", secs] => {
                let d = Duration::from_secs_f64(secs.parse().unwrap_or(0.0));
                if tokio::time::timeout(req.timeout, tokio::time::sleep(d))
                    .await
                    .is_err()
                {
                    out.timed_out = true;
                }
            }
            ["echo", rest @ ..] => out.push(false, format!("{}\n", rest.join(" ")).as_bytes()),
            _ => out.push(
                false,
                format!("fake exec: {}\n", req.cmd.join(" ")).as_bytes(),
            ),
        }
        Ok(out)
    }

    /// Streaming commands: `cat` copies stdin to stdout until stdin
    /// closes; `hold` never reads its stdin; `yes` prints `y` lines without
    /// end; `vanish` goes away without saying how it ended. A signal ends
    /// any of them with 128 + its number, the kill with 137. Anything else
    /// runs as a one-shot exec and streams its result.
    async fn exec_stream(&self, req: &StreamRequest) -> Result<ExecStreams> {
        req.validate()?;
        self.knob("exec").await?;
        let (streams, ends) = exec_channels();
        let cmd: Vec<&str> = req.cmd.iter().map(String::as_str).collect();
        let script = match cmd.as_slice() {
            ["cat"] => FakeStream::Cat,
            ["hold"] => FakeStream::Hold,
            ["yes"] => FakeStream::Yes,
            ["vanish"] => FakeStream::Vanish,
            _ => {
                let mut one_shot = ExecRequest::new(req.cmd.clone());
                if let Some(t) = req.timeout {
                    one_shot.timeout = t;
                }
                FakeStream::Done(self.exec(&one_shot).await?)
            }
        };
        tokio::spawn(script.run(ends));
        Ok(streams)
    }

    async fn follow_output(&self, sink: Sink, resume: bool) -> Result<()> {
        let knobs = self.knobs();
        if !resume {
            if let Some(text) = knobs.output {
                sink.output(text.as_bytes());
            }
        }
        loop {
            match self.load() {
                Some(s) if s.state != "exited" => tokio::time::sleep(POLL).await,
                _ => return Ok(()),
            }
        }
    }

    async fn resize(&self, vcpus: Option<u32>, _mem_mib: Option<u64>) -> Result<()> {
        self.knob("resize").await?;
        let mut s = self.existing()?;
        if let Some(v) = vcpus {
            s.vcpus = Some(v);
        }
        self.save(&s)
    }

    async fn add_disk(&self, path: &Path, id: &str, _read_only: bool) -> Result<()> {
        self.knob("add_disk").await?;
        let mut s = self.existing()?;
        s.disks.push(format!("{id}={}", path.display()));
        self.save(&s)
    }

    async fn remove_device(&self, id: &str) -> Result<()> {
        self.knob("remove_device").await?;
        let mut s = self.existing()?;
        let before = s.disks.len();
        s.disks.retain(|d| !d.starts_with(&format!("{id}=")));
        if s.disks.len() == before {
            return Err(Error::Runtime(format!("fake: no device {id:?}")));
        }
        self.save(&s)
    }

    async fn snapshot(&self, _dir: &Path) -> Result<()> {
        self.knob("snapshot").await?;
        Ok(())
    }

    async fn restore(&self, _dir: &Path) -> Result<()> {
        self.knob("restore").await?;
        let mut s = self.load().unwrap_or_default();
        s.state = "running".into();
        s.starts += 1;
        self.save(&s)
    }
}
