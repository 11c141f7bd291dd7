//! A store wrapper that injects faults: every write can be delayed, made to
//! fail or made to hang until released. The core's failure paths and the
//! "a slow disk never stalls the filesystem" promise are tested through it;
//! the daemon wraps its store in it only when `HYPERFLEET_TEST_STORE_DELAY_MS`
//! is set.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::Store;
use crate::error::{Error, Result};
use crate::model::{MachineName, MachineRecord, MachineSpec};

#[derive(Debug, Default, Clone)]
struct Knobs {
    delay: Duration,
    fail: bool,
    hang: bool,
}

pub struct Faults<S> {
    inner: S,
    knobs: Mutex<Knobs>,
    released: Condvar,
}

impl<S: Store> Faults<S> {
    pub fn new(inner: S) -> Arc<Self> {
        Arc::new(Faults {
            inner,
            knobs: Mutex::new(Knobs::default()),
            released: Condvar::new(),
        })
    }

    /// Every write waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.knobs().delay = delay;
    }

    /// Every write fails (as a full disk would) until set back.
    pub fn set_failing(&self, fail: bool) {
        self.knobs().fail = fail;
    }

    /// Every write blocks until `set_hanging(false)`.
    pub fn set_hanging(&self, hang: bool) {
        self.knobs().hang = hang;
        self.released.notify_all();
    }

    fn knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.knobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn before_write(&self) -> Result<()> {
        let mut k = self.knobs();
        while k.hang {
            k = self.released.wait(k).unwrap_or_else(|p| p.into_inner());
        }
        let Knobs { delay, fail, .. } = k.clone();
        drop(k);
        std::thread::sleep(delay);
        if fail {
            return Err(Error::Store("injected fault: disk full".into()));
        }
        Ok(())
    }
}

impl<S: Store> Store for Arc<Faults<S>> {
    fn instance_id(&self) -> Result<String> {
        self.inner.instance_id()
    }
    fn insert(&self, id: &str, name: &MachineName, spec: &MachineSpec) -> Result<MachineRecord> {
        self.before_write()?;
        self.inner.insert(id, name, spec)
    }
    fn update(&self, rec: &MachineRecord) -> Result<()> {
        self.before_write()?;
        self.inner.update(rec)
    }
    fn delete(&self, seq: u64) -> Result<()> {
        self.before_write()?;
        self.inner.delete(seq)
    }
    fn load_all(&self) -> Result<Vec<MachineRecord>> {
        self.inner.load_all()
    }
}
