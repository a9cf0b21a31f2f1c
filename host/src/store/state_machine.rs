//! The Raft state machine: the wasm guest holds the application state, the host holds
//! `last_applied`, the membership (as openraft's `raft-kv-memstore` example splits them) and the
//! guest module history; snapshots go to `<data-dir>/snapshot.bin`.
//!
//! The active guest module is replicated state. A `Module` log entry switches every node to a new
//! component at the same index: the old guest's `snapshot()` goes into the new guest's
//! `restore()` (where a new version migrates the old layout), and if loading or restoring fails
//! the entry is rejected with the same error on every node and the old guest stays. Each
//! activated module's bytes are kept in `<data-dir>/modules/<sha256>.wasm`, and snapshots carry
//! the active module, so a node restarting, installing a snapshot or joining later runs the
//! module that is active at its applied index whatever `--fsm` it was started with; `--fsm`
//! only seeds a brand-new cluster (the bootstrap node logs it as the first, `seed`, entry).
//!
//! On start the latest snapshot is restored into its module and openraft replays the committed
//! log after it.

use super::snapshot::{self, Contents};
use crate::fsm::{CallError, FsmError, GuestLimits, GuestModule, Machine, MachineSpec, Outcome};
use crate::types::{
    Entry, LogId, ModuleRecord, Request, Response, Snapshot, SnapshotData, SnapshotMeta,
    StoredMembership, TypeConfig,
};
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use sha2::Digest;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Directory (inside the data dir) holding every module this node has activated.
pub const MODULES_DIR: &str = "modules";

fn sm_err(e: impl ToString) -> io::Error {
    io::Error::other(format!("state machine: {}", e.to_string()))
}

fn snap_err(meta: Option<&SnapshotMeta>, e: impl ToString) -> io::Error {
    let at = match meta.and_then(|m| m.last_log_id) {
        Some(id) => format!(" up to {id}"),
        None => String::new(),
    };
    io::Error::other(format!("snapshot{at}: {}", e.to_string()))
}

