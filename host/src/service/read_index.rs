//! Read-index batching: concurrent linearizable reads share one leadership confirmation.
//!
//! A read is linearizable once the leader has confirmed, with a quorum, a leadership that began
//! after the read arrived, and has applied up to the commit index it saw then (openraft's
//! `ensure_linearizable`). One confirmation serves every read that arrived before it started,
//! so a task runs them in rounds: take everyone waiting, confirm once, release them all; reads
//! arriving meanwhile wait for the next round. etcd's ReadIndex does the same. A round waits
//! briefly for the readers the previous one answered (see [`super::pacing`]).

use super::pacing::Pacing;
use crate::metrics::requests::RequestMetrics;
use crate::store::Raft;
use crate::types::TypeConfig;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::ReadPolicy;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub type CheckError = RaftError<TypeConfig, LinearizableReadError<TypeConfig>>;

/// Handle to the read-index task.
#[derive(Clone, Debug)]
pub struct ReadIndex {
    tx: mpsc::UnboundedSender<oneshot::Sender<Result<(), CheckError>>>,
}

impl ReadIndex {
    pub fn start(raft: Raft, metrics: RequestMetrics) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx, metrics));
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

type Waiter = oneshot::Sender<Result<(), CheckError>>;

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Waiter>, metrics: RequestMetrics) {
    let mut pacing = Pacing::default();
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        let (expect, deadline) = pacing.target();
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
        metrics.read_batch(waiting.len());
        let started = Instant::now();
        let result = raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map(drop);
        let served = waiting.len();
        for w in waiting {
            let _ = w.send(result.clone());
        }
        pacing.finished(started, served, rx.len());
    }
}
