//! chaos: a Jepsen-style fault-injection suite for raftwasm.
//!
//! Real `host` processes run in their own network namespaces (set up by `chaos/run.sh`);
//! clients in the root namespace run list-append transactions against every node while a
//! seeded nemesis partitions the network, kills, pauses and re-adds nodes. The recorded history
//! is checked by adya (Elle's method) for strict serializability, then every acknowledged append
//! must be in the final state and, once, in order, in every node's change feed, and every replica
//! must reach the same state hash.
//!
//! Layout:
//! - [`history`]: the recorded operations and their JSON-lines form.
//! - [`workload`]: key choice, transaction generation, and the client loop.
//! - [`retry`]: clients that retry writes with an unknown outcome, in a session or without.
//! - [`secure`]: certificates and a users file for a run with TLS and authentication on.
//! - [`cluster`]: node processes and the gRPC calls the suite makes on them.
//! - [`net`]: nftables partitions inside the namespaces.
//! - [`nemesis`]: the fault schedule.
//! - [`upgrade`]: the live guest upgrade sent during the faults.
//! - [`feed`]: a watcher on each node, following the change feed through the faults.
//! - [`check`]: the verdicts.

pub mod check;
pub mod cluster;
pub mod feed;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod retry;
pub mod secure;
pub mod upgrade;
pub mod workload;
