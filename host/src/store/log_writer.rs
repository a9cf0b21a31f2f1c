//! The writing half of the Raft log. One writer thread folds everything queued since its last
//! sync into one batch of records with one `fdatasync`, so concurrent appends share syncs. A
//! follower whose log is idle writes and syncs an append on the thread that received it instead.
//!
//! Why a follower writes inline: its append is on every write's critical path (the leader
//! commits when a follower's reply arrives), and handing it to a parked writer thread and the
//! flush back to the runtime costs two thread wake-ups, 35-60 µs each on this kind of machine
//! (BENCHMARKS.md, issue 21). A leader's own appends always go to the thread: openraft sends new
//! entries to the followers only after `append` returns, so a leader syncing inline would make
//! its followers' syncs wait for its own. Inline writes pause while they run slow (see
//! [`super::pace`]), so a slow disk does not keep holding a runtime thread.

use super::pace::{self, Pace};
use super::wal::{Record, Wal};
use crate::metrics::storage::StorageMetrics;
use crate::types::{Entry, NodeId, TypeConfig};
use openraft::storage::IOFlushed;
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Metadata keys in the write-ahead log.
pub(super) const VOTE_KEY: u8 = 1;
pub(super) const COMMITTED_KEY: u8 = 2;
pub(super) const PURGED_KEY: u8 = 3;
/// Most queued operations folded into one sync.
const MAX_BATCH: usize = 4096;
/// How long the log stays quiet before the writer thread writes a waiting committed id alone.
const QUIET: Duration = Duration::from_millis(100);

/// Entries appended but not yet written, so readers see them at once.
pub(super) type Unflushed = Mutex<BTreeMap<u64, Entry>>;

/// A batch's outcome, shared by every operation in it (an `io::Error` is not `Clone`).
pub(super) type Done = oneshot::Sender<Result<(), Arc<io::Error>>>;

/// One write; the writer thread syncs a batch of them at once.
pub(super) enum WriteOp {
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        callback: IOFlushed<TypeConfig>,
    },
    Meta {
        key: u8,
        value: Vec<u8>,
        done: Done,
    },
    /// Wakes a sleeping writer thread to write the committed id waiting in [`Core`].
    Wake,
    /// Delete entries with index >= the given one.
    Truncate {
        from: u64,
        done: Done,
    },
    /// Delete entries with index <= `upto` and record `record` (the encoded last purged log id).
    Purge {
        upto: u64,
        record: Vec<u8>,
        done: Done,
    },
}

/// What the writer thread and inline writes share.
struct Core {
    wal: Mutex<Wal>,
    /// Operations sent to the thread and not yet written, wake-ups aside: an inline write may
    /// go first only when this is zero, so the log keeps the order operations were made in. (A
    /// committed id may land after a later append: it is a value, not part of the order.)
    queued: AtomicUsize,
    unflushed: Arc<Unflushed>,
    metrics: Option<StorageMetrics>,
    /// This node, once known: appends of entries made by another node's leader may be inline.
    node: OnceLock<NodeId>,
    /// How long inline writes took lately, and until when they are paused.
    pace: Pace,
    /// The newest committed id (encoded) not yet written. It is safe to lose (it only saves
    /// replay after a restart), so it rides along with the next batch, synced or not, and the
    /// thread writes it alone only once the log has been quiet for [`QUIET`]: saving it on every
    /// commit never wakes a thread while the log is busy.
    committed: Mutex<Option<Vec<u8>>>,
    /// The thread sleeps until the next operation: a committed id saved now must wake it.
    asleep: AtomicBool,
}

/// The log's writer: cheap to clone, clones share the thread. The thread stops once every clone
/// is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    core: Arc<Core>,
    tx: mpsc::Sender<WriteOp>,
}

