//! What `info` and REST say about a machine.

use super::{Core, Machine};
use crate::error::{Error, Result};
use crate::model::{MachineRecord, Status};

/// The stored facts of a machine as JSON: what `info` starts from and what
/// REST returns for a machine.
pub fn describe(rec: &MachineRecord) -> serde_json::Value {
    serde_json::json!({
        "id": rec.id,
        "name": rec.name.as_str(),
        "runtime_type": rec.spec.runtime_type(),
        "status": rec.status.as_str(),
        "error": rec.error,
        "exit_code": rec.exit.and_then(|e| e.code()),
        "exit": rec.exit.map(|e| e.to_string()),
        "config": rec.spec,
        "created_at_ms": rec.created_ms,
        "updated_at_ms": rec.updated_ms,
        "started_at_ms": rec.started_ms,
    })
}

impl Core {
    /// `info` as the file shows it (pretty JSON and a newline), taken afresh
    /// unless one taken within `fresh` is at hand: a `stat` followed by an
    /// `open` (as `tar` and `cp` do) then sees one size and the same bytes.
    pub async fn info_text(
        &self,
        m: &std::sync::Arc<Machine>,
        fresh: std::time::Duration,
    ) -> Result<std::sync::Arc<Vec<u8>>> {
        let epoch = {
            let cache = super::machine::lock(&m.info_cache);
            if let Some((at, text)) = &cache.entry {
                if at.elapsed() < fresh {
                    return Ok(text.clone());
                }
            }
            cache.epoch
        };
        let v = self.info(m).await?;
        let mut text = serde_json::to_vec_pretty(&v).map_err(|e| Error::Runtime(e.to_string()))?;
        text.push(b'\n');
        let text = std::sync::Arc::new(text);
        let mut cache = super::machine::lock(&m.info_cache);
        // A change published while the runtime was asked makes this text
        // stale: it is answered to this reader, but not kept for the next.
        if cache.epoch == epoch {
            cache.entry = Some((std::time::Instant::now(), text.clone()));
        }
        Ok(text)
    }

    /// The stored facts, what is in progress, and live facts from the runtime.
    pub async fn info(&self, m: &std::sync::Arc<Machine>) -> Result<serde_json::Value> {
        let rec = m.snapshot();
        let mut out = describe(&rec);
        if let Some((name, running)) = m.operation() {
            out["operation"] = serde_json::json!({
                "name": name,
                "running_for_secs": (running.as_secs_f64() * 10.0).round() / 10.0,
            });
        }
        if rec.status != Status::Pending || m.live().is_some() {
            let rt = self.runtime_for(m, &rec)?;
            let info =
                super::operation::deadline(self.settings.call_deadline, "info", rt.info()).await?;
            out["runtime_info"] =
                serde_json::to_value(info).map_err(|e| Error::Runtime(e.to_string()))?;
            if let Some(agent) = rt.agent_state() {
                out["agent"] = agent.into();
            }
        }
        Ok(out)
    }
}