struct Applied {
    fsm: Machine,
    /// The active module.
    spec: MachineSpec,
    /// Every module this state has run, oldest first; the last is `spec`.
    modules: Vec<ModuleRecord>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl Applied {
    /// True once a module entry (seed or upgrade) is part of this state's history.
    fn module_logged(&self) -> bool {
        self.modules.iter().any(|m| m.since_index > 0)
    }
}

struct Shared {
    dir: PathBuf,
    /// Limits for modules loaded from the log or a snapshot; `None` on the native baseline,
    /// which cannot switch modules.
    limits: Option<GuestLimits>,
    /// Compiled modules by hash, so a replay or a validated upgrade does not compile twice.
    compiled: Mutex<HashMap<String, GuestModule>>,
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
    /// Every module run so far, oldest first; the last is the active one.
    pub modules: Vec<ModuleRecord>,
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

fn record(spec: &MachineSpec, since_index: u64) -> ModuleRecord {
    ModuleRecord {
        hash: spec.hash(),
        size: spec.size() as u64,
        since_index,
    }
}

/// Writes `bytes` to `<dir>/modules/<hash>.wasm` (atomically, synced) unless it is there.
fn keep_module(dir: &Path, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
    let modules = dir.join(MODULES_DIR);
    let path = modules.join(format!("{hash}.wasm"));
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&modules)?;
    let tmp = modules.join(format!("{hash}.wasm.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&modules)?.sync_all()
}

impl StateMachine {
    /// Starts the guest: the module and state of the snapshot in `dir` if there is one,
    /// otherwise `module` with an empty state.
    pub fn open(dir: PathBuf, module: MachineSpec) -> Result<Self, io::Error> {
        let limits = match &module {
            MachineSpec::Wasm(m) => Some(m.limits()),
            MachineSpec::NativeGuestKv => None,
        };
        let sm = StateMachine {
            shared: Arc::new(Shared {
                dir,
                limits,
                compiled: Mutex::new(HashMap::new()),
                applied: Mutex::new(Applied {
                    fsm: module.start().map_err(sm_err)?,
                    modules: vec![record(&module, 0)],
                    spec: module,
                    last_applied: None,
                    membership: StoredMembership::default(),
                }),
                snapshot_file: tokio::sync::Mutex::new(()),
            }),
        };
        if let Some((meta, envelope)) =
            snapshot::read(&sm.shared.dir).map_err(|e| snap_err(None, e))?
        {
            let mut applied = sm.lock();
            sm.restore_into(&mut applied, &meta, &envelope)?;
        }
        Ok(sm)
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

    /// Last applied log id and the modules.
    pub fn status(&self) -> StateMachineStatus {
        let applied = self.lock();
        StateMachineStatus {
            last_applied: applied.last_applied,
            module_hash: applied.spec.hash(),
            module_size: applied.spec.size(),
            modules: applied.modules.clone(),
        }
    }

    /// True when this state machine still needs a seed entry: it runs a wasm module and no
    /// module entry has been applied yet.
    pub fn needs_seed(&self) -> bool {
        self.shared.limits.is_some() && !self.lock().module_logged()
    }

    /// The active module's bytes (empty on the native baseline): what a seed entry carries.
    pub fn active_module_bytes(&self) -> Vec<u8> {
        match &self.lock().spec {
            MachineSpec::Wasm(m) => m.bytes().to_vec(),
            MachineSpec::NativeGuestKv => Vec::new(),
        }
    }

    /// Compiles `bytes` (or takes it from the cache) under this node's limits.
    fn compile(&self, bytes: &[u8]) -> Result<GuestModule, String> {
        let Some(limits) = self.shared.limits else {
            return Err(
                "this node runs the native guest-kv benchmark baseline, which cannot \
                        switch modules"
                    .into(),
            );
        };
        let hash = crate::fsm::module::module_hash(bytes);
        let mut compiled = self
            .shared
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(m) = compiled.get(&hash) {
            return Ok(m.clone());
        }
        let name = format!("sha256:{}", &hash[..12]);
        let module = GuestModule::from_bytes(&name, bytes, limits).map_err(|e| e.to_string())?;
        compiled.insert(hash, module.clone());
        Ok(module)
    }

    /// A new guest of `module` holding `state` (the active guest's snapshot).
    fn migrate(module: &GuestModule, state: Arc<Vec<u8>>) -> Result<Machine, String> {
        let mut fsm = module
            .start()
            .map_err(|e| format!("the new module cannot start: {e}"))?;
        let outcome = fsm
            .restore(state)
            .map_err(|e| format!("the new module failed to take the state: {e}"))?;
        outcome
            .result
            .map_err(|e| format!("the new module's restore() failed: {e}"))?;
        Ok(Machine::Wasm(fsm))
    }

    /// The leader's check before an upgrade is logged: the module compiles, is a component with
    /// the state machine's exports, and restores the current state (a dry run on a copy; the
    /// active guest is untouched). Returns the record the module would get (index 0).
    pub fn check_upgrade(&self, bytes: &[u8]) -> Result<ModuleRecord, String> {
        let module = self.compile(bytes)?;
        let state = self
            .lock()
            .fsm
            .snapshot()
            .map_err(|e| format!("the active guest's snapshot failed: {e}"))?;
        Self::migrate(&module, state)?;
        Ok(ModuleRecord {
            hash: module.hash().to_string(),
            size: module.size() as u64,
            since_index: 0,
        })
    }

    /// Applies a module entry at `index`. The inner error is the deterministic rejection; the
    /// outer one a local storage failure (the module file could not be written).
    fn apply_module(
        &self,
        applied: &mut Applied,
        bytes: &[u8],
        seed: bool,
        index: u64,
    ) -> Result<Result<Vec<u8>, CallError>, io::Error> {
        let reject = |reason: String| Ok(Err(CallError::ModuleRejected { reason }));
        if seed && (applied.module_logged() || self.shared.limits.is_none()) {
            // A cluster is seeded once; a later seed (a bootstrap retried) changes nothing.
            let active = applied.modules.last().cloned().unwrap_or_default();
            return Ok(Ok(serde_json::to_vec(&serde_json::json!({
                "hash": active.hash, "size": active.size, "since_index": active.since_index,
                "ignored": true,
            }))
            .unwrap_or_default()));
        }
        let module = match self.compile(bytes) {
            Ok(m) => m,
            Err(reason) => return reject(reason),
        };
        let fsm = if seed {
            // Nothing was applied before a seed: the new module starts empty.
            match module.start() {
                Ok(f) => Machine::Wasm(f),
                Err(e) => return reject(format!("the new module cannot start: {e}")),
            }
        } else {
            let state = match applied.fsm.snapshot() {
                Ok(s) => s,
                Err(e) => return reject(format!("the active guest's snapshot failed: {e}")),
            };
            match Self::migrate(&module, state) {
                Ok(f) => f,
                Err(reason) => return reject(reason),
            }
        };
        keep_module(&self.shared.dir, module.hash(), module.bytes()).map_err(sm_err)?;
        let rec = ModuleRecord {
            hash: module.hash().to_string(),
            size: module.size() as u64,
            since_index: index,
        };
        applied.fsm = fsm;
        applied.spec = MachineSpec::Wasm(module);
        if seed {
            // The module a node was started with is not replicated state (nodes may differ in
            // `--fsm`): from the seed on, every node's history is the same.
            applied.modules.clear();
        }
        applied.modules.push(rec.clone());
        Ok(Ok(serde_json::to_vec(&rec).unwrap_or_default()))
    }

    /// Replaces `applied` with a snapshot's module and state.
    fn restore_into(
        &self,
        applied: &mut Applied,
        meta: &SnapshotMeta,
        envelope: &[u8],
    ) -> Result<(), io::Error> {
        let contents = snapshot::open(envelope).map_err(|e| snap_err(Some(meta), e))?;
        let spec = if contents.module_hash == applied.spec.hash() {
            applied.spec.clone()
        } else {
            let module = self.compile(contents.module).map_err(|reason| {
                snap_err(
                    Some(meta),
                    snapshot::SnapshotError::ModuleMismatch {
                        found: contents.module_hash.clone(),
                        reason,
                    },
                )
            })?;
            MachineSpec::Wasm(module)
        };
        let mut fsm = spec.start().map_err(sm_err)?;
        let outcome = fsm
            .restore(Arc::new(contents.state.to_vec()))
            .map_err(sm_err)?;
        outcome
            .result
            .map_err(|e| snap_err(Some(meta), format!("guest refused the snapshot: {e}")))?;
        if let MachineSpec::Wasm(m) = &spec {
            keep_module(&self.shared.dir, m.hash(), m.bytes()).map_err(sm_err)?;
        }
        applied.fsm = fsm;
        applied.spec = spec;
        applied.modules = contents.modules;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        Ok(())
    }
}

impl StateMachine {
    /// Applies one committed entry and returns its response (what openraft's `apply` does for
    /// each entry it is given).
    pub fn apply_entry(&self, entry: Entry) -> Result<Response, io::Error> {
        let mut applied = self.lock();
        applied.last_applied = Some(entry.log_id);
        let mut response = Response::default();
        match entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(Request::Commands(commands)) => {
                for command in &commands {
                    // An FsmError means the guest could not be put back after a failed call:
                    // stop applying rather than diverge.
                    let outcome = applied.fsm.apply(command).map_err(sm_err)?;
                    response.results.push(outcome.result);
                }
            }
            EntryPayload::Normal(Request::Module { bytes, seed }) => {
                let result = self.apply_module(&mut applied, &bytes, seed, entry.log_id.index)?;
                response.results.push(result);
            }
            EntryPayload::Membership(membership) => {
                applied.membership = StoredMembership::new(Some(entry.log_id), membership);
            }
        }
        Ok(response)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (envelope, last_applied, membership) = {
            let mut applied = self.lock();
            let state = applied.fsm.snapshot().map_err(sm_err)?;
            let module_hash = applied.spec.hash();
            let envelope = snapshot::seal(&Contents {
                module_hash: module_hash.clone(),
                module: match &applied.spec {
                    MachineSpec::Wasm(m) => m.bytes(),
                    MachineSpec::NativeGuestKv => &[],
                },
                modules: applied.modules.clone(),
                state: &state,
            });
            (envelope, applied.last_applied, applied.membership.clone())
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
        };
        self.persist(&meta, &envelope).await?;
        Ok(Snapshot {
            meta,
            snapshot: envelope,
        })
    }
}

impl StateMachine {
    async fn persist(&self, meta: &SnapshotMeta, envelope: &[u8]) -> Result<(), io::Error> {
        let _guard = self.shared.snapshot_file.lock().await;
        let (dir, meta2, env) = (self.shared.dir.clone(), meta.clone(), envelope.to_vec());
        tokio::task::spawn_blocking(move || snapshot::write(&dir, &meta2, &env))
            .await
            .map_err(|e| snap_err(Some(meta), e))?
            .map_err(|e| snap_err(Some(meta), format!("cannot write it: {e}")))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = self.apply_entry(entry)?;
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
        {
            // Refuse a snapshot this node cannot run before it replaces the one on disk.
            let contents = snapshot::open(&envelope).map_err(|e| snap_err(Some(meta), e))?;
            if contents.module_hash != self.lock().spec.hash() {
                self.compile(contents.module).map_err(|reason| {
                    snap_err(
                        Some(meta),
                        snapshot::SnapshotError::ModuleMismatch {
                            found: contents.module_hash.clone(),
                            reason,
                        },
                    )
                })?;
            }
        }
        self.persist(meta, &envelope).await?;
        let mut applied = self.lock();
        self.restore_into(&mut applied, meta, &envelope)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let _guard = self.shared.snapshot_file.lock().await;
        let dir = self.shared.dir.clone();
        let read = tokio::task::spawn_blocking(move || snapshot::read(&dir))
            .await
            .map_err(|e| snap_err(None, e))?
            .map_err(|e| snap_err(None, e))?;
        Ok(read.map(|(meta, envelope)| Snapshot {
            meta,
            snapshot: envelope,
        }))
    }
}
