//! raftwasm host: one node of a Raft-replicated state machine whose state machine is a
//! WebAssembly component.
//!
//! Layout:
//! - [`fsm`]: loads a guest component with wasmtime and runs it deterministically (fuel, memory
//!   cap, no ambient capabilities, rollback of failed calls).
//! - [`guests`]: the guest components built with this crate (the embedded default, guest-kv).

#![deny(unsafe_code)]

pub mod fsm;
pub mod guests;
