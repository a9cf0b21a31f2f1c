//! The Raft log and vote, durable in a redb database (`<data-dir>/raft.redb`).
//!
//! Writes go through one writer thread that commits everything queued since its last commit in
//! a single redb transaction (one fsync): concurrent appends share fsyncs. `append` returns as
//! soon as the entries are queued and readable (they sit in `unflushed` until committed) and
//! openraft is told through the flush callback once they are on disk, so nothing is acknowledged
//! before it is durable. Vote, committed id, truncate and purge wait for their commit.

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogId, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

/// Log entries by index, bincode-encoded.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Small records: the vote, the committed log id and the last purged log id.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";
/// Most queued operations folded into one transaction.
const MAX_BATCH: usize = 4096;

fn read_err(e: impl ToString) -> StorageError {
    StorageIOError::read_logs(AnyError::error(e.to_string())).into()
}

fn write_err(e: impl ToString) -> StorageError {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

type Done = oneshot::Sender<Result<(), String>>;

/// One queued write; the writer thread applies a batch of them in one transaction.
enum WriteOp {
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    Meta {
        key: &'static str,
        value: Vec<u8>,
        done: Done,
    },
    /// Delete entries with index >= the given one.
    Truncate { from: u64, done: Done },
    /// Delete entries with index <= `upto` and record `record` (the encoded last purged log id).
    Purge {
        upto: u64,
        record: Vec<u8>,
        done: Done,
    },
}

struct Shared {
    db: Database,
    /// Entries queued for the writer but not yet committed, so readers see them at once.
    unflushed: Mutex<BTreeMap<u64, Entry>>,
}

/// openraft's log storage over redb. Cheap to clone; clones share the database and writer.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteOp>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the log database at `path` and starts its writer thread.
    ///
    /// A new database is made under a temporary name and renamed into place once its tables are
    /// committed, so a process killed while creating it leaves no half-written `path` behind
    /// (redb refuses such a file, and the node could never start again).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        if !path.exists() {
            create_atomically(path).map_err(write_err)?;
        }
        let db = Database::create(path).map_err(write_err)?;
        let txn = db.begin_write().map_err(write_err)?;
        txn.open_table(LOGS).map_err(write_err)?;
        txn.open_table(META).map_err(write_err)?;
        txn.commit().map_err(write_err)?;
        let shared = Arc::new(Shared {
            db,
            unflushed: Mutex::new(BTreeMap::new()),
        });
        let (writer, rx) = mpsc::channel();
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(&for_writer, &rx))
            .map_err(write_err)?;
        Ok(LogStore { shared, writer })
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let txn = self.shared.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(bincode::deserialize(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    async fn submit(&self, op: impl FnOnce(Done) -> WriteOp) -> Result<(), StorageError> {
        let (done, rx) = oneshot::channel();
        self.writer
            .send(op(done))
            .map_err(|_| write_err("log writer thread stopped"))?;
        rx.await
            .map_err(|_| write_err("log writer thread stopped"))?
            .map_err(write_err)
    }

    async fn save_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), StorageError> {
        let value = bincode::serialize(value).map_err(write_err)?;
        self.submit(|done| WriteOp::Meta { key, value, done }).await
    }

    fn last_in_db(&self) -> Result<Option<LogId>, StorageError> {
        let txn = self.shared.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOGS).map_err(read_err)?;
        let last = match table.last().map_err(read_err)? {
            Some((_, v)) => {
                let entry: Entry = bincode::deserialize(v.value()).map_err(read_err)?;
                Some(*entry.get_log_id())
            }
            None => None,
        };
        Ok(last)
    }
}

/// Creates an empty log database at `path` via `<path>.tmp` and a rename (see [`LogStore::open`]).
fn create_atomically(path: &Path) -> Result<(), String> {
    let tmp = path.with_extension("redb.tmp");
    // A leftover from a start that was killed midway.
    let _ = std::fs::remove_file(&tmp);
    {
        let db = Database::create(&tmp).map_err(|e| e.to_string())?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(LOGS).map_err(|e| e.to_string())?;
        txn.open_table(META).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("sync {}: {e}", dir.display()))
}

