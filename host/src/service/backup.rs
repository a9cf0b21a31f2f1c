//! Snapshots on demand, and backups: a consistent copy of the cluster's whole replicated state,
//! made on the leader (a follower passes the leader's through) as a backup file
//! ([`crate::store::backup`]) streamed in chunks. A backup holds every write acknowledged before
//! the request: the leader confirms its leadership, applies up to that point and builds a
//! snapshot covering it.

use super::{Consistency, Service, ServiceError};
use crate::auth::{Caller, Permission, Scope};
use crate::store::backup::BackupHeader;
use futures::Stream;
use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use tokio::time::timeout;

/// A backup file, chunk by chunk. An error ends it (the file is then incomplete, and restoring
/// from it is refused).
pub type BackupStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, ServiceError>> + Send>>;

/// Bytes of state per chunk.
const CHUNK_BYTES: usize = 1 << 20;

/// A snapshot built on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Last log index the snapshot covers.
    pub index: u64,
    pub term: u64,
    /// Snapshot file size in bytes.
    pub size: u64,
}

impl Service {
    /// Builds a snapshot on this node now and waits until it is in place (openraft then purges
    /// the log behind it, keeping the configured tail).
    pub async fn snapshot(&self, caller: &Caller) -> Result<SnapshotInfo, ServiceError> {
        caller.allow(Permission::Admin, Scope::Cluster)?;
        let info = self.build_snapshot().await?;
        self.audit(caller, "snapshot", info.index);
        Ok(info)
    }

    /// Builds a snapshot covering at least everything applied now and waits until it is in
    /// place.
    async fn build_snapshot(&self) -> Result<SnapshotInfo, ServiceError> {
        let raft = &self.inner.raft;
        let target = self.metrics().last_applied.map(|l| l.index);
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| ServiceError::internal(format!("cannot trigger a snapshot: {e}")))?;
        let mut rx = raft.metrics();
        let wait = async {
            loop {
                let snap = rx.borrow_watched().snapshot;
                if snap.map(|l| l.index) >= target {
                    return snap;
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        let snap = timeout(self.inner.limits.catch_up_timeout, wait)
            .await
            .map_err(|_| ServiceError::internal("snapshot did not complete in time"))?;
        Ok(SnapshotInfo {
            index: snap.map(|l| l.index).unwrap_or(0),
            term: snap.map(|l| l.leader_id.term).unwrap_or(0),
            size: self.inner.sm.snapshot_file_size().unwrap_or(0),
        })
    }

    /// A backup of the whole state as of now. Needs `admin`.
    pub async fn backup(&self, caller: &Caller) -> Result<BackupStream, ServiceError> {
        caller.allow(Permission::Admin, Scope::Cluster)?;
        if let Some(leader) = self.read_barrier(caller, Consistency::Linearizable).await? {
            return leader.backup().await;
        }
        self.build_snapshot().await?;
        let snapshot = self
            .inner
            .sm
            .clone()
            .get_current_snapshot()
            .await
            .map_err(ServiceError::internal)?
            .ok_or_else(|| ServiceError::internal("no snapshot after building one"))?;
        let (meta, data) = (snapshot.meta, snapshot.snapshot);
        let state = tokio::task::spawn_blocking(move || data.into_bytes())
            .await
            .map_err(ServiceError::internal)?
            .map_err(ServiceError::internal)?;
        let header =
            BackupHeader::new(meta, &state, &self.inner.name).map_err(ServiceError::internal)?;
        self.audit(caller, "backup", header.index);
        // The header, then the state copied a chunk at a time as the reader takes it.
        let chunks = futures::stream::unfold(
            (Some(header.encode()), state, 0),
            |(head, state, at)| async move {
                if let Some(head) = head {
                    return Some((Ok(head), (None, state, at)));
                }
                let end = state.len().min(at + CHUNK_BYTES);
                (at < end).then(|| (Ok(state[at..end].to_vec()), (None, state, end)))
            },
        );
        Ok(Box::pin(chunks))
    }
}
