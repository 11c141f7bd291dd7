//! A machine's `logs` file on disk, and the sinks through which runtimes
//! write to it. Runtime output and hyperfleet's own progress lines (image
//! pulls) are appended as they happen, so reading or `tail -f`-ing `logs`
//! never waits on a runtime and its size is always real.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use super::Machine;
use crate::runtime::LogSink;

/// Past this size the file is started afresh, so a chatty workload cannot fill the disk.
pub const LOG_CAP: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct LogFile {
    path: PathBuf,
    /// The open file and its length, kept between appends: a workload that
    /// prints a line at a time costs one write(2) per line, not an open, a
    /// stat and a write.
    writer: Arc<Mutex<Option<(File, u64)>>>,
}

const CAP_MARKER: &[u8] = b"[hyperfleet: earlier output dropped, log exceeded its size cap]\n";

impl LogFile {
    pub fn new(dir: &Path, machine_id: &str) -> LogFile {
        LogFile {
            path: dir.join(format!("{machine_id}.log")),
            writer: Arc::default(),
        }
    }

    pub fn len(&self) -> u64 {
        fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Option<(File, u64)>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Empties the file for a new run.
    pub fn reset(&self) -> std::io::Result<()> {
        let mut w = self.writer();
        *w = None;
        File::create(&self.path).map(|_| ())
    }

    pub fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer();
        if w.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let len = f.metadata()?.len();
            *w = Some((f, len));
        }
        let Some((f, len)) = w.as_mut() else {
            return Ok(());
        };
        if *len + bytes.len() as u64 > LOG_CAP {
            f.set_len(0)?;
            f.write_all(CAP_MARKER)?;
            *len = CAP_MARKER.len() as u64;
        }
        if let Err(e) = f.write_all(bytes) {
            // Reopen next time: the file may have been removed or replaced.
            *w = None;
            return Err(e);
        }
        *len += bytes.len() as u64;
        Ok(())
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
        *self.writer() = None;
        let _ = fs::remove_file(&self.path);
    }

    /// The whole log, or only its last `lines` lines.
    pub fn tail(&self, lines: Option<usize>) -> std::io::Result<Vec<u8>> {
        let all = self.read_at(0, self.len().min(2 * LOG_CAP) as usize)?;
        let Some(n) = lines else { return Ok(all) };
        let body = all.strip_suffix(b"\n").unwrap_or(&all);
        let start = body
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'\n')
            .nth(n.saturating_sub(1))
            .map(|(i, _)| i + 1)
            .unwrap_or(0);
        Ok(if n == 0 {
            Vec::new()
        } else {
            all[start..].to_vec()
        })
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

/// Where a run's output goes: the machine's log while that run is current.
/// Output of a run a newer one has replaced is dropped, so two runs never
/// interleave in one log.
pub(super) struct RunSink {
    machine: Weak<Machine>,
    run: u64,
}

impl RunSink {
    pub(super) fn new(m: &Arc<Machine>, run: u64) -> Arc<RunSink> {
        Arc::new(RunSink {
            machine: Arc::downgrade(m),
            run,
        })
    }

    fn current(&self) -> Option<Arc<Machine>> {
        self.machine
            .upgrade()
            .filter(|m| !m.is_deleted() && m.log_run.load(Ordering::SeqCst) == self.run)
    }
}

impl LogSink for RunSink {
    fn output(&self, bytes: &[u8]) {
        if let Some(m) = self.current() {
            if let Err(e) = m.log.append(bytes) {
                tracing::warn!(machine = %m.name(), "cannot append log: {e}");
            }
        }
    }

    fn note(&self, line: &str) {
        if let Some(m) = self.current() {
            m.log.note(line);
        }
    }

    fn restart(&self) {
        if let Some(m) = self.current() {
            if let Err(e) = m.log.reset() {
                tracing::warn!(machine = %m.name(), "cannot reset log: {e}");
            }
        }
    }
}

/// Where a runtime's progress lines go while it starts: appended to
/// whatever the log holds (the last run's output), so `tail -f logs`
/// shows a pull as it happens and a failed start loses nothing.
pub(super) struct NotesSink(pub Weak<Machine>);

impl LogSink for NotesSink {
    fn output(&self, bytes: &[u8]) {
        if let Some(m) = self.0.upgrade().filter(|m| !m.is_deleted()) {
            let _ = m.log.append(bytes);
        }
    }

    fn note(&self, line: &str) {
        if let Some(m) = self.0.upgrade().filter(|m| !m.is_deleted()) {
            m.log.note(line);
        }
    }

    fn restart(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::new(dir.path(), "m");
        assert_eq!(log.tail(Some(3)).unwrap(), b"");
        log.append(b"a\nb\nc\nd\n").unwrap();
        assert_eq!(log.tail(Some(2)).unwrap(), b"c\nd\n");
        assert_eq!(log.tail(Some(10)).unwrap(), b"a\nb\nc\nd\n");
        assert_eq!(log.tail(Some(0)).unwrap(), b"");
        assert_eq!(log.tail(None).unwrap(), b"a\nb\nc\nd\n");
        log.append(b"partial").unwrap();
        assert_eq!(log.tail(Some(1)).unwrap(), b"partial");
    }
}
