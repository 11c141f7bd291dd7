//! One-shot exec inside a running machine.

use std::sync::Arc;
use std::time::Duration;

use super::machine::lock;
use super::operation::deadline;
use super::{Core, Machine};
use crate::error::{Error, Result};
use crate::model::{ExecOutput, ExecRequest, Status};

/// Time an exec's runtime call gets beyond the command's own timeout (to
/// kill it and collect what it printed).
const EXEC_SLACK: Duration = Duration::from_secs(30);

impl Core {
    /// Runs a command to completion. A non-zero exit is a result, not an
    /// error; a command past its timeout is killed, what it printed is kept
    /// as the machine's latest exec result, and the call fails with ETIMEDOUT.
    pub async fn exec(
        self: &Arc<Self>,
        m: &Arc<Machine>,
        req: ExecRequest,
    ) -> Result<Arc<ExecOutput>> {
        self.detached(m, |core, m| async move { core.exec_in(&m, req).await })
            .await
    }

    async fn exec_in(&self, m: &Arc<Machine>, req: ExecRequest) -> Result<Arc<ExecOutput>> {
        req.validate()?;
        let rec = m.snapshot();
        if rec.status != Status::Running {
            return Err(Error::InvalidState {
                action: "exec in",
                status: rec.status.as_str(),
            });
        }
        let rt = self.runtime_for(m, &rec)?;
        let output = deadline(req.timeout + EXEC_SLACK, "exec", rt.exec(&req)).await?;
        let output = Arc::new(output);
        let subject = m.with_record(super::events::subject);
        self.changing(&subject);
        *lock(&m.last_exec) = Some(output.clone());
        self.changed(
            subject,
            vec![crate::model::Happening::Exec {
                exit_code: output.exit_code,
                timed_out: output.timed_out,
            }],
        );
        if output.timed_out {
            return Err(Error::Timeout(format!(
                "{:?} did not finish within {}s and was killed; what it printed is in exec and exec.stderr",
                req.cmd.join(" "),
                req.timeout.as_secs_f64()
            )));
        }
        Ok(output)
    }
}
