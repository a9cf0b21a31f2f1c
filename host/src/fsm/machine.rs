//! One running guest: calls with fuel and memory limits, failures classified into
//! deterministic [`CallError`]s, and rollback of a failed call.
//!
//! Rollback: wasmtime poisons an instance after a trap, and a call that fails halfway may have
//! changed guest memory. So after any failed call the instance is dropped and rebuilt from the
//! last checkpoint (the bytes of the last successful `snapshot` or `restore`) plus a replay of
//! the [`Journal`] of every command applied since, which is exactly the state before the failed
//! call. The journal is bounded: past the checkpoint's size (at least [`JOURNAL_MIN_BYTES`];
//! at most [`JOURNAL_MAX_BYTES`] while it is kept in memory) a new checkpoint is taken. Where
//! they are kept: see [`super::checkpoint`] and [`super::journal`].

use super::bindings::Fsm;
use super::checkpoint::{scratch_file, Checkpoint, SPILL_ABOVE_BYTES};
use super::context::{EntryContext, GuestEvent, LogLine, Mode};
use super::error::{bounded, CallError, FsmError, MAX_GUEST_MESSAGE_BYTES};
use super::journal::Journal;
use super::limiter::StoreState;
use super::module::GuestModule;
use super::stream::Sink;
use super::wasi::outside_async;
use crate::snapshot_data::SnapshotData;
use std::io::BufWriter;
use std::sync::Arc;
use wasmtime::{Store, Trap};

/// Bytes of commands (and their entries) kept for replay before a new checkpoint is taken: the
/// checkpoint's own size, at least [`JOURNAL_MIN_BYTES`]. A checkpoint costs one guest
/// `snapshot`, about as much work as replaying a journal of the state's size, so a rollback
/// costs at most about two restores of the state. A journal kept in memory (beside a small
/// checkpoint) is memory a node holds beside the guest's own, so it stays under
/// [`JOURNAL_MAX_BYTES`]: a checkpoint of guest-kv with 10,000 keys (3 MB, a few ms) comes every
/// 13,000-odd puts of 256-byte values.
const JOURNAL_MIN_BYTES: usize = 4 << 20;
const JOURNAL_MAX_BYTES: usize = 16 << 20;
/// Fuel for replaying a command during a rebuild: it completed once, so it is given room to
/// complete again even if the fresh instance's allocator makes it a little costlier.
const REPLAY_FUEL: u64 = u64::MAX / 4;

/// What one call produced, and the fuel it burned (equal on every node for equal histories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    /// The guest's response, or why there is none.
    pub result: Result<T, CallError>,
    /// Fuel units the call consumed.
    pub fuel_used: u64,
}

/// A guest component instance holding the application state.
pub struct GuestFsm {
    module: GuestModule,
    store: Store<StoreState>,
    fsm: Fsm,
    /// State to rebuild from after a failed call.
    checkpoint: Checkpoint,
    /// Commands applied since `checkpoint` (boxed: a `Machine` holds this or a native map).
    journal: Box<Journal>,
    /// Journal size at which the next checkpoint is attempted. Moves on by
    /// [`JOURNAL_MAX_BYTES`] after a failed checkpoint, so a guest that cannot snapshot (say, at
    /// its memory cap) is not asked again on every command.
    next_checkpoint_at: usize,
    /// The changes the last successful `apply` announced, until taken.
    events: Vec<GuestEvent>,
}

impl std::fmt::Debug for GuestFsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestFsm")
            .field("module", &self.module)
            .field("journal", &self.journal)
            .finish()
    }
}

type Call<'a, R> = &'a dyn Fn(&Fsm, &mut Store<StoreState>) -> wasmtime::Result<R>;

/// What a call is for: its mode and entry (see [`super::context`]).
type For = (Mode, EntryContext);

/// `snapshot` and `restore`: not tied to an entry.
const IDLE: For = (
    Mode::Idle,
    EntryContext {
        index: 0,
        term: 0,
        unix_ms: 0,
        position: 0,
    },
);

impl GuestModule {
    /// A running state machine with an empty state.
    pub fn start(&self) -> Result<GuestFsm, FsmError> {
        GuestFsm::new(self.clone())
    }
}

impl GuestFsm {
    fn new(module: GuestModule) -> Result<Self, FsmError> {
        let (store, fsm) = module.new_instance()?;
        Ok(GuestFsm {
            module,
            store,
            fsm,
            checkpoint: Checkpoint::Empty,
            journal: Box::default(),
            next_checkpoint_at: JOURNAL_MIN_BYTES,
            events: Vec::new(),
        })
    }

