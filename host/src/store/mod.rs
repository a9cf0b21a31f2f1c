//! Durable Raft storage: the log and vote ([`LogStore`] over the write-ahead log in [`wal`]) and
//! the state machine ([`StateMachine`], the wasm guest plus host metadata, with snapshots on
//! disk).

// openraft's trait methods return its large `StorageError`; our helpers return the same type
// so `?` flows through unchanged, as openraft's own examples do.
#![allow(clippy::result_large_err)]

mod log;
mod snapshot;
mod state_machine;
pub mod wal;

pub use log::LogStore;
pub use state_machine::{StateMachine, StateMachineStatus};