impl Writer {
    /// Starts the writer thread over `wal`; written entries leave `unflushed`.
    pub(super) fn start(
        wal: Wal,
        unflushed: Arc<Unflushed>,
        metrics: Option<StorageMetrics>,
    ) -> io::Result<Self> {
        let core = Arc::new(Core {
            wal: Mutex::new(wal),
            queued: AtomicUsize::new(0),
            unflushed,
            metrics,
            node: OnceLock::new(),
            pace: Pace::default(),
            committed: Mutex::new(None),
            asleep: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let for_thread = core.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(&for_thread, &rx))?;
        Ok(Writer { core, tx })
    }

    /// Sets this node's id: from then on a follower's appends may be written inline.
    pub(super) fn set_node(&self, node: NodeId) {
        let _ = self.core.node.set(node);
    }

    /// Queues `op` for the writer thread.
    pub(super) fn send(&self, op: WriteOp) -> io::Result<()> {
        if !matches!(op, WriteOp::Wake) {
            self.core.queued.fetch_add(1, Ordering::AcqRel);
        }
        self.tx.send(op).map_err(|_| stopped())
    }

    /// The committed id (encoded) waiting to be written, if any.
    pub(super) fn waiting_committed(&self) -> Option<Vec<u8>> {
        self.core.lock_committed().clone()
    }

    /// Keeps `value` (the encoded committed id) to be written with the next batch, or by the
    /// thread once the log is quiet (see [`Core::committed`]).
    pub(super) fn save_committed(&self, value: Vec<u8>) -> io::Result<()> {
        *self.core.lock_committed() = Some(value);
        // After the value is in place (see `sleep`): either the thread sees it or this sees
        // the thread asleep.
        match self.core.asleep.load(Ordering::SeqCst) {
            true => self.tx.send(WriteOp::Wake).map_err(|_| stopped()),
            false => Ok(()),
        }
    }

    /// Writes entries `leader` made (their encodings, by index): on this thread when they are
    /// a follower's and the log is idle, else through the writer thread. `callback` hears when
    /// they are on disk either way.
    pub(super) fn append(
        &self,
        entries: Vec<(u64, Vec<u8>)>,
        leader: NodeId,
        callback: IOFlushed<TypeConfig>,
    ) -> io::Result<()> {
        let op = WriteOp::Append { entries, callback };
        match self.try_inline(op, leader) {
            Some(op) => self.send(op),
            None => Ok(()),
        }
    }

    /// Writes `op` here if inline writes apply to it and nothing is queued before it; gives it
    /// back otherwise.
    fn try_inline(&self, op: WriteOp, leader: NodeId) -> Option<WriteOp> {
        let follower = self.core.node.get().is_some_and(|me| *me != leader);
        let idle = self.core.queued.load(Ordering::Acquire) == 0;
        if !follower || !idle || self.core.pace.paused(Instant::now()) {
            return Some(op);
        }
        // Never wait for the thread: a batch in progress means the log is not idle.
        let Ok(mut wal) = self.core.wal.try_lock() else {
            return Some(op);
        };
        // Checked again under the lock: the thread takes it before it writes what it was sent.
        if self.core.queued.load(Ordering::Acquire) != 0 {
            return Some(op);
        }
        let started = Instant::now();
        run_batch(&mut wal, &self.core, vec![op]);
        drop(wal);
        let took = started.elapsed();
        if self.core.pace.took(took, Instant::now()) {
            tracing::info!(
                ?took,
                pause = ?pace::PAUSE,
                "a follower's inline log writes were slow; handing them to the writer thread"
            );
        }
        if let Some(m) = &self.core.metrics {
            m.inline_write();
        }
        None
    }
}

fn stopped() -> io::Error {
    io::Error::other("writing the log: log writer thread stopped")
}

impl Core {
    fn lock_committed(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a waiting committed id on its own, unsynced.
    fn write_committed(&self) {
        if self.lock_committed().is_some() {
            let mut wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
            run_batch(&mut wal, self, vec![WriteOp::Wake]);
        }
    }
}

fn writer_loop(core: &Core, rx: &mpsc::Receiver<WriteOp>) {
    loop {
        let first = match rx.recv_timeout(QUIET) {
            Ok(op) => op,
            Err(mpsc::RecvTimeoutError::Timeout) => match sleep(core, rx) {
                Some(op) => op,
                None => return core.write_committed(),
            },
            Err(mpsc::RecvTimeoutError::Disconnected) => return core.write_committed(),
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let counted = batch
            .iter()
            .filter(|op| !matches!(op, WriteOp::Wake))
            .count();
        let mut wal = core.wal.lock().unwrap_or_else(|p| p.into_inner());
        run_batch(&mut wal, core, batch);
        // Under the lock: an inline write that then sees zero comes after all of these.
        core.queued.fetch_sub(counted, Ordering::AcqRel);
    }
}

/// The log has been quiet for [`QUIET`]: writes a waiting committed id, then sleeps until the
/// next operation. None once every sender is gone.
fn sleep(core: &Core, rx: &mpsc::Receiver<WriteOp>) -> Option<WriteOp> {
    core.asleep.store(true, Ordering::SeqCst);
    // After `asleep` is set: a committed id saved before it sent no wake, and is written here.
    core.write_committed();
    let op = rx.recv().ok();
    core.asleep.store(false, Ordering::SeqCst);
    op
}

/// Writes one batch and the committed id waiting, if any (synced unless there is nothing
/// else), tells every operation in it the outcome, and drops written entries from `unflushed`.
fn run_batch(wal: &mut Wal, core: &Core, batch: Vec<WriteOp>) {
    let sync = batch.iter().any(|op| !matches!(op, WriteOp::Wake));
    let committed = core.lock_committed().take();
    let result = write_batch(wal, &batch, committed.as_deref(), sync).map_err(Arc::new);
    if let (Some(_), Err(e)) = (&committed, &result) {
        tracing::warn!(error = %e, "saving the committed log id failed");
    }
    if let Err(e) = &result {
        // The log refuses every later write (see `Wal`); openraft stops on this error and
        // the node with it.
        tracing::error!(error = %e, "writing the log failed; nothing more is acknowledged");
    }
    let mut flushed_upto = None;
    for op in batch {
        match op {
            WriteOp::Append { entries, callback } => {
                if let Some((last, _)) = entries.last() {
                    flushed_upto = Some(*last);
                }
                callback.io_completed(result.clone().map_err(io::Error::other));
            }
            WriteOp::Meta { done, .. }
            | WriteOp::Truncate { done, .. }
            | WriteOp::Purge { done, .. } => {
                let _ = done.send(result.clone());
            }
            WriteOp::Wake => {}
        }
    }
    if let (Ok(()), Some(upto)) = (&result, flushed_upto) {
        let mut unflushed = core.unflushed.lock().unwrap_or_else(|p| p.into_inner());
        // Entries up to `upto` are now readable from the log files.
        let rest = unflushed.split_off(&(upto + 1));
        *unflushed = rest;
    }
}

fn write_batch(
    wal: &mut Wal,
    batch: &[WriteOp],
    committed: Option<&[u8]>,
    sync: bool,
) -> io::Result<()> {
    let mut records = Vec::new();
    if let Some(value) = committed {
        records.push(Record::Meta {
            key: COMMITTED_KEY,
            value,
        });
    }
    for op in batch {
        match op {
            WriteOp::Append { entries, .. } => {
                records.extend(entries.iter().map(|(index, bytes)| Record::Entry {
                    index: *index,
                    bytes,
                }));
            }
            WriteOp::Meta { key, value, .. } => records.push(Record::Meta { key: *key, value }),
            WriteOp::Wake => {}
            WriteOp::Truncate { from, .. } => records.push(Record::Truncate { from: *from }),
            WriteOp::Purge { upto, record, .. } => {
                records.push(Record::Meta {
                    key: PURGED_KEY,
                    value: record,
                });
                records.push(Record::Purge { upto: *upto });
            }
        }
    }
    match (sync, records.is_empty()) {
        (true, _) => wal.write(&records),
        (false, false) => wal.write_unsynced(&records),
        (false, true) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wal::DEFAULT_SEGMENT_BYTES;

    /// Polls `done` until it holds, for at most 10 s.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A committed id rides along with the next append, is written by the thread when the log
    /// goes quiet, and wakes a sleeping thread.
    #[test]
    fn a_committed_id_is_written_with_the_next_batch_or_once_the_log_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        let reader = wal.reader();
        let writer = Writer::start(wal, Arc::default(), None).unwrap();
        writer.set_node(2);
        let committed = || reader.meta(COMMITTED_KEY);

        writer.save_committed(b"first".to_vec()).unwrap();
        let entries = vec![(1, b"an entry".to_vec())];
        // A follower's append to an idle log is written before `append` returns.
        writer.append(entries, 1, IOFlushed::noop()).unwrap();
        assert_eq!(committed().as_deref(), Some(&b"first"[..]));

        writer.save_committed(b"second".to_vec()).unwrap();
        wait_for("the thread to sleep", || {
            writer.core.asleep.load(Ordering::SeqCst)
        });
        assert_eq!(committed().as_deref(), Some(&b"second"[..]));

        writer.save_committed(b"third".to_vec()).unwrap();
        wait_for("the third committed id", || {
            committed().as_deref() == Some(&b"third"[..])
        });
        assert_eq!(writer.waiting_committed(), None);
    }
}
