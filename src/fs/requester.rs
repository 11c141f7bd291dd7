//! The process behind a FUSE request, and whether it is being killed.
//!
//! Once a request has reached us, the kernel waits for our answer even when
//! the process that made it is killed: fuser answers FUSE_INTERRUPT with
//! ENOSYS, and from then on the kernel waits uninterruptibly. A blocking read
//! of `events`, of a session's `stdout` or of `ctl wait` would leave a killed
//! `cat` in D state for as long as nothing happens. So every request that may
//! wait also watches its requester, and answers EINTR as soon as a fatal
//! signal is pending it. The kernel then lets the process die; what it asked
//! for carries on or is dropped as if the answer had been given (core
//! operations are detached, so a start finishes either way).
//!
//! Only fatal signals count. A caught signal (a shell's SIGCHLD) must not fail
//! an `echo start > ctl` whose start goes on regardless; the kernel turns
//! every signal that will kill a process into a pending SIGKILL on each of its
//! threads, so one bit tells.

use std::future::Future;
use std::time::Duration;

use fuser::{Errno, Request};

/// How often a waiting request looks at its requester. A killed process
/// lingers at most this long; each look is one small procfs read.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// SIGKILL's bit in procfs' pending masks (signal n is bit n-1).
const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);

/// The thread that made a request.
#[derive(Debug, Clone, Copy)]
pub struct Requester(u32);

impl Requester {
    pub fn of(req: &Request) -> Self {
        Requester(req.pid())
    }

    /// `work`'s outcome, or EINTR once the requester is being killed.
    pub async fn unless_killed<T>(self, work: impl Future<Output = T>) -> Result<T, Errno> {
        tokio::select! {
            biased;
            out = work => Ok(out),
            () = self.killed() => Err(Errno::EINTR),
        }
    }

    async fn killed(self) {
        // The kernel's own requests (pid 0) have no process to kill.
        if self.0 == 0 {
            return std::future::pending().await;
        }
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.dying() {
                return;
            }
        }
    }

    fn dying(self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/status", self.0)) {
            Ok(status) => fatal_signal_pending(&status),
            // Gone already: nobody is left to answer.
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

/// Whether a `/proc/<tid>/status` shows SIGKILL pending, for the thread
/// (`SigPnd`) or its whole process (`ShdPnd`).
fn fatal_signal_pending(status: &str) -> bool {
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .any(|mask| mask & SIGKILL_BIT != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: &str = "Name:\tcat\nSigQ:\t0/1\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000000000\n";

    #[test]
    fn sigkill_pending_for_the_thread_or_the_process_is_fatal() {
        assert!(!fatal_signal_pending(QUIET));
        let thread = QUIET.replace("SigPnd:\t0000000000000000", "SigPnd:\t0000000000000100");
        assert!(fatal_signal_pending(&thread));
        let process = QUIET.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000000100");
        assert!(fatal_signal_pending(&process));
        // A caught SIGINT (bit 1) or SIGCHLD (bit 16) is not fatal.
        let caught = QUIET.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000010002");
        assert!(!fatal_signal_pending(&caught));
    }

    #[tokio::test]
    async fn a_killed_process_interrupts_and_a_live_one_does_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let who = Requester(child.id());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = tokio::spawn(who.unless_killed(rx));
        // Alive and quiet: the work decides.
        tx.send(()).expect("send");
        assert!(matches!(waiting.await.expect("join"), Ok(Ok(()))));
        let waiting = tokio::spawn(who.unless_killed(std::future::pending::<()>()));
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert_eq!(waiting.await.expect("join"), Err(Errno::EINTR));
    }
}
