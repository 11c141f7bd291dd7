//! Running a command inside a VM. That needs a guest agent (reached over the
//! VM's vsock socket), which is a separate piece of work; until it is wired
//! in here, `exec` on a VM fails with EOPNOTSUPP and says so. This is the one
//! place both VM runtimes call, so the agent lands in one spot.

use super::files::VmFiles;
use crate::error::{Error, Result};
use crate::model::{ExecOutput, ExecRequest};

/// Runs `req` in the VM whose files are `files`.
pub async fn exec(files: &VmFiles, req: &ExecRequest) -> Result<ExecOutput> {
    req.validate()?;
    Err(Error::Unsupported {
        runtime: files.kind().to_string(),
        operation: "exec (it needs the guest agent, which is not wired in yet)".into(),
    })
}
