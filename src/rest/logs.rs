//! `GET /machines/{id}/logs[?tail=N][&follow=true]`: the machine's log file,
//! whole or its last lines; with `follow`, the reply stays open (chunked)
//! and carries new output as it is appended, until the run ends (the
//! machine stops, fails, is deleted or begins another run) or the client
//! goes. The file is what `cat logs` shows; nothing here waits on a runtime.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;

use super::reply::{full, streamed, with_type, Problem, Reply};
use crate::core::{Machine, LOG_CAP};
use crate::error::Error;
use crate::model::Status;

/// How often a follower looks for new output.
const POLL: Duration = Duration::from_millis(100);
/// The most one chunk carries.
const CHUNK: usize = 64 << 10;
const TEXT: &str = "text/plain; charset=utf-8";

pub async fn reply(m: Arc<Machine>, tail: Option<usize>, follow: bool) -> Reply {
    let log = m.log().clone();
    if !follow {
        let text = blocking(move || log.tail(tail)).await?;
        return Ok(with_type(StatusCode::OK, TEXT, full(text)));
    }
    let (first, offset) = blocking(move || {
        let all = log.read_at(0, (2 * LOG_CAP) as usize)?;
        let offset = all.len() as u64;
        Ok((last_lines(&all, tail).to_vec(), offset))
    })
    .await?;
    let follower = Follower {
        run: None,
        offset,
        first: Some(Bytes::from(first)),
        m,
    };
    Ok(streamed(
        TEXT,
        futures_util::stream::unfold(follower, Follower::next),
    ))
}

struct Follower {
    m: Arc<Machine>,
    /// The start time of the run being followed, once it runs.
    run: Option<i64>,
    offset: u64,
    first: Option<Bytes>,
}

impl Follower {
    async fn next(mut self) -> Option<(Bytes, Follower)> {
        if let Some(first) = self.first.take().filter(|b| !b.is_empty()) {
            return Some((first, self));
        }
        loop {
            // Looked at before reading, so output written just before the
            // end is still sent.
            let over = self.run_is_over();
            let log = self.m.log().clone();
            let offset = self.offset;
            let read = blocking(move || {
                // A shorter file was started afresh (a size cap): read it from the top.
                let from = if log.len() < offset { 0 } else { offset };
                Ok((from, log.read_at(from, CHUNK)?))
            })
            .await;
            let (from, chunk) = match read {
                Ok(r) => r,
                Err(p) => {
                    tracing::debug!(machine = %self.m.name(), "rest: log follow: {}", p.message);
                    return None;
                }
            };
            if !chunk.is_empty() {
                self.offset = from + chunk.len() as u64;
                return Some((Bytes::from(chunk), self));
            }
            if over {
                tracing::debug!(machine = %self.m.name(), "rest: log follow ended with the run");
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn run_is_over(&mut self) -> bool {
        if self.m.is_deleted() {
            return true;
        }
        let (status, started) = self.m.with_record(|r| (r.status, r.started_ms));
        if !status.is_active() {
            return true;
        }
        // A run being started is the one to follow; its start time is known
        // once it runs. Another start time is another run.
        if status == Status::Starting {
            return false;
        }
        match self.run {
            None => {
                self.run = started;
                false
            }
            Some(run) => Some(run) != started,
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        tracing::debug!(machine = %self.m.name(), offset = self.offset, "rest: log follower done");
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::io("reading the log", e).into()),
        Err(e) => Err(Error::Runtime(format!("reading the log: {e}")).into()),
    }
}

/// The last `n` lines of `all` (all of it when `n` is None), as
/// `LogFile::tail` cuts them.
fn last_lines(all: &[u8], n: Option<usize>) -> &[u8] {
    let Some(n) = n else { return all };
    if n == 0 {
        return &[];
    }
    let body = all.strip_suffix(b"\n").unwrap_or(all);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    &all[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_cut_as_tail_does() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::core::LogFile::new(dir.path(), "m");
        log.append(b"a\nb\nc\nd\n").unwrap();
        let all = log.tail(None).unwrap();
        for n in [None, Some(0), Some(1), Some(2), Some(4), Some(9)] {
            assert_eq!(last_lines(&all, n), &log.tail(n).unwrap()[..], "{n:?}");
        }
        log.append(b"partial").unwrap();
        let all = log.tail(None).unwrap();
        assert_eq!(last_lines(&all, Some(1)), b"partial");
        assert_eq!(last_lines(&all, Some(2)), &log.tail(Some(2)).unwrap()[..]);
    }
}
