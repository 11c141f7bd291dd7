//! Persistence of machines and API keys. [`Store`] is the seam for
//! machines: the daemon uses [`SqliteStore`] (the only module that speaks
//! SQL), tests can wrap it in [`Faults`] to make commits slow, failing or
//! hanging. [`KeyStore`] keeps the REST API's keys in the same database, so
//! `hyperfleet apikey` and a running daemon share them (SQLite's WAL lets
//! both use the file at once).
//!
//! Every method blocks on disk; the core calls them off the filesystem's
//! threads and outside its registry lock. Writes of concurrent callers
//! share one commit, and so one fsync (see `group.rs`).

mod faults;
mod group;
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

/// An API key as stored: never the key itself, only its SHA-256 digest and
/// the public prefix that finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// The key's first characters (`hf_` and 8 more), shown by `apikey list`
    /// and used to find the row; not secret.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
    /// Scope names (`machines:read`...), as given when the key was made.
    pub scopes: Vec<String>,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

impl KeyRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_ms.is_some()
    }
}

pub trait KeyStore: Send + Sync {
    /// Adds a key; `None` if an unrevoked key already has this name. Fails
    /// with a store error if the prefix is taken (the caller mints another).
    fn insert_key(&self, key: &KeyRecord) -> Result<Option<KeyRecord>>;
    /// Every key, revoked ones included, oldest first.
    fn keys(&self) -> Result<Vec<KeyRecord>>;
    /// Revokes the unrevoked key named `name`; `None` if there is none.
    fn revoke_key(&self, name: &str, at_ms: i64) -> Result<Option<KeyRecord>>;
    fn touch_key(&self, id: &str, at_ms: i64) -> Result<()>;
    /// A number that changes whenever another connection (another process,
    /// or another store on the same file) has committed a change. Costs no
    /// disk read, so a reader can check it at every request and reload
    /// only when it moves.
    fn change_counter(&self) -> Result<i64>;
}
