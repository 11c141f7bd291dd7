//! Copying files into and out of the guest, a chunk at a time.
//!
//! A put writes a temporary file beside the target and renames it into
//! place once all data has arrived, so the target is never seen half
//! written and a transfer cut short leaves nothing behind.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::conn::{Conn, ConnError, IO_TIMEOUT};
use crate::agent::protocol::{ErrorKind, Frame, RemoteError, Response, DATA_CHUNK};

/// How a transfer ended when it did not complete.
pub enum Failure {
    /// Tell the host why (the connection is still in step).
    Report(RemoteError),
    /// The connection itself failed.
    Conn(ConnError),
}

impl From<ConnError> for Failure {
    fn from(e: ConnError) -> Failure {
        Failure::Conn(e)
    }
}

fn absolute(path: &str) -> Result<&Path, RemoteError> {
    let p = Path::new(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(RemoteError::new(
            ErrorKind::InvalidArgument,
            format!("{path:?} is not an absolute path"),
        ))
    }
}

fn is_a_directory(path: &Path) -> RemoteError {
    RemoteError {
        kind: ErrorKind::IsADirectory,
        message: format!("{} is a directory", path.display()),
        errno: Some(libc::EISDIR),
    }
}

/// The temporary file of a put; removed unless committed.
struct Staged {
    path: PathBuf,
    committed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Receives a file: answers Ready, takes Data frames until End, answers
/// Written.
pub fn put(conn: &mut Conn, path: &str, mode: u32) -> Result<(), Failure> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let target = absolute(path).map_err(Failure::Report)?;
    if target.is_dir() {
        return Err(Failure::Report(is_a_directory(target)));
    }
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(Failure::Report(is_a_directory(target)));
    };
    let staged = Staged {
        path: dir.join(format!(
            ".{}.hf-put-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )),
        committed: false,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged.path)
        .map_err(|e| {
            Failure::Report(RemoteError::from_io(
                format_args!("cannot create {path}"),
                &e,
            ))
        })?;
    conn.send(&Frame::Response(Response::Ready))?;

    let mut written = 0u64;
    loop {
        match conn.recv(IO_TIMEOUT)? {
            Frame::Data(data) => {
                file.write_all(&data).map_err(|e| {
                    Failure::Report(RemoteError::from_io(format_args!("writing {path}"), &e))
                })?;
                written += data.len() as u64;
            }
            Frame::End => break,
            other => {
                return Err(Failure::Report(RemoteError::new(
                    ErrorKind::Protocol,
                    format!("a {:?} frame inside a file's data", other.frame_type()),
                )))
            }
        }
    }
    let finish = |file: &File| -> std::io::Result<()> {
        // Explicitly, since the creation mode went through the umask.
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
        fs::rename(&staged.path, target)
    };
    finish(&file).map_err(|e| {
        Failure::Report(RemoteError::from_io(format_args!("cannot put {path}"), &e))
    })?;
    let mut staged = staged;
    staged.committed = true;
    conn.send(&Frame::Response(Response::Written { bytes: written }))?;
    Ok(())
}

/// Sends a file: answers File, then Data frames and End.
pub fn get(conn: &mut Conn, path: &str) -> Result<(), Failure> {
    let source = absolute(path).map_err(Failure::Report)?;
    let report = |what: &str, e: std::io::Error| {
        Failure::Report(RemoteError::from_io(format_args!("{what} {path}"), &e))
    };
    let mut file = File::open(source).map_err(|e| report("cannot open", e))?;
    let meta = file.metadata().map_err(|e| report("cannot stat", e))?;
    if meta.is_dir() {
        return Err(Failure::Report(is_a_directory(source)));
    }
    conn.send(&Frame::Response(Response::File {
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
    }))?;
    let mut chunk = vec![0u8; DATA_CHUNK];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(report("reading", e)),
        };
        if n == 0 {
            conn.send(&Frame::End)?;
            return Ok(());
        }
        conn.send(&Frame::Data(chunk[..n].to_vec()))?;
    }
}
