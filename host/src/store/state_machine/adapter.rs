//! The state machine as openraft drives it: applying streamed entries, building, installing
//! and reading snapshots. Every guest call and file write here runs through [`offload`].

use super::{observe, sm_err, snap_err, StateMachine};
use crate::fsm::MachineSpec;
use crate::metrics::raft::SnapshotWork;
use crate::store::offload::offload;
use crate::store::snapshot;
use crate::store::snapshot_build::{Build, Built};
use crate::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::RaftSnapshotBuilder;
use std::io;
use std::sync::Arc;
use std::time::Instant;

impl StateMachine {
    /// Builds a snapshot file of the guest's state and what it covers. Blocking. The guest
    /// writes its state straight into the file; the guest is released before the file is
    /// checksummed and synced.
    fn seal(&self) -> Result<(Built, SnapshotMeta), io::Error> {
        let mut applied = self.lock();
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
        };
        let module: &[u8] = match &applied.spec {
            MachineSpec::Wasm(m) => m.bytes(),
            MachineSpec::NativeGuestKv => &[],
        };
        let build = Build::start(
            &self.shared.dir,
            &meta,
            &applied.spec.hash(),
            module,
            &applied.modules,
        )
        .map_err(|e| snap_err(Some(&meta), e))?;
        let (file, at) = build.state_writer().map_err(|e| snap_err(Some(&meta), e))?;
        let (_, state_len) =
            observe::snapshot_to(&mut applied.fsm, self.metrics(), file, at).map_err(sm_err)?;
        let sessions = applied.sessions.encode();
        // The feed changes only under the guest lock held here: it matches the state.
        let feed = self.feed().encode();
        let clock_ms = applied.clock_ms;
        self.shared.trigger.taken();
        drop(applied);
        let built = build
            .finish(state_len, &sessions, clock_ms, &feed)
            .map_err(|e| snap_err(Some(&meta), e))?;
        Ok((built, meta))
    }

    /// Puts a built snapshot file in place, unless the one on disk is as new or newer (see
    /// [`StateMachine::persist`]). Returns the envelope either way.
    async fn persist_built(
        &self,
        meta: &SnapshotMeta,
        built: Built,
    ) -> Result<SnapshotData, io::Error> {
        let mut on_disk = self.shared.snapshot_file.lock().await;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        if !newer_than_disk(*on_disk, index) {
            return joined(offload(move || Ok(built.discard())).await);
        }
        let dir = self.shared.dir.clone();
        let envelope = offload(move || built.install(&dir))
            .await
            .map_err(|e| snap_err(Some(meta), e))?
            .map_err(|e| snap_err(Some(meta), format!("cannot write it: {e}")))?;
        *on_disk = Some(index);
        Ok(envelope)
    }

    /// Writes the snapshot file, unless the one on disk is as new or newer: openraft builds
    /// snapshots in a task of their own, so a build sealed before an install (or another build)
    /// can finish after it, and writing it then would put an older snapshot on disk than the log
    /// was purged for (a restart could not replay the gap).
    async fn persist(&self, meta: &SnapshotMeta, envelope: Arc<Vec<u8>>) -> Result<(), io::Error> {
        let mut on_disk = self.shared.snapshot_file.lock().await;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        if !newer_than_disk(*on_disk, index) {
            return Ok(());
        }
        let (dir, meta2, env) = (self.shared.dir.clone(), meta.clone(), envelope);
        offload(move || snapshot::write(&dir, &meta2, &env))
            .await
            .map_err(|e| snap_err(Some(meta), e))?
            .map_err(|e| snap_err(Some(meta), format!("cannot write it: {e}")))?;
        *on_disk = Some(index);
        Ok(())
    }

    /// Refuses a snapshot this node cannot run (bad envelope, a module that does not load)
    /// before it replaces the one on disk. Blocking (it may compile the module).
    fn check_snapshot(&self, meta: &SnapshotMeta, envelope: &[u8]) -> Result<(), io::Error> {
        let contents = snapshot::open(envelope).map_err(|e| snap_err(Some(meta), e))?;
        if contents.module_hash != self.summary().spec.hash() {
            self.carried_module(meta, &contents.module_hash, contents.module)?;
        }
        Ok(())
    }
}

/// Whether a snapshot up to `index` may replace the one on disk (up to `on_disk`, if any).
fn newer_than_disk(on_disk: Option<u64>, index: u64) -> bool {
    let newer = on_disk.is_none_or(|disk| disk < index);
    if !newer {
        tracing::info!(
            index,
            ?on_disk,
            "snapshot not written: one as new is on disk"
        );
    }
    newer
}

/// An offloaded call's failure as storage errors are reported to openraft.
fn joined<T>(r: Result<Result<T, io::Error>, tokio::task::JoinError>) -> Result<T, io::Error> {
    r.map_err(sm_err)?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = Instant::now();
        let sm = self.clone();
        let (built, meta) = joined(offload(move || sm.seal()).await)?;
        let envelope = self.persist_built(&meta, built).await?;
        if let Some(m) = self.metrics() {
            m.raft().snapshot(SnapshotWork::Build, started.elapsed());
        }
        Ok(Snapshot {
            meta,
            snapshot: envelope,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let summary = self.summary();
        Ok((summary.last_applied, summary.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = match self.apply_here(entry) {
                Ok(response) => response?,
                Err(entry) => {
                    let sm = self.clone();
                    joined(offload(move || sm.apply_entry(entry)).await)?
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        envelope: SnapshotData,
    ) -> Result<(), io::Error> {
        // Check it before it replaces the snapshot on disk, and persist it before the guest takes
        // it: after a crash in between, restart restores this snapshot, never an older one with a
        // log that no longer reaches it.
        let started = Instant::now();
        let envelope = Arc::new(joined(offload(move || envelope.into_bytes()).await)?);
        let (sm, m, e) = (self.clone(), meta.clone(), envelope.clone());
        joined(offload(move || sm.check_snapshot(&m, &e)).await)?;
        self.persist(meta, envelope.clone()).await?;
        let (sm, m) = (self.clone(), meta.clone());
        // The check and the write are done with it: the buffer is ours alone again.
        let envelope = Arc::try_unwrap(envelope).unwrap_or_else(|shared| (*shared).clone());
        let envelope = SnapshotData::from(envelope);
        joined(offload(move || sm.restore_into(&mut sm.lock(), &m, envelope)).await)?;
        if let Some(m) = self.metrics() {
            m.raft().snapshot(SnapshotWork::Install, started.elapsed());
        }
        Ok(())
    }

    /// The snapshot on disk, located but not read: openraft asks for it at every start only
    /// for its metadata, and a leader sends it a chunk at a time.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let _guard = self.shared.snapshot_file.lock().await;
        let dir = self.shared.dir.clone();
        let read = offload(move || snapshot::locate(&dir))
            .await
            .map_err(|e| snap_err(None, e))?
            .map_err(|e| snap_err(None, e))?;
        Ok(read.map(|(meta, envelope)| Snapshot {
            meta,
            snapshot: envelope,
        }))
    }
}
