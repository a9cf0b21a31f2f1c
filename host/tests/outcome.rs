//! Whether a failed write is definite: one that certainly did not take effect answers
//! `unavailable` (HTTP 503, gRPC UNAVAILABLE), one that may have answers `unknown_outcome` (HTTP
//! 504, gRPC DEADLINE_EXCEEDED when its time ran out, else UNKNOWN), both with the code in the
//! JSON body or status details; and a transport failure before the request left is told apart
//! from one after.

mod common;

use common::*;
use host::proto::client_client::ClientClient;
use host::proto::PutRequest;
use host::service::{never_sent, ServiceError};
use tokio::io::AsyncReadExt;

fn signal(node: &Node, which: &str) {
    assert_ne!(node.pid(), 0, "{} is not running", node.name);
    let sent = std::process::Command::new("kill")
        .args([which, &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Whether every thread of `node`'s process is stopped (state `T` in `/proc`).
fn stopped(node: &Node) -> bool {
    let tasks = format!("/proc/{}/task", node.pid());
    std::fs::read_dir(tasks).unwrap().all(|t| {
        let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
        // The state follows the command name in parentheses.
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('T'))
    })
}

async fn http_put(node: &Node, key: &str) -> (u16, serde_json::Value) {
    let resp = http()
        .get(node.url(&format!("/Put/{key}/v")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_proposed_without_a_quorum_is_unknown_and_one_refused_is_unavailable() {
    let root = tempfile::tempdir().unwrap();
    let nodes = three_nodes(root.path(), &["--request-timeout-ms", "1500"]).await;
    let leader = &nodes[wait_for_leader(&[&nodes[0], &nodes[1], &nodes[2]]).await];
    let followers: Vec<&Node> = nodes.iter().filter(|n| n.name != leader.name).collect();
    let leader_name = leader.name.clone();
    let mut grpc = leader.grpc_client().await;
    for f in &followers {
        signal(f, "-STOP");
    }
    wait_for("the followers to stop", || async {
        followers.iter().all(|f| stopped(f)).then_some(())
    })
    .await;

    // Within its lease the leader still proposes: the writes reach its log and cannot commit.
    let put = PutRequest {
        session: None,
        key: "grpc-k".into(),
        value: "v".into(),
    };
    let ((code, body), status) = tokio::join!(http_put(leader, "http-k"), grpc.put(put));
    assert_eq!(
        (code, &body["code"]),
        (504, &"unknown_outcome".into()),
        "{body}"
    );
    let status = status.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(matches!(
        ServiceError::from_status(&status),
        ServiceError::UnknownOutcome {
            timed_out: true,
            ..
        }
    ));

    // With the leader gone and no quorum left, a follower cannot place the write anywhere:
    // it never reaches a log, and says so.
    let mut nodes = nodes;
    let at = nodes.iter().position(|n| n.name == leader_name).unwrap();
    nodes[at].kill();
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.pid() != 0).collect();
    signal(rest[0], "-CONT");
    let (code, body) = http_put(rest[0], "refused").await;
    assert_eq!(
        (code, &body["code"]),
        (503, &"unavailable".into()),
        "{body}"
    );
    let status = rest[0]
        .grpc_client()
        .await
        .put(PutRequest {
            session: None,
            key: "refused".into(),
            value: "v".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(ServiceError::from_status(&status).retry_is_safe());
    signal(rest[1], "-CONT");
}

#[tokio::test]
async fn a_transport_failure_before_sending_is_told_apart_from_one_after() {
    let put = || PutRequest {
        session: None,
        key: "k".into(),
        value: "v".into(),
    };
    // Nothing listens: the connection is refused and the request never left.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let status = ClientClient::new(channel).put(put()).await.unwrap_err();
    assert!(never_sent(&status), "{status:?}");

    // Something accepts the connection, reads the request and hangs up without an answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let status = ClientClient::new(channel).put(put()).await.unwrap_err();
    assert!(!never_sent(&status), "{status:?}");
}
