//! Read-index batching: concurrent linearizable reads share one leadership confirmation.
//!
//! A read is linearizable once the leader has confirmed, with a quorum, a leadership that began
//! after the read arrived, and has applied up to the commit index it saw then (openraft's
//! `ensure_linearizable`). One confirmation serves every read that arrived before it started,
//! so a task runs them in rounds: take everyone waiting, confirm once, release them all; reads
//! arriving meanwhile wait for the next round. etcd's ReadIndex does the same.

use crate::types::{Member, NodeId, Raft};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

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
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiting.push(w);
        }
        let result = raft.ensure_linearizable().await.map(drop);
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}
