//! What belongs to a run once it has begun: the task that copies its output
//! into `logs`, the one that notices when the workload exits by itself, and
//! the restart policy for runtimes that have none of their own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::logsink::RunSink;
use super::machine::lock;
use super::operation::{deadline, Cancel};
use super::start::StartFrom;
use super::{Core, Machine};
use crate::model::{Exit, Status};
use crate::runtime::{Observed, Runtime};

/// A run that lasted this long resets the restart back-off.
const STABLE_RUN: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a run's output joins the machine's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunLog {
    /// A new run by request: `logs` starts afresh.
    Fresh,
    /// A restart by the restart policy: appended, as Docker does for its own.
    Append,
    /// A run that began under an earlier daemon, re-adopted: caught up.
    Resume,
}

impl Core {
    /// Starts the background tasks of a run.
    pub(super) fn follow_run(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        runtime: Arc<dyn Runtime>,
        generation: u64,
        log: RunLog,
    ) {
        // The old run's output stops first, so none of it lands in the new log.
        let run = match log {
            RunLog::Resume => m.log_run.load(Ordering::SeqCst),
            RunLog::Fresh | RunLog::Append => m.log_run.fetch_add(1, Ordering::SeqCst) + 1,
        };
        if let Some(old) = lock(&m.follower).take() {
            old.abort();
        }
        if log == RunLog::Fresh {
            if let Err(e) = m.log.reset() {
                tracing::warn!(machine = %m.name(), "cannot reset log: {e}");
            }
        }
        let resume = log == RunLog::Resume;
        let sink = RunSink::new(m, run);
        let rt = runtime.clone();
        let name = m.name();
        let follower = tokio::spawn(async move {
            if let Err(e) = rt.follow_output(sink, resume).await {
                tracing::debug!(machine = %name, "output follower ended: {}", e.report());
            }
        });
        lock(&m.follower).replace(follower.abort_handle());
        let core = self.clone();
        let machine = m.clone();
        tokio::spawn(async move { core.watch_exit(machine, runtime, generation).await });
    }

    async fn watch_exit(
        self: Arc<Self>,
        m: Arc<Machine>,
        runtime: Arc<dyn Runtime>,
        generation: u64,
    ) {
        let started = Instant::now();
        let stale = |m: &Machine| m.generation() != generation || m.is_deleted();
        loop {
            let waited = runtime.wait().await;
            if stale(&m) {
                return;
            }
            let op = m.op.acquire_internal("record exit").await;
            if stale(&m) || !matches!(m.status(), Status::Running | Status::Paused) {
                return;
            }
            // A restart policy may already have brought the workload back,
            // and a lost connection to the runtime says nothing about it.
            let observed =
                deadline(self.settings.call_deadline, "observe", runtime.observe()).await;
            let (exit, reason) = match observed {
                Ok(
                    Observed::Running
                    | Observed::Paused
                    | Observed::Restarting
                    | Observed::Transitional(_),
                ) => {
                    drop(op);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(machine = %m.name(), "observe after wait: {}", e.report());
                    drop(op);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Ok(Observed::Exited { exit, reason }) => (waited.unwrap_or(exit), reason),
                Ok(Observed::Missing) => {
                    m.next_generation();
                    self.force(&m, |r| {
                        r.status = Status::Failed;
                        r.set_error("the workload disappeared from its runtime".into());
                    })
                    .await;
                    return;
                }
            };
            m.next_generation();
            let status = exit.status();
            let mut error = match status {
                Status::Stopped => String::new(),
                _ => exit_line(exit, reason.as_deref(), ""),
            };
            let restart = self.restart_due(&m, exit, started.elapsed());
            if let Some(delay) = restart {
                let note = format!(
                    "{}; restarting in {:.1}s (restart policy {})",
                    exit_line(exit, reason.as_deref(), ""),
                    delay.as_secs_f64(),
                    m.with_record(|r| r.spec.restart.as_str())
                );
                m.log.note(&note);
                error = note;
            }
            tracing::info!(machine = %m.name(), id = %m.id(), %exit, "workload ended");
            self.force(&m, |r| {
                r.status = status;
                r.exit = Some(exit);
                r.set_error(error);
            })
            .await;
            drop(op);
            if let Some(delay) = restart {
                self.schedule_restart(&m, delay);
            }
            return;
        }
    }

    /// When the core (not the runtime) applies the restart policy, and it
    /// says to restart: after how long.
    fn restart_due(&self, m: &Machine, exit: Exit, ran: Duration) -> Option<Duration> {
        let (kind, policy) = m.with_record(|r| (r.spec.runtime_type(), r.spec.restart));
        let native = self
            .drivers
            .get(&kind)
            .is_some_and(|d| d.restarts_natively());
        if native || !policy.restarts(exit == Exit::Code(0)) {
            return None;
        }
        let n = if ran >= STABLE_RUN {
            m.restarts.store(0, Ordering::SeqCst);
            0
        } else {
            m.restarts.fetch_add(1, Ordering::SeqCst)
        };
        Some(
            FIRST_BACKOFF
                .saturating_mul(1u32 << n.min(16))
                .min(MAX_BACKOFF),
        )
    }

    fn schedule_restart(self: &Arc<Self>, m: &Arc<Machine>, delay: Duration) {
        let cancel = Cancel::default();
        if let Some(old) = lock(&m.restart_pending).replace(cancel.clone()) {
            old.cancel("a newer restart");
        }
        let core = self.clone();
        let m = m.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return,
            }
            let op = m.op.acquire_internal("start").await;
            // A stop, a start or a delete in the meantime decided otherwise.
            {
                let mut pending = lock(&m.restart_pending);
                if !pending.as_ref().is_some_and(|c| c.same(&cancel)) {
                    return;
                }
                pending.take();
            }
            if m.is_deleted() || !m.status().can_start() {
                return;
            }
            let res = core.start_locked(&m, &op, StartFrom::Policy).await;
            drop(op);
            if let Err(e) = core.outcome(&m, res).await {
                tracing::warn!(machine = %m.name(), "restart by policy failed: {}", e.report());
                // The policy still holds: try again, backing off further.
                let n = m.restarts.fetch_add(1, Ordering::SeqCst);
                let delay = FIRST_BACKOFF
                    .saturating_mul(1u32 << n.min(16))
                    .min(MAX_BACKOFF);
                core.schedule_restart(&m, delay);
            }
        });
    }
}

/// The `error` line for a workload that ended by itself.
pub(super) fn exit_line(exit: Exit, reason: Option<&str>, when: &str) -> String {
    let reason = reason
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!("{exit}{reason}{when}")
}
