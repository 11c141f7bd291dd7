//! What each file says. Everything here is rendered from the core's in-memory
//! state; nothing in this module may call a runtime.

use crate::core::{Core, Machine};
use crate::fs::inode::FileKind;
use crate::model::{ExecOutput, ResultFormat, Verb};
use crate::runtime::Health;

pub const README: &str = "\
hyperfleet: every machine is a directory.

  mkdir machines/NAME                     create a machine (status: pending)
  echo '{\"image\":\"busybox\"}' > machines/NAME/config
                                          set its spec (JSON; omitted fields take defaults)
  echo start > machines/NAME/ctl          start it; the write returns when it is running
  cat machines/NAME/status                pending starting running paused stopping stopped failed
  echo 'uname -a' > machines/NAME/exec    run a command inside; `cat exec` shows its stdout,
                                          exec.stderr its stderr, exec.exit its exit code
  cat machines/NAME/ctl                   the commands ctl accepts for this machine's runtime
  echo 'wait running 30' > machines/NAME/ctl   block until that status (ETIMEDOUT otherwise)
  echo stop > machines/NAME/ctl; rmdir machines/NAME
  cat events                              every change as it happens, one line each; a
                                          machine's own: machines/NAME/events (not listed)

  exec 3< machines/NAME/exec.new; read n <&3   a streaming exec session in
                                          machines/NAME/sessions/$n: write the command to
                                          ctl, then stdin; read stdout, stderr, exit

Each machine directory:
  id config status ctl exec exec.stderr exec.exit exec.new info logs error errors sessions/
  error holds the last failure of an operation on the machine, empty when none;
  errors the last 20, timestamped.
  poll()/select() on status or error wakes (POLLPRI|POLLERR) when it changes.

Filters:
  ls by-status/running    ls by-runtime/docker    cat runtimes/docker/status

A failed write or mkdir returns an errno (EINVAL bad input, EBUSY running,
EEXIST duplicate, EFBIG over 1 MiB, ETIMEDOUT, EOPNOTSUPP, ECONNREFUSED runtime
down) and leaves one line explaining it in the machine's error file.
";

/// What `cat ctl` says: the commands this machine's runtime supports.
pub fn ctl_help(core: &Core, m: &Machine) -> Vec<u8> {
    let verbs = core.verbs(m.with_record(|r| r.spec.runtime_type()));
    let mut out = String::new();
    for v in Verb::ALL.into_iter().filter(|v| verbs.contains(v)) {
        out.push_str(v.usage());
        out.push('\n');
    }
    out.into_bytes()
}

/// Content of a machine file that is rendered when it is opened.
/// `info` is rendered elsewhere because it needs the runtime.
pub fn machine_file(core: &Core, m: &Machine, kind: FileKind) -> Vec<u8> {
    let rec = m.snapshot();
    match kind {
        FileKind::Id => format!("{}\n", rec.id).into_bytes(),
        FileKind::Config => rec.spec.to_json_pretty().into_bytes(),
        FileKind::Status => format!("{}\n", rec.status).into_bytes(),
        FileKind::Ctl => ctl_help(core, m),
        FileKind::Exec => m.last_exec().map(|e| e.stdout.clone()).unwrap_or_default(),
        FileKind::ExecStderr => m.last_exec().map(|e| e.stderr_file()).unwrap_or_default(),
        FileKind::ExecExit => m
            .last_exec()
            .map(|e| format!("{}\n", e.exit_code).into_bytes())
            .unwrap_or_default(),
        FileKind::Error if rec.error.is_empty() => Vec::new(),
        FileKind::Error => format!("{}\n", rec.error).into_bytes(),
        FileKind::Errors => rec
            .errors
            .iter()
            .map(|(ms, line)| format!("{} {line}\n", crate::model::time::iso8601(*ms)))
            .collect::<String>()
            .into_bytes(),
        // Its content is the session it makes, rendered at open.
        FileKind::ExecNew => Vec::new(),
        FileKind::Info | FileKind::Logs | FileKind::Events => Vec::new(),
    }
}

/// The size `stat` reports, without copying a large exec output to measure it.
pub fn file_len(core: &Core, m: &Machine, kind: FileKind) -> u64 {
    let exec = || m.last_exec();
    match kind {
        FileKind::Exec => exec().map_or(0, |e| e.stdout.len() as u64),
        FileKind::ExecStderr => exec().map_or(0, |e| e.stderr_file_len()),
        other => machine_file(core, m, other).len() as u64,
    }
}

pub fn runtime_status(health: &Health) -> Vec<u8> {
    match health {
        Health::Available { detail } => format!("available: {detail}\n"),
        Health::Unavailable { reason } => format!("unavailable: {reason}\n"),
    }
    .into_bytes()
}

/// What a read of the `exec` handle returns after a command ran through it.
pub fn exec_result(output: &ExecOutput, format: ResultFormat) -> Vec<u8> {
    match format {
        ResultFormat::Stdout => output.stdout.clone(),
        ResultFormat::Json => {
            let mut v = serde_json::to_vec(&serde_json::json!({
                "exit_code": output.exit_code,
                "stdout": String::from_utf8_lossy(&output.stdout),
                "stderr": String::from_utf8_lossy(&output.stderr),
                "stdout_truncated": output.stdout_truncated,
                "stderr_truncated": output.stderr_truncated,
            }))
            .unwrap_or_default();
            v.push(b'\n');
            v
        }
    }
}
