//! The Raft log and vote, durable in the write-ahead log of [`super::wal`]
//! (`<data-dir>/wal/`).
//!
//! Writes go through [`super::log_writer`]: one writer thread that appends everything queued
//! since its last sync as one batch with one `fdatasync`, or a follower's append written inline
//! when the log is idle. `append` returns once the entries are readable (they sit in
//! `unflushed` until written) and openraft is told through the flush callback once they are on
//! disk, so nothing is acknowledged before it is durable. Vote, truncate and purge wait for
//! their sync.
//!
//! A data directory written by an older version keeps its log in `raft.redb`; the first open
//! copies it into a new write-ahead log and renames the database to `raft.redb.imported`.

use super::log_writer::{Done, Unflushed, WriteOp, Writer, COMMITTED_KEY, PURGED_KEY, VOTE_KEY};
use super::wal::{Record, Wal, WalReader, DEFAULT_SEGMENT_BYTES};
use crate::metrics::storage::StorageMetrics;
use crate::types::{Entry, LogId, NodeId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::RaftLogReader;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;

fn read_err(e: impl ToString) -> io::Error {
    io::Error::other(format!("reading the log: {}", e.to_string()))
}

fn write_err(e: impl ToString) -> io::Error {
    io::Error::other(format!("writing the log: {}", e.to_string()))
}

/// An old redb log could not be imported.
#[derive(Debug, thiserror::Error)]
#[error("importing {path}: {source}")]
struct ImportError {
    path: std::path::PathBuf,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

struct Shared {
    wal: WalReader,
    /// Entries appended but not yet written, so readers see them at once.
    unflushed: Arc<Unflushed>,
}

/// openraft's log storage over the write-ahead log. Cheap to clone; clones share the log and
/// its writer.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writer: Writer,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the log in `data_dir/wal`, with segments of `segment_bytes`, and
    /// starts its writer thread, which records its fsyncs, bytes and segments in `metrics`.
    pub fn open(
        data_dir: &Path,
        segment_bytes: u64,
        metrics: Option<StorageMetrics>,
    ) -> Result<Self, io::Error> {
        let dir = data_dir.join("wal");
        let legacy = data_dir.join("raft.redb");
        if !dir.exists() && legacy.exists() {
            import_redb(&legacy, &dir).map_err(write_err)?;
        }
        let mut wal = Wal::open(&dir, segment_bytes)
            .map_err(|e| write_err(format!("{}: {e}", dir.display())))?;
        if let Some(metrics) = &metrics {
            wal.set_metrics(metrics.clone());
        }
        let shared = Arc::new(Shared {
            wal: wal.reader(),
            unflushed: Arc::default(),
        });
        let writer = Writer::start(wal, shared.unflushed.clone(), metrics).map_err(write_err)?;
        Ok(LogStore { shared, writer })
    }

    /// Tells the log which node it belongs to: from then on, appends of entries another node's
    /// leader made (this node following) are written on the receiving thread when the log is
    /// idle (see [`super::log_writer`]).
    pub fn set_node(&self, node: NodeId) {
        self.writer.set_node(node);
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: u8) -> Result<Option<T>, io::Error> {
        match self.shared.wal.meta(key) {
            Some(v) => Ok(Some(bincode::deserialize(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    async fn submit(&self, op: impl FnOnce(Done) -> WriteOp) -> Result<(), io::Error> {
        let (done, rx) = oneshot::channel();
        self.writer.send(op(done))?;
        rx.await
            .map_err(|_| write_err("log writer thread stopped"))?
            .map_err(io::Error::other)
    }

    async fn save_meta<T: serde::Serialize>(&self, key: u8, value: &T) -> Result<(), io::Error> {
        let value = bincode::serialize(value).map_err(write_err)?;
        self.submit(|done| WriteOp::Meta { key, value, done }).await
    }

    fn last_written(&self) -> Result<Option<LogId>, io::Error> {
        let Some(last) = self.shared.wal.last_index() else {
            return Ok(None);
        };
        match self
            .shared
            .wal
            .entries(last..=last)
            .map_err(read_err)?
            .pop()
        {
            Some((_, bytes)) => {
                let entry: Entry = bincode::deserialize(&bytes).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }
}

/// Copies a log kept in redb by an older version into a new write-ahead log at `dir`: built
/// in `<dir>.tmp` and renamed into place, then the database is renamed `raft.redb.imported`.
fn import_redb(path: &Path, dir: &Path) -> Result<(), ImportError> {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let e = |source: Box<dyn std::error::Error + Send + Sync>| ImportError {
        path: path.to_path_buf(),
        source,
    };
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    {
        let db = redb::Database::open(path).map_err(|x| e(x.into()))?;
        let txn = db.begin_read().map_err(|x| e(x.into()))?;
        let mut wal = Wal::open(&tmp, DEFAULT_SEGMENT_BYTES).map_err(|x| e(x.into()))?;
        if let Ok(meta) = txn.open_table(META) {
            for (name, key) in [
                ("vote", VOTE_KEY),
                ("committed", COMMITTED_KEY),
                ("last_purged", PURGED_KEY),
            ] {
                if let Some(v) = meta.get(name).map_err(|x| e(x.into()))? {
                    let value = v.value().to_vec();
                    let mut records = vec![Record::Meta { key, value: &value }];
                    let purged: Option<LogId> = match key {
                        PURGED_KEY => Some(bincode::deserialize(&value).map_err(|x| e(x.into()))?),
                        _ => None,
                    };
                    if let Some(p) = purged {
                        records.push(Record::Purge { upto: p.index });
                    }
                    wal.write(&records).map_err(|x| e(x.into()))?;
                }
            }
        }
        if let Ok(logs) = txn.open_table(LOGS) {
            let mut chunk: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut flush = |chunk: &mut Vec<(u64, Vec<u8>)>| -> Result<(), ImportError> {
                wal.write_entries(chunk).map_err(|x| e(x.into()))?;
                chunk.clear();
                Ok(())
            };
            for item in logs.iter().map_err(|x| e(x.into()))? {
                let (k, v) = item.map_err(|x| e(x.into()))?;
                chunk.push((k.value(), v.value().to_vec()));
                if chunk.len() == 1024 {
                    flush(&mut chunk)?;
                }
            }
            flush(&mut chunk)?;
        }
    }
    std::fs::rename(&tmp, dir).map_err(|x| e(x.into()))?;
    std::fs::rename(path, path.with_extension("redb.imported")).map_err(|x| e(x.into()))?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|x| e(x.into()))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
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
        let bounds = (
            Bound::Included(start),
            end.map_or(Bound::Unbounded, Bound::Excluded),
        );
        // `unflushed` before the files: the writer makes an entry readable in the files before it
        // drops it from `unflushed`, so an entry missing from this copy is already in the files.
        // (In the other order an entry moved in between was in neither, and openraft applied a
        // committed range with a hole in it.)
        let pending: Vec<(u64, Entry)> = {
            let unflushed = self
                .shared
                .unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            unflushed
                .range(bounds)
                .map(|(i, e)| (*i, e.clone()))
                .collect()
        };
        let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
        for (index, bytes) in self.shared.wal.entries(bounds).map_err(read_err)? {
            out.insert(index, bincode::deserialize(&bytes).map_err(read_err)?);
        }
        // An entry in both was written while this read ran; the copies are the same entry.
        out.extend(pending);
        Ok(out.into_values().collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.meta(VOTE_KEY)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.meta(PURGED_KEY)?;
        let pending_last = {
            let unflushed = self
                .shared
                .unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            unflushed.values().next_back().map(|e| e.log_id)
        };
        let last = pending_last.or(self.last_written()?).or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.save_meta(VOTE_KEY, vote).await
    }

    /// Kept, not awaited, and never synced on its own: openraft calls this on every commit
    /// advance, and the committed id only saves replay work after a restart (losing the latest
    /// one is safe). It is written with the next batch of the log, or alone once the log has
    /// been quiet for a moment (see `log_writer`); writing it on every commit woke the writer
    /// thread once per write on every node, and syncing it cost an `fdatasync` per batch.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let value = bincode::serialize(&committed).map_err(write_err)?;
        self.writer.save_committed(value)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(value) = self.writer.waiting_committed() {
            return bincode::deserialize::<Option<LogId>>(&value).map_err(read_err);
        }
        Ok(self.meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        let mut leader = None;
        {
            let mut unflushed = self
                .shared
                .unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                let index = entry.log_id.index;
                leader = Some(entry.log_id.leader_id.node_id);
                encoded.push((index, bincode::serialize(&entry).map_err(write_err)?));
                unflushed.insert(index, entry);
            }
        }
        match leader {
            Some(leader) => self.writer.append(encoded, leader, callback),
            // Nothing to write: said done in order, after what is queued.
            None => self.writer.send(WriteOp::Append {
                entries: encoded,
                callback,
            }),
        }
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map_or(0, |l| l.index + 1);
        {
            let mut unflushed = self
                .shared
                .unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            unflushed.split_off(&from);
        }
        self.submit(|done| WriteOp::Truncate { from, done }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
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
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::EntryPayload;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(
                LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            ),
            payload: EntryPayload::Blank,
        }
    }

    /// A reader racing the writer thread must see every entry appended before it asked: an
    /// entry moves from `unflushed` into the files, and a read that looked in the files before
    /// the move and in `unflushed` after it found neither (openraft then applied a committed
    /// range with a hole in it: acknowledged writes lost).
    fn rt_block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn reads_racing_the_writer_see_every_appended_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES, None).unwrap();
        // A large first entry (a module, as an upgrade logs) makes every read slow to decode
        // what it found in the files, which is when the writer moves the next entry.
        let mut module = entry(1);
        module.payload = EntryPayload::Normal(crate::types::Request::Module {
            bytes: vec![7; 256 << 10],
            seed: false,
        });
        let mut first = store.clone();
        rt_block(first.append([module], IOFlushed::noop())).unwrap();
        let appended = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (mut writer, seen, stop) = (store.clone(), appended.clone(), done.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let writes = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for i in 2..=3_000u64 {
                // Wait for each flush, so the reader meets every move from `unflushed`.
                rt.block_on(writer.append([entry(i)], IOFlushed::noop()))
                    .unwrap();
                seen.store(i, std::sync::atomic::Ordering::SeqCst);
                while writer.shared.unflushed.lock().unwrap().contains_key(&i) {
                    std::thread::yield_now();
                }
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut reader = store.clone();
        let mut reads = 0u64;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let upto = appended.load(std::sync::atomic::Ordering::SeqCst);
            let from = 1;
            let got = rt
                .block_on(reader.try_get_log_entries(from..=upto))
                .unwrap();
            let got: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
            let want: Vec<u64> = (from..=upto).collect();
            assert_eq!(got, want, "read {reads} of {from}..={upto}");
            reads += 1;
        }
        writes.join().unwrap();
    }

    /// A follower's append to an idle log is on disk when `append` returns (written on the
    /// calling thread); the same append on the leader that made the entry is not written there.
    #[test]
    fn a_followers_append_to_an_idle_log_is_written_before_append_returns() {
        let oneshot =
            <openraft::alias::OneshotOf<TypeConfig> as openraft::async_runtime::Oneshot>::channel;
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES, None).unwrap();
        store.set_node(2);
        let (tx, rx) = oneshot();
        rt_block(
            store
                .clone()
                .append([entry(1), entry(2)], IOFlushed::signal(tx)),
        )
        .unwrap();
        // In the log files, not only in `unflushed`, and flushed, before `append` returned.
        assert!(store.shared.unflushed.lock().unwrap().is_empty());
        let written = store.shared.wal.entries(0..10).unwrap();
        assert_eq!(written.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2]);
        rt_block(rx).unwrap().unwrap();
        // Entries made by this node's own leadership go to the writer thread, and are
        // readable (from `unflushed` or the files) either way.
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES, None).unwrap();
        store.set_node(1);
        let (tx, rx) = oneshot();
        rt_block(store.clone().append([entry(1)], IOFlushed::signal(tx))).unwrap();
        let got = rt_block(store.clone().try_get_log_entries(0..10)).unwrap();
        assert_eq!(got.len(), 1);
        rt_block(rx).unwrap().unwrap();
    }

    #[test]
    fn a_log_kept_in_redb_by_an_older_version_is_imported_once() {
        use redb::TableDefinition;
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("raft.redb");
        {
            let db = redb::Database::create(&legacy).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut logs = txn
                    .open_table(TableDefinition::<u64, &[u8]>::new("logs"))
                    .unwrap();
                for i in 4..=9 {
                    logs.insert(i, bincode::serialize(&entry(i)).unwrap().as_slice())
                        .unwrap();
                }
                let mut meta = txn
                    .open_table(TableDefinition::<&str, &[u8]>::new("meta"))
                    .unwrap();
                let vote = Vote::new_committed(1, 1);
                meta.insert("vote", bincode::serialize(&vote).unwrap().as_slice())
                    .unwrap();
                let purged = entry(3).log_id;
                meta.insert(
                    "last_purged",
                    bincode::serialize(&purged).unwrap().as_slice(),
                )
                .unwrap();
            }
            txn.commit().unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..2 {
            let mut store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES, None).unwrap();
            rt.block_on(async {
                let state = store.get_log_state().await.unwrap();
                assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
                assert_eq!(state.last_log_id.map(|l| l.index), Some(9));
                let got = store.try_get_log_entries(0..100).await.unwrap();
                let got: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
                assert_eq!(got, (4..=9).collect::<Vec<_>>());
                assert_eq!(
                    store.read_vote().await.unwrap(),
                    Some(Vote::new_committed(1, 1))
                );
            });
            assert!(!legacy.exists());
            assert!(dir.path().join("raft.redb.imported").exists());
        }
    }
}
