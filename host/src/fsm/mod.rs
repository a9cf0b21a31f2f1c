//! The WebAssembly state machine: loads a guest component with wasmtime and runs it
//! deterministically.
//!
//! Every node applies every committed entry through [`GuestFsm::apply`]. Determinism and
//! containment are decided here, identically on every node:
//! - fuel meters every call (a budget per call, from [`GuestLimits`]); running out is the
//!   deterministic [`CallError::OutOfFuel`], never a hang;
//! - one memory cap, enforced by the store's limiter, fails the call with
//!   [`CallError::MemoryLimit`];
//! - NaN canonicalization on, deterministic relaxed SIMD, no threads, a fixed wasm stack size;
//! - the guest gets no clock, randomness, filesystem or network of the node's. A 0.2.0 or 0.3.0 guest
//!   may import the `context`: the entry being applied, its time and random bytes, all derived
//!   from the log, so the same on every node ([`context`]). A guest built against WASI 0.2
//!   (`wasm32-wasip2`, componentize-py, componentize-js) gets a deterministic WASI whose clocks
//!   and random read the same entry, with nothing of the node behind it ([`wasi`]). A guest
//!   importing anything else is refused at load, naming the import;
//! - a call that traps, runs out of fuel or hits the memory cap leaves the state exactly as it
//!   was before that call: the poisoned instance is rebuilt from the last checkpoint (a guest
//!   snapshot) plus a replay of the commands applied since.
//!
//! Layout:
//! - `bindings`: the `bindgen!` calls (one per world version), and conversions out of the
//!   generated types.
//! - `context`: what a 0.2.0 or 0.3.0 guest imports: entry, time, random bytes, log.
//! - `stream`: a 0.3.0 guest's snapshot and restore, in pieces.
//! - `wasi`: deterministic WASI 0.2 for guests built against it.
//! - `module`: engine configuration, loading and validating a component ([`GuestModule`]).
//! - `code_cache`: compiled code kept on disk by module and engine ([`CodeCache`]).
//! - `limiter`: the per-instance store data that enforces the memory cap.
//! - `machine`: one running guest with rollback ([`GuestFsm`]).
//! - `spec`: what a node runs: a wasm guest or the native guest-kv benchmark baseline.
//! - `error`: what callers match on.

mod bindings;
mod checkpoint;
mod code_cache;
pub mod context;
mod error;
mod journal;
mod limiter;
mod machine;
pub mod module;
mod spec;
mod stream;
mod wasi;

pub use crate::config::GuestLimits;
pub use bindings::{Shape, WorldVersion};
pub use checkpoint::spill_checkpoints_in;
pub use code_cache::CodeCache;
pub use context::{EntryContext, GuestEvent, Level, LogLine};
pub use error::{bounded, CallError, FsmError, GuestError, LoadError, MAX_GUEST_MESSAGE_BYTES};
pub use machine::{GuestFsm, Outcome};
pub use module::GuestModule;
pub use spec::{Machine, MachineSpec, NATIVE_GUEST_KV_NAME};
