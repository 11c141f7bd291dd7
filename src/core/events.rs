//! Telling the world about changes. Every change the core makes is emitted
//! twice: first to the observer (the filesystem drops what the kernel
//! cached), synchronously, so that by the time whoever caused the change
//! hears it is done, no reader can see the old value; then to every
//! subscriber (`events` readers, `GET /events`), without ever waiting on
//! one: a reader that falls behind loses its oldest events and is told how
//! many.

use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use super::{Core, Machine};
use crate::model::{Event, Happening, MachineRecord, Subject};

/// How many events a reader may fall behind before it loses the oldest.
pub const BACKLOG: usize = 4096;

/// Hears of every change before it is acknowledged, in two steps:
/// `changing` just before the new value becomes visible, `changed` just
/// after. Between the two, whoever caches what a reader sees must not keep
/// it for long. Both run on the task that makes the change, outside every
/// lock of the core: they must be quick and must not call back into the
/// core for writes.
pub trait Observer: Send + Sync {
    fn changing(&self, subject: &Subject);
    /// What happened, in order; the last call for a subject's change.
    fn changed(&self, subject: &Subject, what: &[Happening]);
}

impl<T: Observer + ?Sized> Observer for Arc<T> {
    fn changing(&self, subject: &Subject) {
        (**self).changing(subject)
    }
    fn changed(&self, subject: &Subject, what: &[Happening]) {
        (**self).changed(subject, what)
    }
}

pub(super) struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    observer: OnceLock<Box<dyn Observer>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BACKLOG).0,
            observer: OnceLock::new(),
        }
    }
}

/// A stream of the events from the moment it was made.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl Subscription {
    /// The next event, waiting for one; a reader that fell behind gets a
    /// [`Happening::Dropped`] marker first. `None` once the core is gone.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Arc::new(Event::dropped(n))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<Arc<Event>> {
        match self.rx.try_recv() {
            Ok(e) => Some(e),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Arc::new(Event::dropped(n))),
            Err(_) => None,
        }
    }

    /// Whether an event (or a marker) is waiting.
    pub fn is_ready(&self) -> bool {
        !self.rx.is_empty()
    }
}

impl Core {
    /// Every event from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.events.tx.subscribe(),
        }
    }

    /// Installs the one observer; false if there already is one.
    pub fn set_observer(&self, observer: Box<dyn Observer>) -> bool {
        self.events.observer.set(observer).is_ok()
    }

    /// Call just before what `subject` shows changes; `changed` must follow.
    pub(super) fn changing(&self, subject: &Subject) {
        if let Some(o) = self.events.observer.get() {
            o.changing(subject);
        }
    }

    /// Call once the change is visible: the observer first, then readers.
    pub(super) fn changed(&self, subject: Subject, what: Vec<Happening>) {
        if let Some(o) = self.events.observer.get() {
            o.changed(&subject, &what);
        }
        for what in what {
            let event = Event::new(subject.clone(), what);
            if event.is_shown() {
                // No subscriber is not an error: nobody is listening.
                let _ = self.events.tx.send(Arc::new(event));
            }
        }
    }

    /// A change that needs no `changing` (nothing showed it before).
    pub(super) fn emit_about(&self, m: &Machine, what: Happening) {
        self.changed(m.with_record(subject), vec![what]);
    }
}

pub(super) fn subject(r: &MachineRecord) -> Subject {
    Subject::Machine {
        seq: r.seq,
        id: r.id.clone(),
        name: r.name.clone(),
    }
}

/// What changed between two versions of a record, in the order readers
/// should hear it; always ends with [`Happening::Updated`].
pub(super) fn diff(old: &MachineRecord, new: &MachineRecord) -> Vec<Happening> {
    let mut out = Vec::new();
    if old.spec != new.spec {
        out.push(Happening::Config {
            from: old.spec.runtime_type(),
            to: new.spec.runtime_type(),
        });
    }
    if old.status != new.status {
        out.push(Happening::Status {
            from: old.status,
            to: new.status,
        });
    }
    // A new entry in the history is a new failure, even one worded as the
    // last (the same start failing twice).
    if new.errors.last() != old.errors.last() && !new.error.is_empty() {
        out.push(Happening::Error(new.error.clone()));
    }
    out.push(Happening::Updated);
    out
}
