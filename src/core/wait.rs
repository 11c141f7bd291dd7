//! `wait <status>`: blocks until the machine has passed through a status,
//! without missing one that came and went between two looks.

use super::{Core, Machine};
use crate::error::{Error, Result};
use crate::model::{Status, WaitTarget};
use std::time::Duration;

impl Core {
    pub(super) async fn wait_for(
        &self,
        m: &Machine,
        target: WaitTarget,
        timeout: Duration,
    ) -> Result<()> {
        let status = match target {
            WaitTarget::Status(s) => s,
            WaitTarget::Agent => return self.wait_agent(m, timeout).await,
        };
        let waited = tokio::time::timeout(timeout, wait_status(m, status)).await;
        match waited {
            Ok(res) => res,
            Err(_) => Err(Error::Timeout(format!(
                "machine did not become {status} within {}s (it is {})",
                timeout.as_secs_f64(),
                m.status()
            ))),
        }
    }
}

impl Core {
    /// `wait agent`: the machine's guest agent answers within `timeout`.
    async fn wait_agent(&self, m: &Machine, timeout: Duration) -> Result<()> {
        let rt = match m.live() {
            Some(rt) if m.status() == Status::Running => rt,
            _ => {
                // A machine that is not running has no agent to wait for;
                // a runtime without agents says so first.
                let rec = m.snapshot();
                let kind = rec.spec.runtime_type();
                if !kind.is_vm() {
                    return Err(Error::Unsupported {
                        runtime: kind.to_string(),
                        operation: "waiting for a guest agent".into(),
                    });
                }
                return Err(Error::InvalidState {
                    action: "wait for the agent of",
                    status: rec.status.as_str(),
                });
            }
        };
        rt.wait_agent(timeout).await
    }
}

/// Resolves once `m` has had status `target` at some moment since the call.
/// Only transitions announced to waiters count (see
/// `Machine::announce_transitions`): by then every reader sees them too.
async fn wait_status(m: &Machine, target: Status) -> Result<()> {
    // Subscribed before the first look, so no change can slip between them.
    let mut rx = m.changed.subscribe();
    let mut seen = {
        let announced = *rx.borrow_and_update();
        let t = super::machine::lock(&m.transitions);
        // The status as announced: the newest transition up to then; the
        // record's if nothing was published since; unknown (so not yet the
        // target: the announcement is imminent) if only newer ones are kept.
        let now = match t.recent.iter().rev().find(|(seq, _)| *seq <= announced) {
            Some((_, s)) => Some(*s),
            None if t.seq == announced => Some(m.status()),
            None => None,
        };
        if now == Some(target) {
            return Ok(());
        }
        announced
    };
    loop {
        if m.is_deleted() {
            return Err(Error::NotFound(m.name().to_string()));
        }
        if rx.changed().await.is_err() {
            return Err(Error::NotFound(m.name().to_string()));
        }
        let announced = *rx.borrow_and_update();
        let t = super::machine::lock(&m.transitions);
        if t.recent
            .iter()
            .any(|(seq, s)| *seq > seen && *seq <= announced && *s == target)
        {
            return Ok(());
        }
        seen = seen.max(announced);
    }
}
