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
            WaitTarget::Agent => {
                return Err(Error::Unsupported {
                    runtime: m.with_record(|r| r.spec.runtime_type()).to_string(),
                    operation: "waiting for a guest agent".into(),
                })
            }
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
