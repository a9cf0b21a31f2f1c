//! Write batching: concurrent client commands are gathered into one log entry, so they share one
//! append, one fsync and one apply call, and the pacing below can wait for the clients a batch
//! just answered.
//!
//! A single task proposes one batch at a time: it takes the first queued command, drains whatever
//! else is queued (up to [`MAX_BATCH_COMMANDS`] / [`MAX_BATCH_BYTES`]) and proposes the batch;
//! the next batch accumulates meanwhile. Before proposing, it waits briefly for the clients the
//! last batch answered (see [`super::pacing`]).
use super::pacing::Pacing;
use crate::fsm::CallError;
use crate::metrics::requests::RequestMetrics;
use crate::store::Raft;
use crate::store::StateMachine;
use crate::types::{Command, Request, TypeConfig};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Most commands in one log entry.
pub const MAX_BATCH_COMMANDS: usize = 1024;
/// Most command bytes in one log entry (a single larger command still goes alone).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Commands waiting for a batch.
const QUEUE: usize = 16 * 1024;

pub type WriteError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;

/// What one command's proposal produced: its log index and the guest's result.
pub type Committed = Result<(u64, Result<Vec<u8>, CallError>), WriteError>;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Committed>,
}

/// Handle to the batching task.
#[derive(Clone, Debug)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batching task for `raft`, recording batch sizes in `metrics`.
    pub fn start(raft: Raft, sm: StateMachine, metrics: RequestMetrics) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, sm, rx, metrics));
        Batcher { tx }
    }

    /// Proposes `command`; resolves once its batch is committed and applied (or failed).
    /// `None` when the node is shutting down.
    pub async fn propose(&self, command: Command) -> Option<Committed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Pending { command, reply }).await.ok()?;
        rx.await.ok()
    }
}

async fn run(
    raft: Raft,
    sm: StateMachine,
    mut rx: mpsc::Receiver<Pending>,
    metrics: RequestMetrics,
) {
    let mut pacing = Pacing::default();
    while let Some(first) = rx.recv().await {
        let mut bytes = first.command.bytes.len();
        let mut batch = vec![first];
        let (expect, deadline) = pacing.target();
        loop {
            while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.command.bytes.len();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            if batch.len() >= expect.min(MAX_BATCH_COMMANDS) || bytes >= MAX_BATCH_BYTES {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => {
                    bytes += p.command.bytes.len();
                    batch.push(p);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let started = Instant::now();
        let proposed = batch.len();
        metrics.write_batch(proposed);
        propose(&raft, &sm, batch).await;
        pacing.finished(started, proposed, rx.len());
    }
}

/// Proposes one batch and answers every command in it.
async fn propose(raft: &Raft, sm: &StateMachine, batch: Vec<Pending>) {
    // No command may precede the cluster's first module entry (see `crate::seed`): a leader
    // whose log has none yet logs one first. One attempt; if it fails, so will the batch, with
    // the same error.
    let leads = || {
        let m = raft.metrics();
        let m = m.borrow_watched();
        m.current_leader == Some(m.id)
    };
    if sm.needs_seed() && leads() {
        let _ = crate::seed::seed_module(raft, sm, Duration::ZERO).await;
    }
    let (commands, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let request = Request::Stamped {
        unix_ms: stamp(),
        commands,
    };
    match raft.client_write(request).await {
        Ok(written) => {
            let index = written.log_id.index;
            let retried: std::collections::BTreeMap<usize, u64> =
                written.data.retried.into_iter().collect();
            let mut results = written.data.results.into_iter();
            for (n, reply) in replies.into_iter().enumerate() {
                let index = retried.get(&n).copied().unwrap_or(index);
                let result = results.next().unwrap_or_else(|| {
                    Err(CallError::Trap {
                        message: "internal: batch response is short".into(),
                    })
                });
                let _ = reply.send(Ok((index, result)));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The time a batch is stamped with, once, here on the leader: every node's guest sees it (or
/// the log's clock, if that is later) for the batch's commands.
fn stamp() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ahead = crate::failpoints::value(crate::failpoints::CLOCK_AHEAD_MS)
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0);
    now + ahead
}
