//! Bounded decoding: what arrives from the network cannot make a node allocate more than its
//! limits allow. A forged length inside a Raft message, a snapshot stream longer than any
//! snapshot this node could hold, and a client message over the gRPC limit are refused with a
//! clear status, and the node goes on serving.

mod common;

use common::*;
use host::proto::raft_client::RaftClient;
use host::proto::{PutRequest, RaftMessage};

async fn raft_client(node: &Node) -> RaftClient<tonic::transport::Channel> {
    RaftClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20)
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_lengths_and_oversized_streams_are_refused() {
    let root = tempfile::tempdir().unwrap();
    // A small guest memory cap and change feed: a snapshot can then be at most 8 MiB of state
    // plus the largest module (96 MiB) plus 1 MiB of changes plus a little framing: 106 MiB.
    let opts = [
        "--guest-memory-mib",
        "8",
        "--watch-history-bytes",
        "1048576",
    ];
    let node = Node::start(root.path(), "solo", true, &opts);
    wait_for_leader(&[&node]).await;
    let mut raft = raft_client(&node).await;

    // A Raft message whose first length field claims 2^60 bytes.
    let mut forged = (1u64 << 60).to_le_bytes().to_vec();
    forged.extend_from_slice(&[0xAB; 64]);
    let err = raft
        .append_entries(RaftMessage {
            payload: forged.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = raft
        .vote(RaftMessage { payload: forged })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // A snapshot stream that goes on past what this node could ever hold.
    let header = host::network::SnapshotHeader {
        vote: host::types::Vote::new(1, host::types::node_id("elsewhere")),
        meta: Default::default(),
    };
    let mut messages = vec![RaftMessage {
        payload: bincode::serialize(&header).unwrap(),
    }];
    messages.extend((0..112).map(|_| RaftMessage {
        payload: vec![0; 1 << 20],
    }));
    let err = raft
        .install_snapshot(futures::stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("larger than"), "{err:?}");

    // A client message over the gRPC limit for client calls (the largest command or module),
    // refused by its length before it is read.
    let mut client = node
        .grpc_client()
        .await
        .max_encoding_message_size(128 << 20);
    let err = client
        .put(PutRequest {
            session: None,
            key: "k".into(),
            value: "v".repeat(100 << 20),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");

    // Still serving.
    let resp = http().get(node.url("/Put/k/v")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
