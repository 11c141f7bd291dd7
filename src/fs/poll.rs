//! `poll()` and `select()`, the sysfs way: a cached file (`status`,
//! `error`...) is always readable, and also reports POLLPRI|POLLERR once
//! what it says differs from what this descriptor last saw (at its open,
//! or at the last poll that reported a change). `events` files are
//! readable when a line is waiting. So a program waits for a change
//! without a loop of reads:
//!
//! ```text
//! fd = open("machines/web/status"); read(fd)
//! poll([fd, POLLPRI]); lseek(fd, 0); read(fd)    # the new status
//! ```

use fuser::{PollEvents, PollFlags, PollNotifier, ReplyPoll};

use super::cache::Key;
use super::handles::{lock, Handle};
use super::MachineFs;

/// What every file reports: sysfs's DEFAULT_POLLMASK.
fn always() -> PollEvents {
    PollEvents::POLLIN | PollEvents::POLLRDNORM | PollEvents::POLLOUT | PollEvents::POLLWRNORM
}

fn changed() -> PollEvents {
    PollEvents::POLLPRI | PollEvents::POLLERR
}

impl MachineFs {
    pub(super) fn poll_handle(
        &self,
        h: &Handle,
        ph: PollNotifier,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        // Registered before looking, so a change between the look and the
        // registration still wakes the poller.
        let wants_wakeup = flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY);
        match h {
            Handle::Events(e) => {
                if wants_wakeup {
                    self.cache.watch(Key::Fleet, ph);
                }
                if e.readable() {
                    reply.poll(PollEvents::POLLIN | PollEvents::POLLRDNORM)
                } else {
                    reply.poll(PollEvents::empty())
                }
            }
            Handle::File(f) => {
                let (node, cached) = {
                    let f = lock(f);
                    (f.node, f.cached)
                };
                let key = match Key::of_node(node) {
                    Some(k) if cached => k,
                    _ => return reply.poll(always()),
                };
                if wants_wakeup {
                    self.cache.watch(key, ph);
                }
                let now = match self.open_static(node) {
                    Ok(now) => now,
                    // The machine is gone: that is a change, for good.
                    Err(_) => return reply.poll(always() | changed() | PollEvents::POLLHUP),
                };
                let mut f = lock(f);
                if now == f.content {
                    reply.poll(always())
                } else {
                    f.content = now;
                    reply.poll(always() | changed())
                }
            }
            Handle::Dir(_) => reply.poll(always()),
        }
    }
}
