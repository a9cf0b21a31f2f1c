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
//!
//! Two locks: the guest (`applied`), held for a whole guest call and only off the async workers
//! (every async caller goes through [`offload`]) except for a brief apply (`apply_here`), and a
//! summary of it (`summary`: applied index, membership, modules) that status and seeding read
//! without waiting for a guest call.
//! `adapter` holds openraft's side: streamed applies and snapshot build, install and read;
//! `apply` one committed entry; `command` one command through its session; `observe` a guest
//! call's metrics, log lines and announced changes; `guest_log` the lines guests logged; `feed`
//! the changes guests announced, for watchers; `trigger` asks for snapshots by commands applied.

use super::modules::{migrate, ModuleRejected, Modules};
use super::offload::{offload, GuestCallError};
use super::pace::Pace;
use super::snapshot;
use crate::fsm::{EntryContext, FsmError, Machine, MachineSpec, Outcome};
use crate::metrics::guest::Call;
use crate::metrics::Metrics;
use crate::snapshot_data::SnapshotData;
use crate::types::{LogId, ModuleRecord, SnapshotMeta, StoredMembership};
use sha2::Digest;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

mod adapter;
mod apply;
mod command;
mod feed;
mod guest_log;
mod observe;
mod sessions;
mod trigger;

pub use feed::{ChangeEvent, ChangeFeed, Compacted, Cursor, Retention};
pub use guest_log::{GuestLog, NumberedLine, KEPT_GUEST_LINES};
pub use sessions::Sessions;
pub use trigger::SnapshotTrigger;

use observe::Observers;

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
    /// Client sessions: replicated state beside the guest's.
    sessions: Sessions,
    /// The log's clock: the time of the latest stamped entry (ms since the Unix epoch; 0
    /// before any), never going back. Replicated state, carried by snapshots.
    clock_ms: u64,
}

struct Shared {
    dir: PathBuf,
    modules: Modules,
    /// The guest and the state it applied. A std mutex, taken off the async workers (see
    /// [`offload`]) or at start-up, or tried on one for a brief apply (see `apply_here`): a
    /// guest call holds it for its whole duration.
    applied: Mutex<Applied>,
    /// How long inline applies took lately (see `apply_here`).
    pace: Pace,
    /// What status reports and seeding reads, copied from `applied` as it changes, so async
    /// code never waits for a guest call to learn the applied index or the active module.
    summary: Mutex<Summary>,
    /// Serializes snapshot file writes (builds and installs); holds the last log index of the
    /// snapshot on disk (None: no snapshot), so an older one never replaces a newer one.
    snapshot_file: tokio::sync::Mutex<Option<u64>>,
    /// Where guest calls, module changes and snapshots are recorded (none in some tests).
    metrics: Option<Metrics>,
    /// What guests logged on this node.
    guest_log: GuestLog,
    /// The changes guests announced.
    feed: ChangeFeed,
    /// Counts commands toward the next snapshot.
    trigger: SnapshotTrigger,
}

#[derive(Clone)]
struct Summary {
    last_applied: Option<LogId>,
    sessions: usize,
    membership: StoredMembership,
    spec: MachineSpec,
    modules: Vec<ModuleRecord>,
}

/// What the node reports about its state machine.
#[derive(Debug, Clone)]
pub struct StateMachineStatus {
    pub last_applied: Option<LogId>,
    pub module_hash: String,
    pub module_size: usize,
    /// Every module run so far, oldest first; the last is the active one.
    pub modules: Vec<ModuleRecord>,
    /// Live client sessions.
    pub sessions: usize,
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

impl StateMachine {
    /// Starts the guest: the module and state of the snapshot in `dir` if there is one,
    /// otherwise `module` with an empty state, recording into `metrics` and keeping announced
    /// changes for `retention`. Blocking (it may restore a large snapshot).
    pub fn open(
        dir: PathBuf,
        module: MachineSpec,
        metrics: Option<Metrics>,
        retention: Retention,
    ) -> Result<Self, io::Error> {
        let limits = match &module {
            MachineSpec::Wasm(m) => Some(m.limits()),
            MachineSpec::NativeGuestKv => None,
        };
        let applied = Applied {
            fsm: module.start().map_err(sm_err)?,
            modules: vec![record(&module, 0)],
            spec: module,
            last_applied: None,
            membership: StoredMembership::default(),
            sessions: Sessions::default(),
            clock_ms: 0,
        };
        super::snapshot_build::remove_leftover(&dir);
        let on_disk = snapshot::locate(&dir).map_err(|e| snap_err(None, e))?;
        let disk_index = on_disk
            .as_ref()
            .map(|(m, _)| m.last_log_id.map_or(0, |l| l.index));
        let sm = StateMachine {
            shared: Arc::new(Shared {
                modules: Modules::new(dir.clone(), limits),
                dir,
                summary: Mutex::new(Summary::of(&applied)),
                applied: Mutex::new(applied),
                pace: Pace::default(),
                snapshot_file: tokio::sync::Mutex::new(disk_index),
                metrics,
                guest_log: GuestLog::default(),
                feed: ChangeFeed::new(retention),
                trigger: SnapshotTrigger::default(),
            }),
        };
        if let Some((meta, envelope)) = on_disk {
            let (started, bytes) = (std::time::Instant::now(), envelope.len());
            let mut applied = sm.lock();
            sm.restore_into(&mut applied, &meta, envelope)?;
            tracing::info!(
                index = meta.last_log_id.map_or(0, |l| l.index),
                bytes,
                ms = started.elapsed().as_millis() as u64,
                "restored the snapshot on disk"
            );
        }
        if let Some(m) = sm.metrics() {
            m.guest().module(&sm.status().module_hash);
        }
        Ok(sm)
    }

