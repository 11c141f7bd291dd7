//! A VM's serial console, copied into the machine's `logs`.
//!
//! Both VMMs write the guest's serial port to a file in the runtime
//! directory (Firecracker as its stdout, Cloud Hypervisor as a `File`
//! serial). The file is the source of truth and outlives the daemon; the
//! copy into `logs` goes through the core's sink, which the core may point
//! at a new run at any moment. How far the copy has got is kept in a small
//! file beside the console, so that a daemon restarted after a `kill -9`
//! resumes where its predecessor stopped rather than repeating or losing
//! output.
//!
//! The VMM keeps writing the file for as long as the VM runs, so what has
//! been copied is given back to the filesystem every few MiB by punching a
//! hole over it: the file keeps its length (offsets stay valid, the VMM's
//! own write position included) but no longer its blocks.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::runtime::Sink;

/// How often the console file is looked at for new output.
const POLL: Duration = Duration::from_millis(100);
/// Largest piece handed to the sink at once.
const CHUNK: usize = 64 * 1024;
/// Copied output is released once this much has piled up.
const RELEASE_EVERY: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct Console {
    path: PathBuf,
    offset_path: PathBuf,
}

impl Console {
    pub fn new(path: impl Into<PathBuf>, offset_path: impl Into<PathBuf>) -> Console {
        Console {
            path: path.into(),
            offset_path: offset_path.into(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new run: the console starts empty and nothing of it is copied yet.
    pub fn reset(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| Error::io(format!("create {}", self.path.display()), e))?;
        self.save_offset(0);
        Ok(())
    }

    /// Bytes of the console already copied.
    pub fn offset(&self) -> u64 {
        std::fs::read_to_string(&self.offset_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn save_offset(&self, offset: u64) {
        if let Err(e) = super::files::replace(&self.offset_path, format!("{offset}\n").as_bytes()) {
            tracing::debug!(path = %self.offset_path.display(), "cannot save console offset: {e}");
        }
    }

    /// Copies the console into `sink` as the guest writes it, until `ended`
    /// resolves (the VMM is gone), then what is left. `resume` continues
    /// from the saved offset (a run re-adopted after a daemon restart);
    /// otherwise the copy starts at the beginning of the file.
    pub async fn follow(
        &self,
        sink: &Sink,
        resume: bool,
        ended: impl Future<Output = ()>,
    ) -> Result<()> {
        let mut offset = if resume { self.offset() } else { 0 };
        if !resume {
            self.save_offset(0);
        }
        tokio::pin!(ended);
        let mut over = false;
        let mut released = 0;
        loop {
            match self.copy(sink, offset)? {
                Copied::More(n) => {
                    offset += n;
                    self.save_offset(offset);
                    if offset - released >= RELEASE_EVERY {
                        released = self.release(offset);
                    }
                    continue;
                }
                // A new run truncated the file: this follower is stale.
                Copied::Truncated => return Ok(()),
                Copied::Nothing if over => return Ok(()),
                Copied::Nothing => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = &mut ended, if !over => over = true,
            }
        }
    }

    /// Frees the disk blocks of the console's first `upto` bytes (already
    /// copied), keeping the file's length; returns how far it tried, so a
    /// filesystem that cannot punch holes is not asked again at once.
    fn release(&self, upto: u64) -> u64 {
        use std::os::fd::AsRawFd;
        let upto = upto & !4095;
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&self.path) else {
            return upto;
        };
        // SAFETY: fallocate on an fd we own; punching a hole changes no
        // length and no data beyond the range, which is already copied.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                upto as libc::off_t,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(path = %self.path.display(), "cannot release copied console output: {e}");
        }
        upto
    }

    /// Copies at most one chunk from `offset`.
    fn copy(&self, sink: &Sink, offset: u64) -> Result<Copied> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Copied::Nothing),
            Err(e) => return Err(Error::io(format!("open {}", self.path.display()), e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?
            .len();
        if len < offset {
            return Ok(Copied::Truncated);
        }
        if len == offset {
            return Ok(Copied::Nothing);
        }
        let want = (len - offset).min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| Error::io(format!("read {}", self.path.display()), e))?;
        sink.output(&buf);
        Ok(Copied::More(want as u64))
    }
}

enum Copied {
    More(u64),
    Nothing,
    Truncated,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Collect(Mutex<Vec<u8>>);

    impl crate::runtime::LogSink for Collect {
        fn output(&self, bytes: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(bytes);
        }
        fn note(&self, _: &str) {}
        fn restart(&self) {}
    }

    fn text(c: &Collect) -> String {
        String::from_utf8(c.0.lock().unwrap().clone()).unwrap()
    }

    #[tokio::test]
    async fn copies_until_the_end_and_a_resumed_copy_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let console = Console::new(dir.path().join("console.log"), dir.path().join("offset"));
        console.reset().unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(console.path())
            .unwrap();
        file.write_all(b"booting\n").unwrap();

        let first = Arc::new(Collect::default());
        let sink: Sink = first.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let follower = {
            let console = console.clone();
            tokio::spawn(async move {
                console
                    .follow(&sink, false, async {
                        let _ = rx.await;
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(text(&first), "booting\n");
        // The daemon dies: the follower is aborted; the guest goes on.
        follower.abort();
        drop(tx);
        file.write_all(b"while nobody watched\n").unwrap();

        let second = Arc::new(Collect::default());
        let sink: Sink = second.clone();
        console.follow(&sink, true, async {}).await.unwrap();
        assert_eq!(text(&second), "while nobody watched\n");
        assert_eq!(console.offset(), 29);

        // A fresh copy of the run starts from the top.
        let third = Arc::new(Collect::default());
        let sink: Sink = third.clone();
        console.follow(&sink, false, async {}).await.unwrap();
        assert_eq!(text(&third), "booting\nwhile nobody watched\n");
    }

    #[tokio::test]
    async fn copied_output_gives_its_disk_space_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let console = Console::new(dir.path().join("console.log"), dir.path().join("offset"));
        console.reset().unwrap();
        let chatter: Vec<u8> = b"0123456789abcdef".repeat(RELEASE_EVERY as usize / 16 * 2);
        std::fs::write(console.path(), &chatter).unwrap();
        let seen = Arc::new(Collect::default());
        let sink: Sink = seen.clone();
        console.follow(&sink, false, async {}).await.unwrap();
        assert_eq!(
            seen.0.lock().unwrap().len(),
            chatter.len(),
            "all of it copied"
        );
        let md = std::fs::metadata(console.path()).unwrap();
        assert_eq!(md.len(), chatter.len() as u64, "the length stays");
        assert!(
            md.blocks() * 512 < chatter.len() as u64 / 2,
            "{} bytes still on disk",
            md.blocks() * 512
        );
    }

    #[tokio::test]
    async fn a_truncated_console_ends_a_stale_follower() {
        let dir = tempfile::tempdir().unwrap();
        let console = Console::new(dir.path().join("console.log"), dir.path().join("offset"));
        console.reset().unwrap();
        std::fs::write(console.path(), "old run output\n").unwrap();
        let sink: Sink = Arc::new(Collect::default());
        let follow = console.follow(&sink, false, std::future::pending());
        let truncate = async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            console.reset().unwrap();
        };
        let (done, ()) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(follow, truncate)
        })
        .await
        .expect("the stale follower ended");
        done.unwrap();
    }
}
