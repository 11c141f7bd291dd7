//! The command-line clients. Each is a small client of the mounted
//! filesystem (opening, reading and writing its files), never a second path
//! into the core: what the CLI does, a shell script can do.

pub mod copy;
pub mod daemon;
pub mod events;
pub mod exec;
pub mod machines;
mod term;

use std::io;
use std::path::{Path, PathBuf};

/// A mounted hyperfleet filesystem.
#[derive(Debug, Clone)]
pub struct Mount(PathBuf);

/// A failure, said the way the CLI prints it.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Mount {
    pub fn new(path: impl Into<PathBuf>) -> Mount {
        Mount(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn machine(&self, name: &str) -> PathBuf {
        self.0.join("machines").join(name)
    }

    pub fn file(&self, name: &str, file: &str) -> PathBuf {
        self.machine(name).join(file)
    }

    /// `what` failed with `e`: the errno's text, and the machine's `error`
    /// line when it has one (which says why in its own words).
    pub fn failure(&self, name: &str, what: &str, e: &io::Error) -> Failure {
        let detail = std::fs::read_to_string(self.file(name, "error")).unwrap_or_default();
        let detail = detail.trim();
        if detail.is_empty() || e.kind() == io::ErrorKind::NotFound && !self.machine(name).exists()
        {
            let e = if e.kind() == io::ErrorKind::NotFound && !self.machine(name).exists() {
                format!("no machine named {name:?}")
            } else {
                e.to_string()
            };
            Failure(format!("{what} {name}: {e}"))
        } else {
            Failure(format!("{what} {name}: {e}: {detail}"))
        }
    }

    /// Writes one command to a machine's `ctl`; returns once it is done.
    pub fn ctl(&self, name: &str, line: &str) -> Result<(), Failure> {
        let verb = line.split_whitespace().next().unwrap_or(line);
        self.check_mounted()?;
        write_whole(&self.file(name, "ctl"), format!("{line}\n").as_bytes())
            .map_err(|e| self.failure(name, verb, &e))
    }

    /// A clear message when nothing is mounted here (the daemon is not running).
    pub fn check_mounted(&self) -> Result<(), Failure> {
        if self.0.join("README").exists() {
            Ok(())
        } else {
            Err(Failure(format!(
                "no hyperfleet filesystem at {} (is `hyperfleet daemon` running? --mount / HYPERFLEET_MOUNT)",
                self.0.display()
            )))
        }
    }
}

/// One write(2) carrying the whole value, as every file of the tree wants.
pub fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    let n = f.write(bytes)?;
    if n != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
    }
    Ok(())
}
