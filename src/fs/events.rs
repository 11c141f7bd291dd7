//! `events` files: `cat events` blocks and prints one line per change as it
//! happens (see `model::event` for the line). Each open is a stream of its
//! own, from the moment of the open; a reader that falls behind loses the
//! oldest lines and reads a line saying how many instead. A machine's
//! `events` ends (end of file) after the line saying it was deleted.

use std::sync::Arc;

use fuser::{Errno, FopenFlags, ReplyData, ReplyOpen};
use tokio::sync::watch;

use super::handles::Handle;
use super::requester::Requester;
use super::MachineFs;
use crate::core::{Machine, Subscription};
use crate::model::{Event, Happening};

/// How much `poll()` takes ahead into a file's pending lines.
const READ_AHEAD: usize = 64 * 1024;

pub(super) struct EventsFile {
    /// Only this machine's events (and the marker), or every event.
    only: Option<Arc<Machine>>,
    state: tokio::sync::Mutex<Stream>,
    /// Set when the file is closed, so a read still waiting gives up.
    closed: watch::Sender<bool>,
}

struct Stream {
    sub: Subscription,
    /// Bytes of lines already taken from the subscription, not yet read.
    pending: Vec<u8>,
    ended: bool,
}

impl EventsFile {
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Whether a read would return at once. Events this file does not
    /// want are passed over first, so that it never reports a machine's
    /// stream readable for another machine's change.
    pub fn readable(&self) -> bool {
        match self.state.try_lock() {
            Ok(mut s) => {
                self.drain(&mut s, READ_AHEAD);
                !s.pending.is_empty() || s.ended
            }
            // A read holds it: it will be answered, and a poller told then.
            Err(_) => false,
        }
    }

    fn wants(&self, e: &Event) -> bool {
        match (&self.only, e.machine_seq()) {
            (None, _) => true,
            (Some(m), Some(of)) => m.seq() == of,
            // The marker of lost lines concerns every reader.
            (Some(_), None) => matches!(e.what, Happening::Dropped(_)),
        }
    }

    /// Takes what is waiting into `pending`, up to about `max` bytes.
    fn drain(&self, s: &mut Stream, max: usize) {
        while s.pending.len() < max && !s.ended {
            let Some(e) = s.sub.try_next() else { break };
            self.take(s, &e);
        }
    }

    fn take(&self, s: &mut Stream, e: &Event) {
        if !self.wants(e) {
            return;
        }
        s.pending.extend_from_slice(e.line().as_bytes());
        let Some(m) = &self.only else { return };
        match e.what {
            Happening::Deleted { .. } => s.ended = true,
            // Lost lines may have held the deletion: the stream ends all the
            // same if the machine is gone.
            Happening::Dropped(_) if m.is_deleted() => s.ended = true,
            _ => {}
        }
    }

    /// Up to `max` bytes, waiting for the first event unless `nonblocking`.
    async fn read(&self, max: usize, nonblocking: bool) -> Result<Vec<u8>, Errno> {
        let mut closed = self.closed.subscribe();
        let mut s = self.state.lock().await;
        loop {
            self.drain(&mut s, max);
            if !s.pending.is_empty() {
                let n = max.min(s.pending.len());
                return Ok(s.pending.drain(..n).collect());
            }
            if s.ended {
                return Ok(Vec::new());
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            tokio::select! {
                e = s.sub.next() => match e {
                    Some(e) => self.take(&mut s, &e),
                    // The daemon is going away.
                    None => s.ended = true,
                },
                _ = closed.wait_for(|c| *c) => return Err(Errno::EINTR),
            }
        }
    }
}

impl MachineFs {
    pub(super) fn open_events(&self, only: Option<u64>, fopen: FopenFlags, reply: ReplyOpen) {
        // Subscribed before the machine is looked up: a deletion right
        // after the look is then in the stream, which it ends.
        let sub = self.core.subscribe();
        let only = match only.map(|seq| self.machine(seq)).transpose() {
            Ok(m) => m,
            Err(e) => return reply.error(e),
        };
        let file = EventsFile {
            only,
            state: tokio::sync::Mutex::new(Stream {
                sub,
                pending: Vec::new(),
                ended: false,
            }),
            closed: watch::channel(false).0,
        };
        let fh = self.handles.add(Handle::Events(Arc::new(file)));
        // A stream: no size, no seeking, each read takes what came.
        reply.opened(fh, fopen | FopenFlags::FOPEN_STREAM)
    }

    pub(super) fn read_events(
        &self,
        who: Requester,
        file: Arc<EventsFile>,
        size: u32,
        nonblocking: bool,
        reply: ReplyData,
    ) {
        self.rt.spawn(async move {
            match who
                .unless_killed(file.read(size as usize, nonblocking))
                .await
            {
                Ok(Ok(data)) => reply.data(&data),
                Ok(Err(e)) | Err(e) => reply.error(e),
            }
        });
    }
}
