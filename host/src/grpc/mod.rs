//! gRPC services on a node's `--address`: [`raft_service`] for cluster members,
//! [`client_service`] for clients. The protocol is `host/proto/raftwasm.proto`; its generated
//! types are in [`crate::proto`]. [`observe`] records every call in the node's metrics.

pub mod client_service;
pub mod coalesce;
pub mod observe;
pub mod raft_service;
