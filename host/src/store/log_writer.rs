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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::oneshot;

/// Metadata keys in the write-ahead log.
pub(super) const VOTE_KEY: u8 = 1;
pub(super) const COMMITTED_KEY: u8 = 2;
pub(super) const PURGED_KEY: u8 = 3;
/// Most queued operations folded into one sync.
const MAX_BATCH: usize = 4096;

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
    /// Metadata that is safe to lose (the committed id): written with the next sync, and
    /// never the reason for one.
    Lazy {
        key: u8,
        value: Vec<u8>,
    },
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
    /// Operations sent to the thread and not yet written, lazy ones aside: an inline write may
    /// go first only when this is zero, so the log keeps the order operations were made in. (A
    /// lazy committed id may land after a later append: it is a value, not part of the order.)
    queued: AtomicUsize,
    unflushed: Arc<Unflushed>,
    metrics: Option<StorageMetrics>,
    /// This node, once known: appends of entries made by another node's leader may be inline.
    node: OnceLock<NodeId>,
    /// How long inline writes took lately, and until when they are paused.
    pace: Pace,
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
        if !matches!(op, WriteOp::Lazy { .. }) {
            self.core.queued.fetch_add(1, Ordering::AcqRel);
        }
        self.tx.send(op).map_err(|_| stopped())
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

fn writer_loop(core: &Core, rx: &mpsc::Receiver<WriteOp>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let counted = batch
            .iter()
            .filter(|op| !matches!(op, WriteOp::Lazy { .. }))
            .count();
        let mut wal = core.wal.lock().unwrap_or_else(|p| p.into_inner());
        run_batch(&mut wal, core, batch);
        // Under the lock: an inline write that then sees zero comes after all of these.
        core.queued.fetch_sub(counted, Ordering::AcqRel);
    }
}

/// Writes one batch (synced unless it holds only lazy metadata), tells every operation in it
/// the outcome, and drops written entries from `unflushed`.
fn run_batch(wal: &mut Wal, core: &Core, batch: Vec<WriteOp>) {
    let sync = batch.iter().any(|op| !matches!(op, WriteOp::Lazy { .. }));
    let result = write_batch(wal, &batch, sync).map_err(Arc::new);
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
            WriteOp::Lazy { .. } => {
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "saving the committed log id failed");
                }
            }
        }
    }
    if let (Ok(()), Some(upto)) = (&result, flushed_upto) {
        let mut unflushed = core.unflushed.lock().unwrap_or_else(|p| p.into_inner());
        // Entries up to `upto` are now readable from the log files.
        let rest = unflushed.split_off(&(upto + 1));
        *unflushed = rest;
    }
}

fn write_batch(wal: &mut Wal, batch: &[WriteOp], sync: bool) -> io::Result<()> {
    let mut records = Vec::new();
    for op in batch {
        match op {
            WriteOp::Append { entries, .. } => {
                records.extend(entries.iter().map(|(index, bytes)| Record::Entry {
                    index: *index,
                    bytes,
                }));
            }
            WriteOp::Meta { key, value, .. } | WriteOp::Lazy { key, value } => {
                records.push(Record::Meta { key: *key, value })
            }
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
    if sync {
        wal.write(&records)
    } else {
        wal.write_unsynced(&records)
    }
}
