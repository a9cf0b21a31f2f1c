//! raftwasm host: one node of a Raft-replicated state machine whose state machine is a
//! WebAssembly component.
//!
//! Layout:
//! - [`fsm`]: loads a guest component with wasmtime and runs it deterministically (fuel, memory
//!   cap, no ambient capabilities, rollback of failed calls).
//! - [`types`]: openraft's type configuration and node naming.
//! - [`store`]: durable log and vote (a write-ahead log), the guest state machine, snapshots.
//! - [`network`]: Raft RPC client and the shared pool of gRPC channels.
//! - [`grpc`]: the node-to-node `Raft` service and the client-facing `Client` service.
//! - [`service`]: every client operation, shared by gRPC and HTTP (forwarding, read index).
//! - [`http`]: the axum gateway: curl routes and the JSON API.
//! - [`node`]: wiring it all together and serving.
//! - [`guests`]: the guest components built with this crate (the embedded default, guest-kv).

#![deny(unsafe_code)]

pub mod fsm;
pub mod grpc;
pub mod guests;
pub mod http;
pub mod network;
pub mod node;
pub mod service;
pub mod store;
pub mod types;
