//! One lifecycle operation at a time per machine, and nothing that can wedge
//! it: a second operation waits a bounded time and then fails with EBUSY,
//! naming the one in progress; a start can be cancelled by a stop, kill or
//! delete; and every runtime call runs under a deadline.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedMutexGuard};

use crate::error::{Error, Result};

/// The operation holding a machine, as others see it.
#[derive(Clone)]
struct Current {
    name: &'static str,
    since: Instant,
    cancel: Cancel,
}

#[derive(Default)]
pub struct OpSlot {
    lock: Arc<tokio::sync::Mutex<()>>,
    current: Mutex<Option<Current>>,
}

/// Held for the duration of an operation; frees the slot when dropped.
pub struct OpGuard<'a> {
    slot: &'a OpSlot,
    cancel: Cancel,
    _lock: OwnedMutexGuard<()>,
}

impl OpGuard<'_> {
    /// Resolves with who cancelled this operation, if anyone does.
    pub fn cancelled(&self) -> impl Future<Output = String> + Send + 'static {
        let cancel = self.cancel.clone();
        async move { cancel.cancelled().await }
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        *self.slot.current_lock() = None;
    }
}

impl OpSlot {
    fn current_lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The operation in progress and how long it has run.
    pub fn current(&self) -> Option<(&'static str, Duration)> {
        self.current_lock()
            .as_ref()
            .map(|c| (c.name, c.since.elapsed()))
    }

    /// Takes the slot for `name`, waiting at most `wait`.
    pub async fn acquire(&self, name: &'static str, wait: Duration) -> Result<OpGuard<'_>> {
        match tokio::time::timeout(wait, self.lock.clone().lock_owned()).await {
            Ok(lock) => Ok(self.occupy(name, lock)),
            Err(_) => Err(self.busy(name, wait)),
        }
    }

    /// Takes the slot for the daemon's own work (an exit being recorded, a
    /// restart policy), waiting as long as it takes.
    pub async fn acquire_internal(&self, name: &'static str) -> OpGuard<'_> {
        let lock = self.lock.clone().lock_owned().await;
        self.occupy(name, lock)
    }

    /// Takes the slot only if it is free.
    pub fn try_acquire(&self, name: &'static str) -> Option<OpGuard<'_>> {
        let lock = self.lock.clone().try_lock_owned().ok()?;
        Some(self.occupy(name, lock))
    }

    fn occupy(&self, name: &'static str, lock: OwnedMutexGuard<()>) -> OpGuard<'_> {
        let cancel = Cancel::default();
        *self.current_lock() = Some(Current {
            name,
            since: Instant::now(),
            cancel: cancel.clone(),
        });
        OpGuard {
            slot: self,
            cancel,
            _lock: lock,
        }
    }

    /// Cancels the operation in progress if it is one of `names`; says
    /// whether it did.
    pub fn cancel_if(&self, names: &[&str], by: &str) -> bool {
        match self.current_lock().as_ref() {
            Some(c) if names.contains(&c.name) => {
                c.cancel.cancel(by);
                true
            }
            _ => false,
        }
    }

    fn busy(&self, wanted: &str, waited: Duration) -> Error {
        match self.current() {
            Some((name, running)) => Error::Busy(format!(
                "cannot {wanted}: {name} has been in progress for {:.1}s (waited {:.1}s for it)",
                running.as_secs_f64(),
                waited.as_secs_f64()
            )),
            None => Error::Busy(format!(
                "cannot {wanted}: another operation was in progress for {:.1}s",
                waited.as_secs_f64()
            )),
        }
    }
}

/// A one-shot cancellation signal carrying who cancelled.
#[derive(Clone)]
pub struct Cancel(Arc<watch::Sender<Option<String>>>);

impl Default for Cancel {
    fn default() -> Self {
        Cancel(Arc::new(watch::channel(None).0))
    }
}

impl Cancel {
    pub fn cancel(&self, by: &str) {
        self.0.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(by.to_owned());
                true
            } else {
                false
            }
        });
    }

    /// Whether two handles are the same signal.
    pub fn same(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub async fn cancelled(&self) -> String {
        let mut rx = self.0.subscribe();
        loop {
            if let Some(by) = rx.borrow_and_update().clone() {
                return by;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen; never resolve.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Runs a runtime call under a deadline, so a hung engine or VMM fails the
/// call with ETIMEDOUT instead of holding the machine forever.
pub async fn deadline<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(res) => res,
        Err(_) => Err(Error::Timeout(format!(
            "{what} did not finish within {:.0}s",
            limit.as_secs_f64()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_operation_waits_a_bounded_time_and_names_the_first() {
        let slot = OpSlot::default();
        let held = slot.acquire("start", Duration::from_secs(1)).await.unwrap();
        let err = match slot.acquire("stop", Duration::from_millis(50)).await {
            Err(e) => e,
            Ok(_) => panic!("acquired a held slot"),
        };
        assert_eq!(err.errno(), libc::EBUSY);
        let text = err.to_string();
        assert!(text.contains("start has been in progress"), "{text}");
        assert_eq!(slot.current().map(|c| c.0), Some("start"));
        drop(held);
        assert!(slot.current().is_none());
        assert!(slot.try_acquire("stop").is_some());
    }

    #[tokio::test]
    async fn cancelling_reaches_the_operation_with_its_cause() {
        let slot = OpSlot::default();
        let held = slot.acquire("start", Duration::from_secs(1)).await.unwrap();
        let cancelled = held.cancelled();
        assert!(!slot.cancel_if(&["stop"], "kill"));
        assert!(slot.cancel_if(&["start"], "kill"));
        assert_eq!(cancelled.await, "kill");
    }

    #[tokio::test]
    async fn deadlines_turn_hangs_into_timeouts() {
        let err = deadline(Duration::from_millis(10), "docker start", async {
            std::future::pending::<Result<()>>().await
        })
        .await
        .unwrap_err();
        assert_eq!(err.errno(), libc::ETIMEDOUT);
        assert!(err.to_string().contains("docker start"), "{err}");
    }
}