    /// The guest. Only for code that runs off the async workers (see [`offload`]).
    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.shared
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn summary(&self) -> MutexGuard<'_, Summary> {
        self.shared
            .summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Copies what status and seeding read out of `applied`.
    fn publish(&self, applied: &Applied) {
        *self.summary() = Summary::of(applied);
        if let Some(m) = self.metrics() {
            m.guest().module(&applied.spec.hash());
        }
    }

    fn metrics(&self) -> Option<&Metrics> {
        self.shared.metrics.as_ref()
    }

    fn observers(&self) -> Observers<'_> {
        Observers {
            metrics: self.metrics(),
            log: &self.shared.guest_log,
            feed: &self.shared.feed,
        }
    }

    /// The changes guests announced on this node.
    pub fn feed(&self) -> &ChangeFeed {
        &self.shared.feed
    }

    /// Asks for snapshots by commands applied (never, until told how often).
    pub fn snapshot_trigger(&self) -> &SnapshotTrigger {
        &self.shared.trigger
    }

    /// What guests logged on this node.
    pub fn guest_log(&self) -> &GuestLog {
        &self.shared.guest_log
    }

    /// Runs a read-only query against the local state (no consistency check here). The guest
    /// sees the last applied entry, and this node's clock (never earlier than the log's).
    pub async fn query(&self, request: Vec<u8>) -> Result<Outcome<Vec<u8>>, GuestCallError> {
        let sm = self.clone();
        let query = move || {
            let mut applied = sm.lock();
            let read = EntryContext {
                index: applied.last_applied.map_or(0, |l| l.index),
                term: applied.last_applied.map_or(0, |l| l.leader_id.term),
                unix_ms: unix_ms_now().max(applied.clock_ms),
                position: 0,
            };
            observe::call(
                &mut applied.fsm,
                sm.observers(),
                Call::Query,
                &request,
                read,
            )
        };
        Ok(offload(query).await??)
    }

    /// SHA-256 (hex) of the guest's full state and the session table, and the index they were
    /// taken at, read atomically.
    /// Costs one guest `snapshot()` call; the hashing runs after the guest is released, so
    /// applies go on meanwhile.
    pub async fn state_hash(&self) -> Result<(u64, String), GuestCallError> {
        let sm = self.clone();
        let hashed = offload(move || {
            let (index, state) = {
                let mut applied = sm.lock();
                let state = observe::snapshot(&mut applied.fsm, sm.metrics())?;
                // No sessions hash as the guest state alone did before sessions existed.
                let sessions = match applied.sessions.is_empty() {
                    true => Vec::new(),
                    false => applied.sessions.encode(),
                };
                (
                    applied.last_applied.map(|l| l.index).unwrap_or(0),
                    (state, sessions),
                )
            };
            let (state, sessions) = state;
            let mut hash = sha2::Sha256::new();
            hash.update(state.as_slice());
            hash.update(&sessions);
            Ok::<_, FsmError>((index, hex::encode(hash.finalize())))
        });
        Ok(hashed.await??)
    }

    /// Size of the snapshot file on disk, if there is one.
    pub fn snapshot_file_size(&self) -> Option<u64> {
        std::fs::metadata(self.shared.dir.join(snapshot::SNAPSHOT_FILE))
            .ok()
            .map(|m| m.len())
    }

    /// Last applied log id and the modules.
    pub fn status(&self) -> StateMachineStatus {
        let summary = self.summary();
        StateMachineStatus {
            last_applied: summary.last_applied,
            module_hash: summary.spec.hash(),
            module_size: summary.spec.size(),
            modules: summary.modules.clone(),
            sessions: summary.sessions,
        }
    }

    /// The hash of the module the state machine runs now.
    pub fn module_hash(&self) -> String {
        self.summary().spec.hash()
    }

