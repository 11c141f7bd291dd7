//! The lifecycle state machine: which verb is allowed in which status, and
//! the background tasks (exit watcher, log follower) that belong to a run.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{lock, Core, Machine, Status, Verb};
use crate::error::{Error, Result};
use crate::runtime::{LogOptions, Observed, Runtime};
use crate::store::now_ms;

/// How a running machine is brought down.
#[derive(Debug, Clone, Copy)]
enum Halt {
    Stop,
    Shutdown(Duration),
    Kill,
}

impl Core {
    pub(super) async fn control_machine(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        verb: Verb,
    ) -> Result<()> {
        if let Verb::Wait { status, timeout } = verb {
            return wait_for(m, status, timeout).await;
        }
        let kind = m.snapshot().spec.runtime_type;
        if let Some(cap) = verb.capability() {
            if self.drivers.contains_key(&kind) && !self.capabilities(kind).contains(&cap) {
                return Err(Error::Unsupported {
                    runtime: kind.to_string(),
                    operation: verb.name().into(),
                });
            }
        }
        let _op = m.op.lock().await;
        match verb {
            Verb::Start => self.start_locked(m).await,
            Verb::Stop => self.halt_locked(m, Halt::Stop).await,
            Verb::Shutdown(grace) => self.halt_locked(m, Halt::Shutdown(grace)).await,
            Verb::Kill => self.halt_locked(m, Halt::Kill).await,
            Verb::Restart => {
                if matches!(m.status(), Status::Running | Status::Paused) {
                    self.halt_locked(m, Halt::Stop).await?;
                }
                self.start_locked(m).await
            }
            Verb::Pause => self.pause_locked(m, true).await,
            Verb::Resume => self.pause_locked(m, false).await,
            Verb::Wait { .. } => Ok(()),
        }
    }

    async fn start_locked(self: &Arc<Self>, m: &Arc<Machine>) -> Result<()> {
        let rec = m.snapshot();
        match rec.status {
            s if s.can_start() => {}
            s @ (Status::Running | Status::Paused) => return Err(Error::AlreadyInState(s)),
            s => {
                return Err(Error::InvalidState {
                    action: "start",
                    status: s,
                })
            }
        }
        rec.spec.check_complete()?;
        let runtime = self.new_runtime(m, &rec)?;
        let previous = rec.status;
        self.commit(m, |r| r.status = Status::Starting)?;
        // Until the new run exists, `logs` keeps the last run's output, with
        // pull progress appended, so a failed start loses nothing.
        if let Err(e) = runtime.start().await {
            m.log.note(&format!("start failed: {e}"));
            // Go back to where we were; the runtime left nothing half-created.
            self.force(m, |r| r.status = previous);
            return Err(e);
        }
        let generation = m.next_generation();
        *lock(&m.live) = Some(runtime.clone());
        let committed = self.commit(m, |r| {
            r.status = Status::Running;
            r.started_ms = Some(now_ms());
            r.exit_code = None;
            r.error.clear();
        });
        if let Err(e) = committed {
            // A run the store does not know about must not survive.
            let _ = runtime.kill().await;
            let _ = runtime.remove().await;
            m.next_generation();
            self.force(m, |r| r.status = previous);
            return Err(e);
        }
        self.follow_run(m, runtime, generation);
        Ok(())
    }

    async fn halt_locked(&self, m: &Arc<Machine>, how: Halt) -> Result<()> {
        let rec = m.snapshot();
        let mut previous = rec.status;
        match previous {
            Status::Running | Status::Paused => {}
            Status::Stopped => return Err(Error::AlreadyInState(Status::Stopped)),
            s => {
                return Err(Error::InvalidState {
                    action: "stop",
                    status: s,
                })
            }
        }
        let runtime = self.runtime_for(m, &rec)?;
        self.commit(m, |r| r.status = Status::Stopping)?;
        // A frozen workload cannot handle a stop signal; thaw it first.
        if previous == Status::Paused {
            match runtime.resume().await {
                // Should the stop fail now, the machine is running, not paused.
                Ok(()) => previous = Status::Running,
                Err(e) => tracing::debug!("resume before stop of {}: {e}", rec.name),
            }
        }
        let res = match how {
            Halt::Stop => runtime.stop().await,
            Halt::Shutdown(grace) => runtime.shutdown(grace).await,
            Halt::Kill => runtime.kill().await,
        };
        if let Err(e) = res {
            self.force(m, |r| r.status = previous);
            return Err(e);
        }
        // The run is over: its watcher must not report this exit a second time.
        m.next_generation();
        let exit_code = match runtime.observe().await {
            Ok(Observed::Exited { exit_code, .. }) => Some(exit_code),
            _ => None,
        };
        self.force(m, |r| {
            r.status = Status::Stopped;
            r.exit_code = exit_code;
            r.error.clear();
        });
        Ok(())
    }

