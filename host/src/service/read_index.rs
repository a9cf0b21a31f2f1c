//! Read-index batching: concurrent linearizable reads share one leadership confirmation.
//!
//! A read is linearizable once the leader has confirmed, with a quorum, a leadership that began
//! after the read arrived, and has applied up to the commit index it saw then (openraft's
//! `ensure_linearizable`). One confirmation serves every read that arrived before it started,
//! so a task runs them in rounds: take everyone waiting, confirm once, release them all; reads
//! arriving meanwhile wait for the next round. etcd's ReadIndex does the same.

use crate::types::{Member, NodeId, Raft};
use openraft::error::{CheckIsLeaderError, RaftError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Longest wait for the readers answered by the last round.
const MAX_LINGER: Duration = Duration::from_millis(2);

pub type CheckError = RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>;

/// Handle to the read-index task.
#[derive(Clone, Debug)]
pub struct ReadIndex {
    tx: mpsc::UnboundedSender<oneshot::Sender<Result<(), CheckError>>>,
}

impl ReadIndex {
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        ReadIndex { tx }
    }

    /// Resolves once a confirmation that started after this call has succeeded (or failed).
    /// `None` when the node is shutting down.
    pub async fn confirm(&self) -> Option<Result<(), CheckError>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(reply).ok()?;
        rx.await.ok()
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), CheckError>>>) {
    // As in the write batcher: wait briefly for the readers the last round answered, so steady
    // load shares one round instead of splitting into two alternating groups.
    let mut expect = 0usize;
    let mut linger = Duration::ZERO;
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        let deadline = Instant::now() + linger;
        loop {
            while let Ok(w) = rx.try_recv() {
                waiting.push(w);
            }
            if waiting.len() >= expect {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(w)) => waiting.push(w),
                Ok(None) | Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = raft.ensure_linearizable().await.map(drop);
        let served = waiting.len();
        for w in waiting {
            let _ = w.send(result.clone());
        }
        expect = served + rx.len();
        linger = (started.elapsed() / 2).min(MAX_LINGER);
    }
}
