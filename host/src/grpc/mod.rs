//! gRPC services on a node's `--address`: [`raft_service`] for cluster members,
//! [`client_service`] for clients. The protocol is `host/proto/raftwasm.proto`.

pub mod client_service;
pub mod coalesce;
pub mod raft_service;

/// Types and stubs generated from `proto/raftwasm.proto`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod proto {
    tonic::include_proto!("raftwasm.v1");
}

/// Client stubs for the slice of etcd's v3 API that `kvbench` drives (`proto/etcd_kv.proto`).
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
