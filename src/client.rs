//! `hyperfleet exec NAME -- CMD...`: a client of the mounted filesystem,
//! nothing more. It writes one JSON command to the machine's `exec` file and
//! reads the result back from the same open file.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
struct ExecResult {
    exit_code: i64,
    stdout: String,
    stderr: String,
}

/// Exit status when the command could not run at all (as `docker exec` uses).
pub const EXIT_CANNOT_RUN: i32 = 125;
/// Exit status when the command timed out (as `timeout(1)` uses).
pub const EXIT_TIMED_OUT: i32 = 124;

pub fn exec(mount: &Path, name: &str, cmd: &[String], timeout: Option<f64>) -> i32 {
    let dir = mount.join("machines").join(name);
    let fail = |what: &str, e: std::io::Error| -> i32 {
        let detail = std::fs::read_to_string(dir.join("error")).unwrap_or_default();
        let detail = detail.trim();
        eprintln!(
            "hyperfleet exec: {what}: {e}{}{detail}",
            if detail.is_empty() { "" } else { ": " }
        );
        if e.raw_os_error() == Some(libc::ETIMEDOUT) {
            EXIT_TIMED_OUT
        } else {
            EXIT_CANNOT_RUN
        }
    };
    let mut file = match OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("exec"))
    {
        Ok(f) => f,
        Err(e) => return fail(&format!("cannot open {}", dir.join("exec").display()), e),
    };
    let mut req = serde_json::json!({ "cmd": cmd, "result": "json" });
    if let Some(t) = timeout {
        req["timeout"] = t.into();
    }
    if let Err(e) = file.write_all(req.to_string().as_bytes()) {
        return fail(name, e);
    }
    let mut raw = Vec::new();
    if let Err(e) = file.read_to_end(&mut raw) {
        return fail("reading the result", e);
    }
    let res: ExecResult = match serde_json::from_slice(&raw) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hyperfleet exec: malformed result from the filesystem: {e}");
            return EXIT_CANNOT_RUN;
        }
    };
    let _ = std::io::stdout().write_all(res.stdout.as_bytes());
    let _ = std::io::stderr().write_all(res.stderr.as_bytes());
    res.exit_code.clamp(0, 255) as i32
}
