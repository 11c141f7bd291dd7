//! The only module that speaks SQL (with its group commit, `group.rs`). It
//! owns the schema, migrates it forward with `PRAGMA user_version`, and
//! persists every machine change before the core reports the change as
//! done. Concurrent changes share a commit, so they share its fsync.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::group::Group;
use super::{KeyRecord, KeyStore, Store};
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
    // 4: API keys of the REST front end: only digests, never keys.
    "CREATE TABLE api_keys (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        prefix       TEXT NOT NULL UNIQUE,
        sha256       BLOB NOT NULL,
        scopes       TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        last_used_ms INTEGER,
        revoked_ms   INTEGER
    );
    CREATE UNIQUE INDEX api_keys_live_name ON api_keys(name) WHERE revoked_ms IS NULL;",
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Batches the writes of concurrent callers into shared transactions.
    group: Group,
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
            group: Group::default(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::Store("store lock poisoned".into()))?;
        Ok(f(&conn)?)
    }

    /// A change, committed with whatever other changes are waiting; returns
    /// once it is durable. `f` owns what it writes: another thread may run it.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.group.write(&self.conn, f)
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
        let (row_id, row_name) = (id.to_owned(), name.to_string());
        let runtime_type = spec.runtime_type().as_str();
        let res = self.write(move |c| {
            c.execute(
                "INSERT INTO machines (id, name, runtime_type, status, spec_json, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![row_id, row_name, runtime_type, Status::Pending.as_str(), spec_json, now],
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
        let row = rec.clone();
        let n = self.write(move |c| {
            c.execute(
                "UPDATE machines SET runtime_type = ?2, status = ?3, spec_json = ?4, error = ?5,
                        exit_code = ?6, exit_kind = ?7, updated_ms = ?8, started_ms = ?9,
                        errors_json = ?10
                 WHERE seq = ?1",
                params![
                    row.seq as i64,
                    row.spec.runtime_type().as_str(),
                    row.status.as_str(),
                    spec_json,
                    row.error,
                    exit_code,
                    exit_kind,
                    row.updated_ms,
                    row.started_ms,
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
        self.write(move |c| c.execute("DELETE FROM machines WHERE seq = ?1", params![seq as i64]))?;
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

const KEY_COLUMNS: &str = "id, name, prefix, sha256, scopes, created_ms, last_used_ms, revoked_ms";

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let hash: Vec<u8> = r.get(3)?;
    let scopes: String = r.get(4)?;
    Ok(KeyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        prefix: r.get(2)?,
        // A digest of another length matches no key.
        hash: hash.try_into().unwrap_or([0; 32]),
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_ms: r.get(5)?,
        last_used_ms: r.get(6)?,
        revoked_ms: r.get(7)?,
    })
}

impl KeyStore for SqliteStore {
    fn insert_key(&self, key: &KeyRecord) -> Result<Option<KeyRecord>> {
        let row = key.clone();
        let res = self.write(move |c| {
            c.execute(
                "INSERT INTO api_keys (id, name, prefix, sha256, scopes, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    row.id,
                    row.name,
                    row.prefix,
                    &row.hash[..],
                    row.scopes.join(" "),
                    row.created_ms
                ],
            )
        });
        match res {
            Ok(_) => Ok(Some(key.clone())),
            // The partial index allows one unrevoked key per name.
            Err(Error::Store(msg)) if msg.contains("api_keys.name") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn keys(&self) -> Result<Vec<KeyRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ms, rowid"
            ))?;
            let rows = stmt.query_map([], key_row)?;
            rows.collect()
        })
    }

    fn revoke_key(&self, name: &str, at_ms: i64) -> Result<Option<KeyRecord>> {
        let name = name.to_owned();
        self.write(move |c| {
            let found = c
                .query_row(
                    &format!(
                        "UPDATE api_keys SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL
                         RETURNING {KEY_COLUMNS}"
                    ),
                    params![name, at_ms],
                    key_row,
                )
                .optional()?;
            Ok(found)
        })
    }

    fn touch_key(&self, id: &str, at_ms: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE api_keys SET last_used_ms = ?2 WHERE id = ?1",
                params![id, at_ms],
            )
        })?;
        Ok(())
    }

    fn change_counter(&self) -> Result<i64> {
        self.with(|c| {
            c.prepare_cached("PRAGMA data_version")?
                .query_row([], |r| r.get(0))
        })
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

    fn key(name: &str, prefix: &str) -> KeyRecord {
        KeyRecord {
            id: format!("id-{prefix}"),
            name: name.into(),
            prefix: prefix.into(),
            hash: [7; 32],
            scopes: vec!["machines:read".into()],
            created_ms: 1,
            last_used_ms: None,
            revoked_ms: None,
        }
    }

    #[test]
    fn keys_are_shared_by_two_stores_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let daemon = SqliteStore::open(&path).unwrap();
        let cli = SqliteStore::open(&path).unwrap();
        assert_eq!(daemon.keys().unwrap(), vec![]);
        let before = daemon.change_counter().unwrap();

        let ci = cli.insert_key(&key("ci", "hf_aaaaaaaa")).unwrap().unwrap();
        assert_ne!(
            daemon.change_counter().unwrap(),
            before,
            "a commit went unseen"
        );
        assert_eq!(daemon.keys().unwrap(), vec![ci.clone()]);
        // One live key per name; a prefix is never reused.
        assert_eq!(cli.insert_key(&key("ci", "hf_bbbbbbbb")).unwrap(), None);
        assert!(cli.insert_key(&key("other", "hf_aaaaaaaa")).is_err());

        let seen = daemon.change_counter().unwrap();
        let revoked = cli.revoke_key("ci", 5).unwrap().unwrap();
        assert_eq!(revoked.revoked_ms, Some(5));
        assert_ne!(daemon.change_counter().unwrap(), seen);
        assert!(daemon.keys().unwrap()[0].is_revoked());
        assert_eq!(cli.revoke_key("ci", 6).unwrap(), None, "revoked twice");
        // The name is free again once its key is revoked.
        let again = cli.insert_key(&key("ci", "hf_cccccccc")).unwrap().unwrap();
        daemon.touch_key(&again.id, 9).unwrap();
        let all = cli.keys().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].last_used_ms, Some(9));
        assert_eq!(all[1].scopes, vec!["machines:read".to_string()]);
        assert_eq!(all[1].hash, [7; 32]);
    }

    const WRITERS: usize = 8;

    /// Waits for the group to reach `want`: whether a leader is committing,
    /// and how many writes are queued behind it.
    fn wait_for_backlog(store: &SqliteStore, want: (bool, usize)) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while store.group.backlog() != want {
            let now = store.group.backlog();
            assert!(std::time::Instant::now() < deadline, "stuck at {now:?}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn names_on_disk(path: &Path) -> Vec<String> {
        let all = SqliteStore::open(path).unwrap().load_all().unwrap();
        all.iter().map(|r| r.name.to_string()).collect()
    }

    #[test]
    fn concurrent_writers_share_commits_and_all_survive_reopen() {
        const EACH: usize = 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        let start = std::sync::Barrier::new(WRITERS);
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (store, start) = (&store, &start);
                s.spawn(move || {
                    start.wait();
                    for i in 0..EACH {
                        let spec = MachineSpec::default();
                        let mut rec = store
                            .insert(&format!("id-{w}-{i}"), &name(&format!("m{w}-{i}")), &spec)
                            .unwrap();
                        for n in 1..=3 {
                            rec.error = format!("update {n}");
                            store.update(&rec).unwrap();
                        }
                    }
                });
            }
        });
        let writes = (WRITERS * EACH * 4) as u64;
        let commits = store.group.commits();
        assert!(commits < writes, "{commits} commits for {writes} writes");
        drop(store);

        let all = SqliteStore::open(&path).unwrap().load_all().unwrap();
        assert_eq!(all.len(), WRITERS * EACH);
        for w in 0..WRITERS {
            for i in 0..EACH {
                let want = name(&format!("m{w}-{i}"));
                let rec = all.iter().find(|r| r.name == want).unwrap();
                // Each writer's last update of its row is the one kept.
                assert_eq!(rec.error, "update 3", "{want}");
            }
        }
    }

    // The tests below hold the connection: the first writer then leads a
    // batch that cannot commit yet, and the writers after it queue up into
    // the next batch, which they therefore share.

    #[test]
    fn a_failing_write_fails_alone_and_its_batch_mates_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = &SqliteStore::open(&path).unwrap();
        let spec = &MachineSpec::default();
        store.insert("id-taken", &name("taken"), spec).unwrap();
        let before = store.group.commits();
        std::thread::scope(|s| {
            let held = store.conn.lock().unwrap();
            let insert = |id: &'static str, n: &'static str| {
                s.spawn(move || store.insert(id, &name(n), spec))
            };
            let first = insert("id-first", "first");
            wait_for_backlog(store, (true, 0));
            let a = insert("id-a", "a");
            let dup = insert("id-dup", "taken");
            let b = insert("id-b", "b");
            wait_for_backlog(store, (true, 3));
            drop(held);
            first.join().unwrap().unwrap();
            a.join().unwrap().unwrap();
            b.join().unwrap().unwrap();
            let err = dup.join().unwrap().unwrap_err();
            assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
        });
        assert_eq!(store.group.commits() - before, 2, "a, dup and b shared one");
        let mut names = names_on_disk(&path);
        names.sort();
        assert_eq!(names, ["a", "b", "first", "taken"]);
    }

    #[test]
    fn writes_of_one_batch_are_applied_in_the_order_they_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = &SqliteStore::open(&path).unwrap();
        let rec = store
            .insert("id", &name("web"), &MachineSpec::default())
            .unwrap();
        let before = store.group.commits();
        std::thread::scope(|s| {
            let held = store.conn.lock().unwrap();
            let update = |error: &str| {
                let mut rec = rec.clone();
                rec.error = error.into();
                s.spawn(move || store.update(&rec))
            };
            let mut writers = Vec::new();
            for (error, queued) in [("lead", 0), ("first", 1), ("second", 2)] {
                writers.push(update(error));
                wait_for_backlog(store, (true, queued));
            }
            drop(held);
            for w in writers {
                w.join().unwrap().unwrap();
            }
        });
        assert_eq!(store.group.commits() - before, 2);
        let all = SqliteStore::open(&path).unwrap().load_all().unwrap();
        assert_eq!(all[0].error, "second");
    }

    #[test]
    fn a_failed_commit_fails_every_write_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = &SqliteStore::open(&path).unwrap();
        let spec = &MachineSpec::default();
        // A deferred foreign key is checked at COMMIT, which it then fails.
        store
            .with(|c| {
                c.execute_batch(
                    "CREATE TABLE parent (id INTEGER PRIMARY KEY);
                     CREATE TABLE child (parent INTEGER
                         REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
                )
            })
            .unwrap();
        let before = store.group.commits();
        std::thread::scope(|s| {
            let held = store.conn.lock().unwrap();
            let insert = |n: &'static str| s.spawn(move || store.insert(n, &name(n), spec));
            let first = insert("first");
            wait_for_backlog(store, (true, 0));
            let a = insert("a");
            let orphan =
                s.spawn(|| store.write(|c| c.execute("INSERT INTO child VALUES (42)", [])));
            wait_for_backlog(store, (true, 2));
            let b = insert("b");
            wait_for_backlog(store, (true, 3));
            drop(held);
            first.join().unwrap().unwrap();
            let err = orphan.join().unwrap().unwrap_err();
            assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
            for w in [a, b] {
                let mate = w.join().unwrap().unwrap_err();
                assert_eq!(mate.to_string(), err.to_string());
            }
        });
        assert_eq!(store.group.commits() - before, 1);
        assert_eq!(names_on_disk(&path), ["first"]);
    }

    #[test]
    fn a_batch_that_cannot_commit_fails_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = &SqliteStore::open(&path).unwrap();
        let spec = &MachineSpec::default();
        // Another process holds the write lock; ours gives up quickly.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::scope(|s| {
            let held = store.conn.lock().unwrap();
            held.busy_timeout(std::time::Duration::from_millis(20))
                .unwrap();
            let insert = |n: &'static str| s.spawn(move || store.insert(n, &name(n), spec));
            let first = insert("first");
            wait_for_backlog(store, (true, 0));
            let batch = [insert("a"), insert("b"), insert("c")];
            wait_for_backlog(store, (true, 3));
            drop(held);
            for w in std::iter::once(first).chain(batch) {
                let err = w.join().unwrap().unwrap_err();
                assert!(matches!(err, Error::Store(_)), "{err}");
            }
        });
        assert_eq!(store.group.commits(), 0);
        other.execute_batch("ROLLBACK").unwrap();
        store.insert("after", &name("after"), spec).unwrap();
        assert_eq!(names_on_disk(&path), ["after"]);
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
