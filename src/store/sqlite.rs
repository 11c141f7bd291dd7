//! The only module that speaks SQL. It owns the schema, migrates it forward
//! with `PRAGMA user_version`, and persists every machine change before the
//! core reports the change as done.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::Store;
use crate::error::{Error, Result};
use crate::model::{now_ms, Exit, MachineName, MachineRecord, MachineSpec, Status};

/// Each entry upgrades the schema by one version; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: machines and daemon metadata.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE machines (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        name         TEXT NOT NULL UNIQUE,
        runtime_type TEXT NOT NULL,
        status       TEXT NOT NULL,
        spec_json    TEXT NOT NULL,
        error        TEXT NOT NULL DEFAULT '',
        exit_code    INTEGER,
        created_ms   INTEGER NOT NULL,
        updated_ms   INTEGER NOT NULL,
        started_ms   INTEGER
    );
    CREATE INDEX machines_status ON machines(status);",
    // 2: how the last run ended: 'code', 'signal' or 'unknown' (exit_code then NULL).
    "ALTER TABLE machines ADD COLUMN exit_kind TEXT;",
    // 3: the last failures, a JSON array of [unix ms, line].
    "ALTER TABLE machines ADD COLUMN errors_json TEXT NOT NULL DEFAULT '[]';",
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a change reported done survives power loss, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::Store("store lock poisoned".into()))?;
        Ok(f(&conn)?)
    }

    pub fn schema_version(&self) -> Result<u32> {
        self.with(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
    }
}

const COLUMNS: &str = "seq, id, name, status, spec_json, error, exit_code, exit_kind, \
                       created_ms, updated_ms, started_ms, errors_json";

impl Store for SqliteStore {
    fn instance_id(&self) -> Result<String> {
        self.with(|c| {
            let found: Option<String> = c
                .query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(id) = found {
                return Ok(id);
            }
            let id = uuid::Uuid::new_v4().simple().to_string();
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('instance', ?1)",
                params![id],
            )?;
            Ok(id)
        })
    }

    fn insert(&self, id: &str, name: &MachineName, spec: &MachineSpec) -> Result<MachineRecord> {
        let now = now_ms();
        let spec_json = spec_to_json(spec)?;
        let res = self.with(|c| {
            c.execute(
                "INSERT INTO machines (id, name, runtime_type, status, spec_json, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![id, name.as_str(), spec.runtime_type().as_str(), Status::Pending.as_str(), spec_json, now],
            )?;
            Ok(c.last_insert_rowid())
        });
        let seq = match res {
            Ok(seq) => seq,
            Err(Error::Store(msg)) if msg.contains("UNIQUE") => {
                return Err(Error::AlreadyExists(name.to_string()))
            }
            Err(e) => return Err(e),
        };
        Ok(MachineRecord {
            seq: seq as u64,
            id: id.to_owned(),
            name: name.clone(),
            spec: spec.clone(),
            status: Status::Pending,
            error: String::new(),
            errors: Vec::new(),
            exit: None,
            created_ms: now,
            updated_ms: now,
            started_ms: None,
        })
    }

    fn update(&self, rec: &MachineRecord) -> Result<()> {
        let spec_json = spec_to_json(&rec.spec)?;
        let errors_json =
            serde_json::to_string(&rec.errors).map_err(|e| Error::Store(e.to_string()))?;
        let (exit_kind, exit_code) = match rec.exit.map(Exit::to_parts) {
            Some((k, n)) => (Some(k), n),
            None => (None, None),
        };
        let n = self.with(|c| {
            c.execute(
                "UPDATE machines SET runtime_type = ?2, status = ?3, spec_json = ?4, error = ?5,
                        exit_code = ?6, exit_kind = ?7, updated_ms = ?8, started_ms = ?9,
                        errors_json = ?10
                 WHERE seq = ?1",
                params![
                    rec.seq as i64,
                    rec.spec.runtime_type().as_str(),
                    rec.status.as_str(),
                    spec_json,
                    rec.error,
                    exit_code,
                    exit_kind,
                    rec.updated_ms,
                    rec.started_ms,
                    errors_json
                ],
            )
        })?;
        if n == 0 {
            return Err(Error::NotFound(rec.name.to_string()));
        }
        Ok(())
    }

    fn delete(&self, seq: u64) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM machines WHERE seq = ?1", params![seq as i64]))?;
        Ok(())
    }

    fn load_all(&self) -> Result<Vec<MachineRecord>> {
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            String,
            Option<i64>,
            Option<String>,
            i64,
            i64,
            Option<i64>,
            String,
        );
        let rows: Vec<Row> = self.with(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM machines ORDER BY seq"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                        r.get(11)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(
                |(
                    seq,
                    id,
                    name,
                    status,
                    spec_json,
                    error,
                    exit_code,
                    exit_kind,
                    created_ms,
                    updated_ms,
                    started_ms,
                    errors_json,
                )| {
                    let corrupt = |what: String| Error::Store(format!("machine {name:?}: {what}"));
                    Ok(MachineRecord {
                        seq: seq as u64,
                        id,
                        name: name.parse().map_err(|e: Error| corrupt(e.to_string()))?,
                        spec: serde_json::from_str(&spec_json)
                            .map_err(|e| corrupt(e.to_string()))?,
                        status: status.parse().map_err(corrupt)?,
                        error,
                        // A history that cannot be read is not worth refusing the machine.
                        errors: serde_json::from_str(&errors_json).unwrap_or_default(),
                        exit: Exit::from_parts(exit_kind.as_deref(), exit_code),
                        created_ms,
                        updated_ms,
                        started_ms,
                    })
                },
            )
            .collect()
    }
}

fn spec_to_json(spec: &MachineSpec) -> Result<String> {
    serde_json::to_string(spec).map_err(|e| Error::Store(e.to_string()))
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize > MIGRATIONS.len() {
        return Err(Error::Store(format!(
            "state was written by a newer hyperfleet (schema {current}, this build knows {})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> MachineName {
        s.parse().unwrap()
    }

    #[test]
    fn records_survive_reopen_and_seq_is_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (instance, first_seq) = {
            let store = SqliteStore::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
            let mut rec = store
                .insert("id-a", &name("a"), &MachineSpec::default())
                .unwrap();
            rec.status = Status::Running;
            rec.error = "boom".into();
            store.update(&rec).unwrap();
            store
                .insert("id-b", &name("b"), &MachineSpec::default())
                .unwrap();
            store.delete(rec.seq).unwrap();
            (store.instance_id().unwrap(), rec.seq)
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.instance_id().unwrap(), instance);
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, name("b"));
        let c = store
            .insert("id-c", &name("a"), &MachineSpec::default())
            .unwrap();
        assert!(c.seq > first_seq && c.seq > all[0].seq);
    }

    #[test]
    fn duplicate_names_are_refused() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .insert("1", &name("web"), &MachineSpec::default())
            .unwrap();
        let err = store
            .insert("2", &name("web"), &MachineSpec::default())
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(_)));
    }

    #[test]
    fn refuses_state_from_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(SqliteStore::open(&path), Err(Error::Store(_))));
    }
}
