//! `hyperfleet cp SRC DST`, like `docker cp`: one side is `NAME:PATH` in a
//! machine, the other a local path (or `-` for stdin/stdout). A client of
//! the filesystem's exec sessions: the copy is a session made to `get` or
//! `put` a file (through the guest agent in a VM, through `cat` in a
//! container), its bytes on the session's stdout or stdin.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{Failure, Mount};

/// One side of a copy.
enum Side {
    Machine { name: String, path: String },
    Local(String),
}

fn side(s: &str) -> Side {
    // `web:/etc/hosts`; a local path has no colon before its first slash.
    match s.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => Side::Machine {
            name: name.to_owned(),
            path: path.to_owned(),
        },
        _ => Side::Local(s.to_owned()),
    }
}

pub fn cp(mount: &Mount, src: &str, dst: &str) -> Result<(), Failure> {
    mount.check_mounted()?;
    match (side(src), side(dst)) {
        (Side::Machine { name, path }, Side::Local(local)) => copy_out(mount, &name, &path, &local),
        (Side::Local(local), Side::Machine { name, path }) => copy_in(mount, &local, &name, &path),
        _ => Err(Failure(
            "cp: one side must be NAME:PATH in a machine, the other a local path".into(),
        )),
    }
}

/// Opens a session on `name` made to do `request`; (the `exec.new` handle
/// that keeps it alive, its directory).
fn session(
    mount: &Mount,
    name: &str,
    request: &serde_json::Value,
) -> Result<(File, PathBuf), Failure> {
    let mut clone =
        File::open(mount.file(name, "exec.new")).map_err(|e| mount.failure(name, "cp", &e))?;
    let mut id = String::new();
    clone
        .read_to_string(&mut id)
        .map_err(|e| mount.failure(name, "cp", &e))?;
    let dir = mount.machine(name).join("sessions").join(id.trim());
    super::write_whole(&dir.join("ctl"), format!("{request}\n").as_bytes())
        .map_err(|e| mount.failure(name, "cp", &e))?;
    Ok((clone, dir))
}

/// The session's verdict: its exit code, and what it said on stderr.
fn verdict(name: &str, dir: &std::path::Path) -> Result<(), Failure> {
    let mut said = String::new();
    let _ = File::open(dir.join("stderr")).and_then(|mut f| f.read_to_string(&mut said));
    let mut exit = String::new();
    File::open(dir.join("exit"))
        .and_then(|mut f| f.read_to_string(&mut exit))
        .map_err(|e| Failure(format!("cp {name}: {e}")))?;
    match exit.trim() {
        "0" => Ok(()),
        code => Err(Failure(format!("cp {name}: {} (exit {code})", said.trim()))),
    }
}

fn copy_out(mount: &Mount, name: &str, path: &str, local: &str) -> Result<(), Failure> {
    let (_keep, dir) = session(mount, name, &serde_json::json!({ "get": path }))?;
    let mut src = File::open(dir.join("stdout")).map_err(|e| mount.failure(name, "cp", &e))?;
    let mut out: Box<dyn Write> = if local == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(local).map_err(|e| Failure(format!("cp: {local}: {e}")))?)
    };
    std::io::copy(&mut src, &mut out).map_err(|e| Failure(format!("cp {name}:{path}: {e}")))?;
    out.flush()
        .map_err(|e| Failure(format!("cp: {local}: {e}")))?;
    verdict(name, &dir)
}

fn copy_in(mount: &Mount, local: &str, name: &str, path: &str) -> Result<(), Failure> {
    let (mut input, mode): (Box<dyn Read>, u32) = if local == "-" {
        (Box::new(std::io::stdin().lock()), 0o644)
    } else {
        let f = File::open(local).map_err(|e| Failure(format!("cp: {local}: {e}")))?;
        let mode = f
            .metadata()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        (Box::new(f), mode)
    };
    let (_keep, dir) = session(
        mount,
        name,
        &serde_json::json!({ "put": path, "mode": mode }),
    )?;
    let mut sink = OpenOptions::new()
        .write(true)
        .open(dir.join("stdin"))
        .map_err(|e| mount.failure(name, "cp", &e))?;
    let copied = std::io::copy(&mut input, &mut sink);
    drop(sink);
    super::write_whole(&dir.join("ctl"), b"close-stdin\n")
        .map_err(|e| mount.failure(name, "cp", &e))?;
    // The session's own word says why a write stopped, if it did.
    let verdict = verdict(name, &dir);
    copied.map_err(|e| Failure(format!("cp {local}: {e}")))?;
    verdict
}
