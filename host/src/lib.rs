//! raftwasm host: one node of a Raft-replicated state machine whose state machine is a
//! WebAssembly component.
//!
//! Layout (each module only imports from those listed before it; `tests/layout.rs` checks that
//! no two modules import each other):
//! - [`malloc`]: glibc's malloc settings for a node, set once at start.
//! - [`config`]: the node's configuration, typed groups with defaults and validation.
//! - [`auth`]: the users file, credentials (passwords, tokens, client certificates) and the
//!   permissions a request's caller holds.
//! - [`failpoints`]: crash-test hooks, compiled in only with the `failpoints` feature.
//! - [`guests`]: the guest components built with this crate (the embedded default, guest-kv).
//! - [`proto`]: the generated gRPC types of both services.
//! - [`fsm`]: loads a guest component with wasmtime and runs it deterministically (fuel, memory
//!   cap, no ambient capabilities, rollback of failed calls).
//! - [`check`]: `host guest check`, a guest run several times over a script to find what would
//!   make replicas part.
//! - [`types`]: openraft's type configuration and node naming.
//! - [`metrics`]: the node's Prometheus registry, one group of families per concern.
//! - [`store`]: durable log and vote (a write-ahead log), the guest state machine, snapshots.
//! - [`network`]: Raft RPC client and the shared pool of gRPC channels.
//! - [`seed`]: logging a new cluster's first module entry.
//! - [`events`]: one log line (with the node's name and term) per election, leader change,
//!   membership change, snapshot and module upgrade; the election counters.
//! - [`tls`]: TLS for the listeners (reloaded when the certificate files change), the node
//!   certificates the `Raft` service admits, and the client side.
//! - [`service`]: every client operation, shared by gRPC and HTTP, split by audience (core,
//!   forwarding, guest-kv calls, membership, leadership transfer, upgrade).
//! - [`grpc`]: the node-to-node `Raft` service and the client-facing `Client` service.
//! - [`http`]: the axum gateway: curl routes and the JSON API.
//! - [`node`]: wiring it all together and serving.
//! - [`restore`]: seeding a new one-node cluster from a backup file.

#![deny(unsafe_code)]

pub mod auth;
pub mod check;
pub mod config;
pub mod events;
pub mod failpoints;
pub mod fsm;
pub mod grpc;
pub mod guests;
pub mod http;
pub mod metrics;
pub mod network;
pub mod node;
pub mod proto;
pub mod restore;
pub mod seed;
pub mod service;
pub mod snapshot_data;
pub mod store;
pub mod tls;
pub mod types;
pub mod wire_bytes;
