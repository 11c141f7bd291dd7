//! Group commit: writes that arrive while a commit is in progress share the
//! next one, so concurrent changes pay one WAL fsync between them instead
//! of one each, and still none is acknowledged before it is durable.
//!
//! One writer at a time leads: it takes every write queued so far, runs
//! them in one transaction, each in its own savepoint so that a failing
//! write is undone alone, commits, answers every writer of the batch and
//! steps down. Writers that queued meanwhile wait; one of them leads the
//! next batch. Nobody waits for company: a writer that finds no leader
//! leads at once, if need be a batch of one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TryRecvError};
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

#[derive(Default)]
pub(super) struct Group {
    state: Mutex<State>,
    /// Signalled when a leader steps down: its writers have their answers,
    /// and the writes queued meanwhile need a leader.
    stepped_down: Condvar,
    /// Transactions committed: fewer than writes when writes shared them.
    commits: AtomicU64,
}

#[derive(Default)]
struct State {
    queue: Vec<Box<dyn Queued>>,
    leading: bool,
}

impl Group {
    /// Runs `write` on `conn` in the next batch and returns its outcome once
    /// that batch's COMMIT has returned: a write that failed alone has its
    /// own error; a batch that failed to commit fails all of its writes.
    pub(super) fn write<T, F>(&self, conn: &Mutex<Connection>, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let mut state = self.lock();
        state.queue.push(Box::new(Write {
            write: Some(write),
            outcome: None,
            reply,
        }));
        loop {
            match answer.try_recv() {
                Ok(outcome) => return outcome,
                Err(TryRecvError::Disconnected) => {
                    return Err(Error::Store(
                        "write lost: its batch's leader panicked".into(),
                    ))
                }
                Err(TryRecvError::Empty) if state.leading => {
                    state = self
                        .stepped_down
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                Err(TryRecvError::Empty) => state = self.lead(state, conn),
            }
        }
    }

    /// Commits everything queued as one batch and answers its writers.
    fn lead<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        conn: &Mutex<Connection>,
    ) -> MutexGuard<'a, State> {
        state.leading = true;
        // Declared before the batch so that it is dropped after it: should
        // a write panic, its writers see their answer gone before anyone
        // is woken to look.
        let leading = StepDown(self);
        let mut batch = std::mem::take(&mut state.queue);
        drop(state);
        let outcome = match conn.lock() {
            Ok(mut conn) => commit(&mut conn, &mut batch),
            Err(_) => Err(Error::Store("store lock poisoned".into())),
        };
        if outcome.is_ok() {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        for write in batch {
            write.answer(&outcome);
        }
        drop(leading);
        self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Whether a leader is committing, and how many writes wait for the next.
    #[cfg(test)]
    pub(super) fn backlog(&self) -> (bool, usize) {
        let state = self.lock();
        (state.leading, state.queue.len())
    }
}

/// Ends a leader's turn, however it ends (a panicking write included), so
/// that no writer waits for a leader that is gone.
struct StepDown<'a>(&'a Group);

impl Drop for StepDown<'_> {
    fn drop(&mut self) {
        self.0.lock().leading = false;
        self.0.stepped_down.notify_all();
    }
}

/// One transaction for the whole batch: BEGIN IMMEDIATE takes the write
/// lock up front, so no write in it meets a busy database half-way.
fn commit(conn: &mut Connection, batch: &mut [Box<dyn Queued>]) -> Result<()> {
    let mut txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for write in batch.iter_mut() {
        write.apply(&mut txn)?;
    }
    // Dropped on failure, the transaction rolls back.
    txn.commit()?;
    Ok(())
}

/// A queued write of any result type.
trait Queued: Send {
    /// Runs the write in its own savepoint of the batch's transaction. An
    /// error here is the batch's: the transaction can no longer commit.
    fn apply(&mut self, txn: &mut Transaction<'_>) -> rusqlite::Result<()>;
    /// Tells the writer its outcome, now that the batch's is known.
    fn answer(self: Box<Self>, batch: &Result<()>);
}

struct Write<T, F> {
    write: Option<F>,
    outcome: Option<Result<T>>,
    reply: SyncSender<Result<T>>,
}

impl<T, F> Queued for Write<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn apply(&mut self, txn: &mut Transaction<'_>) -> rusqlite::Result<()> {
        let Some(write) = self.write.take() else {
            return Ok(());
        };
        let savepoint = txn.savepoint()?;
        let outcome = write(&savepoint);
        self.outcome = Some(match outcome {
            Ok(value) => {
                savepoint.commit()?;
                Ok(value)
            }
            // A full disk or an I/O error makes SQLite roll the whole
            // transaction back: the writes before this one are gone too.
            Err(e) if savepoint.is_autocommit() => return Err(e),
            Err(e) => {
                savepoint.finish()?;
                Err(e.into())
            }
        });
        Ok(())
    }

    fn answer(self: Box<Self>, batch: &Result<()>) {
        let outcome = match (batch, self.outcome) {
            (Err(e), _) => Err(e.clone()),
            (Ok(()), Some(outcome)) => outcome,
            // Cannot happen: a batch commits only once every write applied.
            (Ok(()), None) => Err(Error::Store("write left out of its batch".into())),
        };
        // The writer waits for this; if it is gone, nobody is left to tell.
        let _ = self.reply.send(outcome);
    }
}
