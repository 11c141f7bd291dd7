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
async fn wait_status(m: &Machine, target: Status) -> Result<()> {
    // Subscribed before the first look, so no change can slip between them.
    let mut rx = m.changed.subscribe();
    let mut seen = {
        let t = super::machine::lock(&m.transitions);
        if m.status() == target {
            return Ok(());
        }
        t.seq
    };
    loop {
        if m.is_deleted() {
            return Err(Error::NotFound(m.name().to_string()));
        }
        if rx.changed().await.is_err() {
            return Err(Error::NotFound(m.name().to_string()));
        }
        let t = super::machine::lock(&m.transitions);
        if t.recent.iter().any(|(seq, s)| *seq > seen && *s == target) {
            return Ok(());
        }
        seen = t.seq;
    }
}
