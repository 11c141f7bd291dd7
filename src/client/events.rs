//! `hyperfleet events [NAME]`: the `events` file of the tree, or of one
//! machine, copied to stdout as its lines come, like `docker events`.

use std::io::{self, Read, Write};

use super::{Failure, Mount};

/// Copies until the stream ends (a machine's ends after it is deleted) or
/// stdout is closed (`| head -1`), which is no failure.
pub fn events(mount: &Mount, name: Option<&str>) -> Result<(), Failure> {
    mount.check_mounted()?;
    let path = match name {
        Some(n) => mount.file(n, "events"),
        None => mount.path().join("events"),
    };
    let mut stream = std::fs::File::open(&path).map_err(|e| match name {
        Some(n) => mount.failure(n, "events", &e),
        None => Failure(format!("events: {}: {e}", path.display())),
    })?;
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure(format!("events: {e}"))),
        };
        // Each read is whole lines; flushed at once so a pipe sees each
        // change as it happens, not a buffer later.
        match out.write_all(&buf[..n]).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Failure(format!("events: {e}"))),
        }
    }
}
