//! A machine's `logs` file on disk. Runtime output and hyperfleet's own
//! progress lines (image pulls) are appended here as they happen, so reading
//! or `tail -f`-ing `logs` never waits on a runtime and its size is always real.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Past this size the file is started afresh, so a chatty workload cannot fill the disk.
pub const LOG_CAP: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct LogFile {
    path: PathBuf,
}

impl LogFile {
    pub fn new(dir: &Path, machine_id: &str) -> LogFile {
        LogFile {
            path: dir.join(format!("{machine_id}.log")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the file for a new run.
    pub fn reset(&self) -> std::io::Result<()> {
        File::create(&self.path).map(|_| ())
    }

    pub fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        if self.len() + bytes.len() as u64 > LOG_CAP {
            let mut f = File::create(&self.path)?;
            f.write_all(b"[hyperfleet: earlier output dropped, log exceeded its size cap]\n")?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(bytes)
    }

    /// Appends one line written by hyperfleet itself, marked so it cannot be
    /// mistaken for workload output.
    pub fn note(&self, line: &str) {
        let mut text = format!("[hyperfleet] {}\n", line.trim_end());
        text.retain(|c| c != '\r');
        if let Err(e) = self.append(text.as_bytes()) {
            tracing::warn!(path = %self.path.display(), "cannot write log: {e}");
        }
    }

    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }

    pub fn read_at(&self, offset: u64, size: usize) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; size];
        let mut filled = 0;
        while filled < size {
            let n = f.read_at(&mut buf[filled..], offset + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        Ok(buf)
    }
}