fn writer_loop(shared: &Shared, rx: &mpsc::Receiver<WriteOp>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = commit_batch(shared, &batch).map_err(|e| e.to_string());
        let mut flushed_upto = None;
        for op in batch {
            match op {
                WriteOp::Append { entries, callback } => {
                    if let Some((last, _)) = entries.last() {
                        flushed_upto = Some(*last);
                    }
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                WriteOp::Meta { done, .. }
                | WriteOp::Truncate { done, .. }
                | WriteOp::Purge { done, .. } => {
                    let _ = done.send(result.clone());
                }
            }
        }
        if let (Ok(()), Some(upto)) = (&result, flushed_upto) {
            let mut unflushed = shared.unflushed.lock().unwrap_or_else(|p| p.into_inner());
            // Entries up to `upto` are now readable from the database.
            let rest = unflushed.split_off(&(upto + 1));
            *unflushed = rest;
        }
    }
}

fn commit_batch(shared: &Shared, batch: &[WriteOp]) -> Result<(), redb::Error> {
    let txn = shared.db.begin_write()?;
    {
        let mut logs = txn.open_table(LOGS)?;
        let mut meta = txn.open_table(META)?;
        for op in batch {
            match op {
                WriteOp::Append { entries, .. } => {
                    for (index, bytes) in entries {
                        logs.insert(*index, bytes.as_slice())?;
                    }
                }
                WriteOp::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice())?;
                }
                WriteOp::Truncate { from, .. } => {
                    logs.retain_in(*from.., |_, _| false)?;
                }
                WriteOp::Purge { upto, record, .. } => {
                    logs.retain_in(..=*upto, |_, _| false)?;
                    meta.insert(PURGED_KEY, record.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => Some(e + 1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
        {
            let txn = self.shared.db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOGS).map_err(read_err)?;
            let iter = match end {
                Some(e) => table.range(start..e),
                None => table.range(start..),
            }
            .map_err(read_err)?;
            for item in iter {
                let (k, v) = item.map_err(read_err)?;
                out.insert(
                    k.value(),
                    bincode::deserialize(v.value()).map_err(read_err)?,
                );
            }
        }
        let unflushed = self
            .shared
            .unflushed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (i, e) in unflushed.range((
            Bound::Included(start),
            end.map_or(Bound::Unbounded, Bound::Excluded),
        )) {
            out.insert(*i, e.clone());
        }
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.meta(PURGED_KEY)?;
        let pending_last = {
            let unflushed = self
                .shared
                .unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            unflushed.values().next_back().map(|e| *e.get_log_id())
        };
        let last = pending_last.or(self.last_in_db()?).or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.save_meta(VOTE_KEY, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.meta(VOTE_KEY)
    }

    /// Queued, not awaited: openraft calls this on every commit advance, and the committed id
    /// only saves replay work after a restart (losing the latest one is safe), so it must not
    /// cost the Raft core an fsync each time. It lands with the next batch the writer commits.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let value = bincode::serialize(&committed).map_err(write_err)?;
        let (done, _ignored) = oneshot::channel();
        self.writer
            .send(WriteOp::Meta {
                key: COMMITTED_KEY,
                value,
                done,
            })
            .map_err(|_| write_err("log writer thread stopped"))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        {
            let mut unflushed = self
                .shared
                .unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                let index = entry.get_log_id().index;
                encoded.push((index, bincode::serialize(&entry).map_err(write_err)?));
                unflushed.insert(index, entry);
            }
        }
        self.writer
            .send(WriteOp::Append {
                entries: encoded,
                callback,
            })
            .map_err(|_| write_err("log writer thread stopped"))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut unflushed = self
                .shared
                .unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            unflushed.split_off(&log_id.index);
        }
        self.submit(|done| WriteOp::Truncate {
            from: log_id.index,
            done,
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let record = bincode::serialize(&log_id).map_err(write_err)?;
        self.submit(|done| WriteOp::Purge {
            upto: log_id.index,
            record,
            done,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_left_half_created_by_a_killed_start_does_not_block_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        // What a start killed while creating the database leaves now: a temporary file only.
        std::fs::write(path.with_extension("redb.tmp"), vec![0u8; 4096]).unwrap();
        let store = LogStore::open(&path).unwrap();
        assert!(store.last_in_db().unwrap().is_none());
        assert!(!path.with_extension("redb.tmp").exists());
        assert!(path.exists());
        drop(store);
        // And the complete database opens again, once the old writer thread has let go of it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while let Err(e) = LogStore::open(&path) {
            assert!(std::time::Instant::now() < deadline, "{e}");
            std::thread::yield_now();
        }
    }
}
