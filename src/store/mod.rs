//! Persistence of machines. [`Store`] is the seam: the daemon uses
//! [`SqliteStore`] (the only module that speaks SQL), tests can wrap it in
//! [`Faults`] to make commits slow, failing or hanging.
//!
//! Every method blocks on disk; the core calls them off the filesystem's
//! threads and outside its registry lock.

mod faults;
mod sqlite;

pub use faults::Faults;
pub use sqlite::SqliteStore;

use crate::error::Result;
use crate::model::{MachineName, MachineRecord, MachineSpec};

pub trait Store: Send + Sync {
    /// The id of this state directory, made on first use. Runtime resources
    /// are labelled with it so a daemon only ever adopts or removes its own.
    fn instance_id(&self) -> Result<String>;
    /// Adds a pending machine; fails with `AlreadyExists` for a taken name.
    fn insert(&self, id: &str, name: &MachineName, spec: &MachineSpec) -> Result<MachineRecord>;
    /// Writes every mutable field of a record.
    fn update(&self, rec: &MachineRecord) -> Result<()>;
    fn delete(&self, seq: u64) -> Result<()>;
    fn load_all(&self) -> Result<Vec<MachineRecord>>;
}