    /// The module this state machine runs.
    pub fn module(&self) -> &GuestModule {
        &self.module
    }

    /// Bytes of linear memory this instance was granted (its memories' sizes).
    pub fn memory_bytes(&self) -> u64 {
        self.store.data().limiter.in_use as u64
    }

    /// The lines the guest logged since the last take (0.2.0 guests only).
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.store.data_mut().context.take_logs()
    }

    /// The changes the last `apply` announced (none if it returned an error or failed).
    pub fn take_events(&mut self) -> Vec<GuestEvent> {
        std::mem::take(&mut self.events)
    }

    /// Whether applying `commands` (in order, as [`GuestFsm::apply`] each) is sure to stay a
    /// call that cannot block its thread and does no work beyond the guest's own: the module
    /// imports no WASI (see [`GuestModule::may_block`]), the rollback journal is in memory, and
    /// recording them falls short of the next checkpoint (a snapshot of the whole state). How
    /// long the guest itself runs is bounded only by its fuel.
    pub fn applies_briefly<'a>(&self, commands: impl Iterator<Item = &'a [u8]>) -> bool {
        if self.module.may_block() || self.journal.is_spilled() {
            return false;
        }
        let recorded: usize = commands.map(Journal::recorded_bytes).sum();
        self.journal.bytes() + recorded <= self.next_checkpoint_at
    }

    /// Applies one committed command of `entry`. `Ok` carries the deterministic outcome
    /// (response or [`CallError`]); `Err` means the state machine could not be restored after a
    /// failure.
    pub fn apply(
        &mut self,
        command: &[u8],
        entry: EntryContext,
    ) -> Result<Outcome<Vec<u8>>, FsmError> {
        let budget = self.module.limits().fuel_per_apply;
        let (result, fuel_used) = call(
            &mut self.store,
            &self.fsm,
            budget,
            (Mode::Apply, entry),
            &|fsm, store| fsm.apply(store, command),
        );
        let result = match result {
            Ok(guest_result) => {
                // Taken before `record`, whose checkpoint is a call of its own. A refused
                // command announces nothing (see `emit` in the WIT).
                let events = self.store.data_mut().context.take_events();
                self.events = if guest_result.is_ok() {
                    events
                } else {
                    Vec::new()
                };
                self.record(command, entry);
                guest_result.map_err(|error| CallError::Guest { error })
            }
            Err(failure) => {
                // What the failed call logged stays: it is often why it failed.
                let logs = self.take_logs();
                self.events.clear();
                self.rebuild()?;
                self.store.data_mut().context.put_back(logs);
                Err(failure)
            }
        };
        Ok(Outcome { result, fuel_used })
    }

    /// Answers a read-only query against the current state, at `read` (the applied entry, with
    /// the read's time).
    pub fn query(
        &mut self,
        request: &[u8],
        read: EntryContext,
    ) -> Result<Outcome<Vec<u8>>, FsmError> {
        let budget = self.module.limits().fuel_per_apply;
        let (result, fuel_used) = call(
            &mut self.store,
            &self.fsm,
            budget,
            (Mode::Query, read),
            &|fsm, store| fsm.query(store, request),
        );
        let result = match result {
            Ok(guest_result) => guest_result.map_err(|error| CallError::Guest { error }),
            Err(failure) => {
                // What the failed call logged stays: it is often why it failed.
                let logs = self.take_logs();
                self.rebuild()?;
                self.store.data_mut().context.put_back(logs);
                Err(failure)
            }
        };
        Ok(Outcome { result, fuel_used })
    }

    /// The guest's full state. Also becomes the rollback checkpoint.
    pub fn snapshot(&mut self) -> Result<Arc<Vec<u8>>, FsmError> {
        let mut state = Vec::new();
        self.snapshot_into(&mut state)?;
        Ok(Arc::new(state))
    }

    /// Appends the guest's full state to `out` (which may hold the head of a snapshot envelope
    /// already, so the state is never copied into one). Also becomes the rollback checkpoint.
    /// On failure `out` is left empty.
    pub fn snapshot_into(&mut self, out: &mut Vec<u8>) -> Result<(), FsmError> {
        let start = out.len();
        match self.write_snapshot(Sink::Memory(std::mem::take(out)))? {
            (Sink::Memory(written), _) => {
                *out = written;
                self.set_checkpoint(|| Checkpoint::copy_of(&out[start..]));
                Ok(())
            }
            (Sink::File(_), _) => Err(FsmError::Snapshot(CallError::Trap {
                message: "internal: the snapshot went to a file".into(),
            })),
        }
    }

    /// Writes the guest's full state to `file` from its current position, which is `offset`
    /// (a snapshot file being built, after its head). That region of the file also becomes the
    /// rollback checkpoint (read back into memory if it is small). Returns the file, positioned
    /// after the state, and the state's length.
    pub fn snapshot_to(
        &mut self,
        file: std::fs::File,
        offset: u64,
    ) -> Result<(std::fs::File, u64), FsmError> {
        let sink = Sink::File(BufWriter::with_capacity(1 << 20, file));
        let (file, len) = match self.write_snapshot(sink)? {
            (Sink::File(writer), len) => (writer.into_inner().map_err(|e| e.into_error()), len),
            (Sink::Memory(_), _) => {
                return Err(FsmError::Snapshot(CallError::Trap {
                    message: "internal: the snapshot went to memory".into(),
                }))
            }
        };
        let written = |e: std::io::Error| {
            FsmError::Snapshot(CallError::Trap {
                message: format!("writing the snapshot: {e}"),
            })
        };
        let file = file.map_err(written)?;
        let region = SnapshotData::File {
            file: Arc::new(file.try_clone().map_err(written)?),
            offset,
            len: len as u64,
        };
        self.set_checkpoint(|| Checkpoint::of(region));
        Ok((file, len as u64))
    }

    /// Takes a new rollback checkpoint. A guest whose last checkpoint was spilled (over
    /// [`SPILL_ABOVE_BYTES`]) writes the new one straight into a scratch file: the host never
    /// holds it in memory.
    fn checkpoint(&mut self) -> Result<(), FsmError> {
        let file = match self.checkpoint.len() > SPILL_ABOVE_BYTES {
            true => scratch_file()
                .map_err(|e| tracing::warn!(error = %e, "cannot spill the rollback checkpoint"))
                .ok(),
            false => None,
        };
        let Some(file) = file else {
            return self.snapshot().map(|_| ());
        };
        let sink = Sink::File(BufWriter::with_capacity(1 << 20, file));
        let checkpoint = match self.write_snapshot(sink)? {
            (Sink::File(writer), len) => {
                let file = writer.into_inner().map_err(|e| {
                    FsmError::Snapshot(CallError::Trap {
                        message: format!("writing the checkpoint: {}", e.error()),
                    })
                })?;
                Checkpoint::spilled(file, len)
            }
            (Sink::Memory(state), _) => Checkpoint::new(Arc::new(state)),
        };
        self.set_checkpoint(|| checkpoint);
        Ok(())
    }

    /// Runs the guest's `snapshot` into `sink`; a failed call is rolled back.
    fn write_snapshot(&mut self, sink: Sink) -> Result<(Sink, usize), FsmError> {
        let budget = self.module.limits().fuel_per_snapshot;
        let sink = std::cell::Cell::new(Some(sink));
        let (result, _) = call(&mut self.store, &self.fsm, budget, IDLE, &|fsm, store| {
            let sink = sink
                .take()
                .ok_or_else(|| wasmtime::Error::msg("snapshot called twice"))?;
            fsm.snapshot(store, sink)
        });
        match result {
            Ok(written) => Ok(written),
            Err(failure) => {
                self.rebuild()?;
                Err(FsmError::Snapshot(failure))
            }
        }
    }

    /// Replaces the whole state with `state` (bytes from some node's [`GuestFsm::snapshot`]).
    /// The restore runs in a fresh instance; on any failure the current state stays as it was.
    pub fn restore(&mut self, state: Arc<Vec<u8>>) -> Result<Outcome<()>, FsmError> {
        self.restore_from(SnapshotData::Bytes(state))
    }

    /// [`GuestFsm::restore`] from wherever the state is: a state in a file (a region of the
    /// snapshot file) is read as the guest takes it, and stays there as the rollback checkpoint.
    pub fn restore_from(&mut self, state: SnapshotData) -> Result<Outcome<()>, FsmError> {
        let (mut store, fsm) = self.module.new_instance()?;
        let budget = self.module.limits().fuel_per_snapshot;
        let (result, fuel_used) = call(&mut store, &fsm, budget, IDLE, &|fsm, store| {
            fsm.restore(store, &state)
        });
        let result = match result {
            Ok(Ok(())) => {
                self.store = store;
                self.fsm = fsm;
                self.set_checkpoint(|| Checkpoint::of(state));
                Ok(())
            }
            Ok(Err(error)) => Err(CallError::Guest { error }),
            Err(failure) => Err(failure),
        };
        Ok(Outcome { result, fuel_used })
    }

    fn record(&mut self, command: &[u8], entry: EntryContext) {
        let recorded = self.journal.push(command, entry);
        if let Err(e) = &recorded {
            tracing::warn!(error = %e, "cannot write the rollback journal; taking a checkpoint");
        }
        if recorded.is_err() || self.journal.bytes() > self.next_checkpoint_at {
            // A failed checkpoint leaves the journal in place; the state is unaffected.
            if let Err(e) = self.checkpoint() {
                self.next_checkpoint_at = self.journal.bytes() + JOURNAL_MAX_BYTES;
                tracing::warn!(error = %e, "checkpoint of the guest state failed");
            }
        }
    }

    /// Replaces the checkpoint with the one `make` builds (after dropping the old one: never
    /// two spilled copies on disk at once, except while a checkpoint streams to its file) and
    /// starts a new journal, spilled beside a spilled checkpoint.
    fn set_checkpoint(&mut self, make: impl FnOnce() -> Checkpoint) {
        self.checkpoint = Checkpoint::Empty;
        self.checkpoint = make();
        let size = self.checkpoint.len();
        self.journal.clear(self.checkpoint.is_spilled());
        self.next_checkpoint_at = match self.journal.is_spilled() {
            true => size.max(JOURNAL_MAX_BYTES),
            false => size.clamp(JOURNAL_MIN_BYTES, JOURNAL_MAX_BYTES),
        };
    }

    /// Drops the (possibly poisoned) instance and rebuilds the state from the checkpoint plus
    /// the journal.
    fn rebuild(&mut self) -> Result<(), FsmError> {
        let (mut store, fsm) = self.module.new_instance()?;
        if let Some(state) = self.checkpoint.state() {
            let budget = self.module.limits().fuel_per_snapshot;
            let (result, _) = call(&mut store, &fsm, budget, IDLE, &|fsm, store| {
                fsm.restore(store, &state)
            });
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(FsmError::Rebuild(format!(
                        "restoring the checkpoint: {}",
                        CallError::Guest { error }
                    )))
                }
                Err(e) => return Err(FsmError::Rebuild(format!("restoring the checkpoint: {e}"))),
            }
        }
        self.journal
            .replay(|i, command, entry| {
                let replay = (Mode::Replay, entry);
                let (result, _) = call(&mut store, &fsm, REPLAY_FUEL, replay, &|fsm, store| {
                    fsm.apply(store, command)
                });
                result
                    .map(|_| ())
                    .map_err(|e| format!("replaying command {i} since the checkpoint: {e}"))
            })
            .map_err(FsmError::Rebuild)?;
        self.store = store;
        self.fsm = fsm;
        Ok(())
    }
}

