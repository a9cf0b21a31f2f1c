//! Durable Raft storage: the log and vote ([`LogStore`] over the write-ahead log in [`wal`]) and
//! the state machine ([`StateMachine`], the wasm guest plus host metadata, with snapshots on
//! disk).
//!
//! Layout:
//! - `log`, [`wal`]: the log store and its segmented write-ahead log.
//! - `state_machine`: applying entries, snapshots, the state hash; module switches.
//! - `modules`: compiled modules by hash, kept on disk once activated; upgrade checks.
//! - `offload`: the one helper that runs guest calls off the async workers; `pace`: when work
//!   is done on the worker that asked for it instead.
//! - `snapshot`: the snapshot file format; `snapshot_build`: building one in place;
//!   `backup`: the backup file around a snapshot.
//! - `verify`: checking a stopped node's log and snapshot (`host wal verify`).

pub mod backup;
mod log;
mod log_writer;
mod modules;
mod offload;
mod pace;
mod snapshot;
mod snapshot_build;
mod state_machine;
mod verify;
pub mod wal;

pub use log::LogStore;
pub use modules::{ModuleRejected, MODULES_DIR};
pub use offload::{offload, GuestCallError};
pub use snapshot::{verify_envelope, SnapshotError};
pub use state_machine::{
    ChangeEvent, ChangeFeed, Compacted, Cursor, GuestLog, NumberedLine, Retention, Sessions,
    StateMachine, StateMachineStatus, KEPT_GUEST_LINES,
};
pub use verify::{verify, Verified};

/// The openraft instance of a node, over this state machine.
pub type Raft = openraft::Raft<crate::types::TypeConfig, StateMachine>;
