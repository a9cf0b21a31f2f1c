//! Types and stubs generated from `host/proto/*.proto`: the wire format of both gRPC services,
//! shared by the servers ([`crate::grpc`]), node-to-node clients ([`crate::network`]), leader
//! forwarding ([`crate::service`]) and the tools. Generated code only; nothing else lives here.

/// The `raftwasm.v1` package: the `Client` and `Raft` services (`proto/raftwasm.proto`).
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
mod raftwasm {
    tonic::include_proto!("raftwasm.v1");
}

pub use raftwasm::*;

/// Client stubs for the slice of etcd's v3 API that `kvbench` drives (`proto/etcd_kv.proto`).
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