/// Runs one guest call for `what` with `budget` fuel and classifies a failure. A call into a
/// module that may block (see [`GuestModule::may_block`]) steps out of the async runtime first.
fn call<R>(
    store: &mut Store<StoreState>,
    fsm: &Fsm,
    budget: u64,
    what: For,
    f: Call<'_, R>,
) -> (Result<R, CallError>, u64) {
    store.data_mut().limiter.hit_memory_limit = false;
    store.data_mut().context.begin(what.0, what.1);
    if let Err(e) = store.set_fuel(budget) {
        // Only possible if fuel metering were off, which the engine configuration rules out.
        return (
            Err(CallError::Trap {
                message: format!("cannot set fuel: {e}"),
            }),
            0,
        );
    }
    let result = outside_async(store.data().may_block, || f(fsm, store));
    store.data_mut().log_output();
    let fuel_used = budget.saturating_sub(store.get_fuel().unwrap_or(0));
    let result = result.map_err(|e| {
        if store.data().limiter.hit_memory_limit {
            CallError::MemoryLimit {
                limit_mib: store.data().limiter_limit_mib(),
            }
        } else {
            match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => CallError::OutOfFuel { budget },
                Some(trap) => CallError::Trap {
                    message: trap.to_string(),
                },
                // A host error's text (a guest panic's message among them) may quote guest data.
                None => CallError::Trap {
                    message: bounded(e.root_cause().to_string(), MAX_GUEST_MESSAGE_BYTES),
                },
            }
        }
    });
    (result, fuel_used)
}
