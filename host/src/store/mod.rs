//! Durable Raft storage: the log and vote ([`LogStore`] over the write-ahead log in [`wal`]) and
//! the state machine ([`StateMachine`], the wasm guest plus host metadata, with snapshots on
//! disk).

mod log;
mod snapshot;
mod state_machine;
pub mod wal;

pub use log::LogStore;
pub use state_machine::{StateMachine, StateMachineStatus};