    async fn pause_locked(&self, m: &Arc<Machine>, pause: bool) -> Result<()> {
        let rec = m.snapshot();
        let (from, to, action) = if pause {
            (Status::Running, Status::Paused, "pause")
        } else {
            (Status::Paused, Status::Running, "resume")
        };
        if rec.status == to {
            return Err(Error::AlreadyInState(to));
        }
        if rec.status != from {
            return Err(Error::InvalidState {
                action,
                status: rec.status,
            });
        }
        let runtime = self.runtime_for(m, &rec)?;
        if pause {
            runtime.pause().await?;
        } else {
            runtime.resume().await?;
        }
        self.force(m, |r| {
            r.status = to;
            r.error.clear();
        });
        Ok(())
    }

    /// Starts the background tasks of a run: one that notices when the
    /// workload exits on its own, one that copies its output into `logs`.
    pub(super) fn follow_run(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        runtime: Arc<dyn Runtime>,
        generation: u64,
    ) {
        let core = self.clone();
        let machine = m.clone();
        let rt = runtime.clone();
        tokio::spawn(async move { core.watch_exit(machine, rt, generation).await });

        // A new log for the run; the runtime replays its output from the start.
        let run = m.log_run.fetch_add(1, Ordering::SeqCst) + 1;
        if let Err(e) = m.log.reset() {
            tracing::warn!("cannot reset log: {e}");
        }
        tokio::spawn(follow_output(m.clone(), runtime, run));
    }
    async fn watch_exit(
        self: Arc<Self>,
        m: Arc<Machine>,
        runtime: Arc<dyn Runtime>,
        generation: u64,
    ) {
        loop {
            let waited = runtime.wait().await;
            if m.generation() != generation || m.deleted.load(Ordering::SeqCst) {
                return;
            }
            let _op = m.op.lock().await;
            if m.generation() != generation || m.deleted.load(Ordering::SeqCst) {
                return;
            }
            if !matches!(m.status(), Status::Running | Status::Paused) {
                return;
            }
            // A restart policy may already have brought the workload back,
            // and a lost connection to the runtime says nothing about it.
            match runtime.observe().await {
                Ok(Observed::Running) | Ok(Observed::Paused) => {
                    drop(_op);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!("observe after wait failed: {e}");
                    drop(_op);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Ok(Observed::Exited { exit_code, reason }) => {
                    let code = waited.unwrap_or(exit_code);
                    let (status, error) = exit_outcome(code, reason.as_deref(), "");
                    m.next_generation();
                    self.force(&m, |r| {
                        r.status = status;
                        r.exit_code = Some(code);
                        r.error = error;
                    });
                    return;
                }
                Ok(Observed::Missing) => {
                    m.next_generation();
                    self.force(&m, |r| {
                        r.status = Status::Failed;
                        r.error = "the workload disappeared from its runtime".into();
                    });
                    return;
                }
            }
        }
    }
}

/// Copies a run's output into its log until a newer run begins. The stream
/// ends whenever the workload stops; while the machine is still meant to run
/// (a restart policy brought it back, the engine restarted) it is reopened,
/// skipping the bytes already copied, since the runtime replays from the start.
async fn follow_output(m: Arc<Machine>, runtime: Arc<dyn Runtime>, run: u64) {
    let current = || m.log_run.load(Ordering::SeqCst) == run && !m.deleted.load(Ordering::SeqCst);
    let mut copied: u64 = 0;
    loop {
        let opened = runtime
            .logs(LogOptions {
                follow: true,
                tail: None,
            })
            .await;
        match opened {
            Ok(mut stream) => {
                let mut skip = copied;
                while let Some(chunk) = stream.next().await {
                    if !current() {
                        return;
                    }
                    let bytes = match chunk {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::debug!("output stream ended: {e}");
                            break;
                        }
                    };
                    let seen = skip.min(bytes.len() as u64);
                    skip -= seen;
                    let fresh = &bytes[seen as usize..];
                    if fresh.is_empty() {
                        continue;
                    }
                    copied += fresh.len() as u64;
                    if let Err(e) = m.log.append(fresh) {
                        tracing::warn!("cannot append log: {e}");
                    }
                }
            }
            Err(e) => tracing::debug!("cannot follow output: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !current() || !matches!(m.status(), Status::Running | Status::Paused) {
            return;
        }
    }
}

/// Status and error line for a workload that exited by itself.
pub(super) fn exit_outcome(code: i64, reason: Option<&str>, when: &str) -> (Status, String) {
    let reason = reason
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    if code == 0 {
        let note = if when.is_empty() {
            String::new()
        } else {
            format!("exited with code 0{reason}{when}")
        };
        (Status::Stopped, note)
    } else {
        (
            Status::Failed,
            format!("exited with code {code}{reason}{when}"),
        )
    }
}

async fn wait_for(m: &Machine, target: Status, timeout: Duration) -> Result<()> {
    let mut rx = m.status_tx.subscribe();
    let waited = tokio::time::timeout(timeout, async {
        loop {
            if m.deleted.load(Ordering::SeqCst) {
                return Err(Error::NotFound(m.name()));
            }
            if *rx.borrow_and_update() == target {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(Error::NotFound(m.name()));
            }
        }
    })
    .await;
    match waited {
        Ok(res) => res,
        Err(_) => Err(Error::Timeout(format!(
            "machine did not become {target} within {}s (it is {})",
            timeout.as_secs_f64(),
            m.status()
        ))),
    }
}