    /// True when this state machine still needs a seed entry: it runs a wasm module and no
    /// module entry has been applied yet.
    pub fn needs_seed(&self) -> bool {
        self.shared.modules.can_switch() && !module_logged(&self.summary().modules)
    }

    /// The active module's bytes (empty on the native baseline): what a seed entry carries.
    pub fn active_module_bytes(&self) -> Vec<u8> {
        match &self.summary().spec {
            MachineSpec::Wasm(m) => m.bytes().to_vec(),
            MachineSpec::NativeGuestKv => Vec::new(),
        }
    }

    /// The leader's check before an upgrade is logged: the module compiles, is a component with
    /// the state machine's exports, and restores the current state (a dry run on a copy; the
    /// active guest is untouched). Returns the record the module would get (index 0), or why
    /// the module is refused.
    pub async fn check_upgrade(
        &self,
        bytes: Vec<u8>,
    ) -> Result<Result<ModuleRecord, ModuleRejected>, GuestCallError> {
        let sm = self.clone();
        Ok(offload(move || {
            let module = sm.shared.modules.compile(&bytes)?;
            let state = observe::snapshot(&mut sm.lock().fsm, sm.metrics())
                .map_err(ModuleRejected::Snapshot)?;
            migrate(&module, state)?;
            Ok(ModuleRecord {
                hash: module.hash().to_string(),
                size: module.size() as u64,
                since_index: 0,
            })
        })
        .await?)
    }

    /// Replaces `applied` with a snapshot's module and state. The envelope may be in memory
    /// (its buffer becomes the state's) or in the snapshot file, whose state is read only as the
    /// guest restores it and stays there as the rollback checkpoint: a large state is not copied
    /// on its way in.
    fn restore_into(
        &self,
        applied: &mut Applied,
        meta: &SnapshotMeta,
        envelope: SnapshotData,
    ) -> Result<(), io::Error> {
        let unsealed = snapshot::unseal(envelope).map_err(|e| snap_err(Some(meta), e))?;
        let spec = self.spec_for(applied, meta, &unsealed.module_hash, &unsealed.module)?;
        let mut fsm = spec.start().map_err(sm_err)?;
        let sessions = Sessions::decode(&unsealed.sessions).map_err(|e| snap_err(Some(meta), e))?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let (modules, clock_ms, feed) = (unsealed.modules, unsealed.clock_ms, unsealed.feed);
        let outcome = fsm.restore_from(unsealed.state).map_err(sm_err)?;
        outcome
            .result
            .map_err(|e| snap_err(Some(meta), format!("guest refused the snapshot: {e}")))?;
        if let MachineSpec::Wasm(m) = &spec {
            self.shared.modules.keep(m).map_err(sm_err)?;
        }
        applied.fsm = fsm;
        applied.spec = spec;
        applied.modules = modules;
        applied.sessions = sessions;
        applied.clock_ms = clock_ms;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        self.shared
            .feed
            .restore(&feed, index)
            .map_err(|e| snap_err(Some(meta), e))?;
        self.shared.trigger.taken();
        self.publish(applied);
        Ok(())
    }

    /// The module a snapshot's state runs in: the active one, or the one it carries.
    fn spec_for(
        &self,
        applied: &Applied,
        meta: &SnapshotMeta,
        module_hash: &str,
        module: &[u8],
    ) -> Result<MachineSpec, io::Error> {
        if module_hash == applied.spec.hash() {
            return Ok(applied.spec.clone());
        }
        Ok(MachineSpec::Wasm(self.carried_module(
            meta,
            module_hash,
            module,
        )?))
    }

    /// Compiles the module a snapshot carries (`module`, whose hash is `module_hash`), or says
    /// why this node cannot run it.
    fn carried_module(
        &self,
        meta: &SnapshotMeta,
        module_hash: &str,
        module: &[u8],
    ) -> Result<crate::fsm::GuestModule, io::Error> {
        self.shared.modules.compile(module).map_err(|e| {
            snap_err(
                Some(meta),
                snapshot::SnapshotError::ModuleMismatch {
                    found: module_hash.to_string(),
                    reason: e.to_string(),
                },
            )
        })
    }
}

/// This node's clock, ms since the Unix epoch.
fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Summary {
    fn of(applied: &Applied) -> Self {
        Summary {
            last_applied: applied.last_applied,
            sessions: applied.sessions.len(),
            membership: applied.membership.clone(),
            spec: applied.spec.clone(),
            modules: applied.modules.clone(),
        }
    }
}

/// True once a module entry (seed or upgrade) is part of a state's history.
fn module_logged(modules: &[ModuleRecord]) -> bool {
    modules.iter().any(|m| m.since_index > 0)
}
