//! The Raft state machine: the wasm guest holds the application state, the host holds
//! `last_applied` and the membership (as openraft's `raft-kv-memstore` example splits them), and
//! snapshots go to `<data-dir>/snapshot.bin`.
//!
//! On start the latest snapshot is restored into the guest and openraft replays the committed
//! log after it.

use super::snapshot;
use crate::fsm::{FsmError, Machine, MachineSpec, Outcome};
use crate::types::{
    Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use sha2::Digest;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

fn sm_err(e: impl ToString) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

fn snap_err(meta: Option<&SnapshotMeta>, e: impl ToString) -> StorageError {
    StorageIOError::read_snapshot(meta.map(|m| m.signature()), AnyError::error(e.to_string()))
        .into()
}

struct Applied {
    fsm: Machine,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

struct Shared {
    module: MachineSpec,
    /// `module.hash()`, computed once.
    module_hash: String,
    dir: PathBuf,
    /// A std mutex: every guest call is short and synchronous, and none is held across an await.
    applied: Mutex<Applied>,
    /// Serializes snapshot file writes (builds and installs).
    snapshot_file: tokio::sync::Mutex<()>,
}

/// What the node reports about its state machine.
#[derive(Debug, Clone)]
pub struct StateMachineStatus {
    pub last_applied: Option<LogId>,
    pub module_hash: String,
    pub module_size: usize,
}

/// The state machine handed to openraft; clones share one guest.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// Starts the guest and restores the snapshot in `dir`, if any.
    pub fn open(dir: PathBuf, module: MachineSpec) -> Result<Self, StorageError> {
        let mut fsm = module.start().map_err(sm_err)?;
        let module_hash = module.hash();
        let mut last_applied = None;
        let mut membership = StoredMembership::default();
        if let Some((meta, envelope)) = snapshot::read(&dir).map_err(|e| snap_err(None, e))? {
            restore_into(&mut fsm, &module_hash, &meta, &envelope)?;
            last_applied = meta.last_log_id;
            membership = meta.last_membership;
        }
        Ok(StateMachine {
            shared: Arc::new(Shared {
                module,
                module_hash,
                dir,
                applied: Mutex::new(Applied {
                    fsm,
                    last_applied,
                    membership,
                }),
                snapshot_file: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.shared
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a read-only query against the local state (no consistency check here).
    pub fn query(&self, request: &[u8]) -> Result<Outcome<Vec<u8>>, FsmError> {
        self.lock().fsm.query(request)
    }

    /// SHA-256 (hex) of the guest's full state and the index it was taken at, read atomically.
    /// Costs one guest `snapshot()` call.
    pub fn state_hash(&self) -> Result<(u64, String), FsmError> {
        let mut applied = self.lock();
        let state = applied.fsm.snapshot()?;
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        drop(applied);
        Ok((index, hex::encode(sha2::Sha256::digest(state.as_slice()))))
    }

    /// Size of the snapshot file on disk, if there is one.
    pub fn snapshot_file_size(&self) -> Option<u64> {
        std::fs::metadata(self.shared.dir.join(snapshot::SNAPSHOT_FILE))
            .ok()
            .map(|m| m.len())
    }

    /// Last applied log id and the running module.
    pub fn status(&self) -> StateMachineStatus {
        StateMachineStatus {
            last_applied: self.lock().last_applied,
            module_hash: self.shared.module_hash.clone(),
            module_size: self.shared.module.size(),
        }
    }
}

fn restore_into(
    fsm: &mut Machine,
    module_hash: &str,
    meta: &SnapshotMeta,
    envelope: &[u8],
) -> Result<(), StorageError> {
    let state = snapshot::open(envelope, module_hash).map_err(|e| snap_err(Some(meta), e))?;
    let outcome = fsm.restore(Arc::new(state.to_vec())).map_err(sm_err)?;
    outcome
        .result
        .map_err(|e| snap_err(Some(meta), format!("guest refused the snapshot: {e}")))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (state, last_applied, membership) = {
            let mut applied = self.lock();
            let state = applied.fsm.snapshot().map_err(sm_err)?;
            (state, applied.last_applied, applied.membership.clone())
        };
        let envelope = snapshot::seal(&self.shared.module_hash, &state);
        let snapshot_id = match last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id,
                id.index,
                &self.shared.module_hash[..12]
            ),
            None => format!("empty-{}", &self.shared.module_hash[..12]),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.persist(&meta, &envelope).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(envelope)),
        })
    }
}

impl StateMachine {
    async fn persist(&self, meta: &SnapshotMeta, envelope: &[u8]) -> Result<(), StorageError> {
        let _guard = self.shared.snapshot_file.lock().await;
        let (dir, meta2, env) = (self.shared.dir.clone(), meta.clone(), envelope.to_vec());
        tokio::task::spawn_blocking(move || snapshot::write(&dir, &meta2, &env))
            .await
            .map_err(|e| snap_err(Some(meta), e))?
            .map_err(|e| {
                StorageIOError::write_snapshot(
                    Some(meta.signature()),
                    AnyError::error(e.to_string()),
                )
                .into()
            })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.lock();
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let mut response = Response::default();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(request) => {
                    for command in &request.commands {
                        // An FsmError means the guest could not be put back after a failed call:
                        // stop applying rather than diverge.
                        let outcome = applied.fsm.apply(command).map_err(sm_err)?;
                        response.results.push(outcome.result);
                    }
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let envelope = snapshot.into_inner();
        // Check it before it replaces the snapshot on disk, and persist it before the guest takes
        // it: after a crash in between, restart restores this snapshot, never an older one with a
        // log that no longer reaches it.
        snapshot::open(&envelope, &self.shared.module_hash).map_err(|e| snap_err(Some(meta), e))?;
        self.persist(meta, &envelope).await?;
        {
            let mut applied = self.lock();
            restore_into(&mut applied.fsm, &self.shared.module_hash, meta, &envelope)?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let _guard = self.shared.snapshot_file.lock().await;
        let dir = self.shared.dir.clone();
        let read = tokio::task::spawn_blocking(move || snapshot::read(&dir))
            .await
            .map_err(|e| snap_err(None, e))?
            .map_err(|e| snap_err(None, e))?;
        Ok(read.map(|(meta, envelope)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(envelope)),
        }))
    }
}
