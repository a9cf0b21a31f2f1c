//! Client sessions: a retried write is applied once and answered with its first result, over
//! HTTP (parameters or `Idempotency-Key`) and gRPC, through a follower, across a snapshot and a
//! restart; a stale sequence number or an unknown session is refused, not applied.

mod common;

use common::*;
use guest_kv::schema::Command;
use host::proto::{self, ApplyRequest, PutRequest};
use serde_json::Value;

async fn open_session(node: &Node) -> u64 {
    let resp = http().post(node.url("/v1/sessions")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["client_id"].as_u64().expect("client_id")
}

/// `POST /v1/apply` of an append, in session `client` at `seq`: status and body.
async fn append(node: &Node, client: u64, seq: u64, key: &str, value: &str) -> (u16, Vec<u8>) {
    let command = Command::Append {
        key: key.into(),
        value: value.into(),
    };
    let resp = http()
        .post(node.url(&format!("/v1/apply?client_id={client}&seq={seq}")))
        .body(command.encode())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

async fn value(node: &Node, key: &str) -> String {
    get_value(node, key, "").await.1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_write_applies_once_and_gets_its_first_result() {
    let root = tempfile::tempdir().unwrap();
    let nodes = three_nodes(root.path(), &[]).await;
    let leader = wait_for_leader(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let follower = &nodes[(leader + 1) % 3];

    // Through a follower: the session is opened and the writes made on the leader.
    let client = open_session(follower).await;
    let first = append(follower, client, 1, "log", "a").await;
    assert_eq!(first.0, 200, "{}", String::from_utf8_lossy(&first.1));
    let retried = append(follower, client, 1, "log", "a").await;
    assert_eq!(retried, first, "a retry answers the first result");
    assert_eq!(
        value(follower, "log").await,
        "a",
        "and is not applied again"
    );
    assert_eq!(append(follower, client, 2, "log", "b").await.0, 200);
    assert_eq!(value(follower, "log").await, "ab");

    // An older sequence number is refused, not applied.
    let (code, body) = append(follower, client, 1, "log", "a").await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((code, &body["code"]), (409, &"conflict".into()), "{body}");
    assert_eq!(value(follower, "log").await, "ab");

    // Idempotency-Key, on a put: the retry gets the first answer (prev "ab"), even with
    // another value, and the value stays.
    let put = |v: &'static str| {
        http()
            .put(follower.url("/v1/kv/log"))
            .header("Idempotency-Key", format!("{client}:3"))
            .body(v)
            .send()
    };
    let first: Value = put("x").await.unwrap().json().await.unwrap();
    let again: Value = put("y").await.unwrap().json().await.unwrap();
    assert_eq!(first["prev"], "ab", "{first}");
    assert_eq!(again, first);
    assert_eq!(value(follower, "log").await, "x");

    // gRPC, on the leader.
    let mut grpc = nodes[leader].grpc_client().await;
    let session = Some(proto::Session {
        client_id: client,
        seq: 4,
    });
    let put = || PutRequest {
        key: "log".into(),
        value: "z".into(),
        session,
    };
    let first = grpc.put(put()).await.unwrap().into_inner();
    let again = grpc.put(put()).await.unwrap().into_inner();
    assert_eq!(
        (first.prev.as_deref(), again.prev.as_deref()),
        (Some("x"), Some("x"))
    );

    // A session that was never opened: refused, not applied.
    let (code, body) = append(follower, 999_999, 1, "log", "!").await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (code, &body["code"]),
        (410, &"session_expired".into()),
        "{body}"
    );
    let status = grpc
        .apply(ApplyRequest {
            command: b"{}".to_vec(),
            session: Some(proto::Session {
                client_id: 999_999,
                seq: 1,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let (code, _) = append(follower, client, 0, "log", "!").await;
    assert_eq!(code, 400, "sequence numbers start at 1");
    assert_eq!(value(follower, "log").await, "z");
    wait_for_equal_state(&[&nodes[0], &nodes[1], &nodes[2]]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_survive_a_snapshot_and_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::start(root.path(), "n1", true, &[]);
    wait_for_leader(&[&node]).await;
    let client = open_session(&node).await;
    let first = append(&node, client, 1, "k", "once").await;
    assert_eq!(first.0, 200);
    let resp = http().post(node.url("/v1/snapshot")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    node.restart(false);
    wait_for_leader(&[&node]).await;
    let retried = append(&node, client, 1, "k", "once").await;
    assert_eq!(retried.1, first.1);
    assert_eq!(value(&node, "k").await, "once");
    assert_eq!(node.status().await.unwrap().sessions, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kvclient_retries_a_write_through_a_leader_change_in_its_session() {
    let root = tempfile::tempdir().unwrap();
    let nodes = three_nodes(root.path(), &["--request-timeout-ms", "1000"]).await;
    let leader = wait_for_leader(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let follower = nodes[(leader + 1) % 3].grpc.clone();
    let pid = nodes[leader].pid().to_string();
    let stop = |sig: &str| {
        let sent = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
        assert!(sent.unwrap().success());
    };
    // The leader stops answering: the first attempts time out (an unknown outcome), and the
    // retries, in the same session, land once the others have elected a new leader.
    stop("-STOP");
    let args = [
        "--command",
        "set",
        "--key",
        "k",
        "--val",
        "v",
        "--timeout-ms",
        "3000",
    ];
    let (ok, out, err) = tokio::task::spawn_blocking(move || kvclient(&follower, &args))
        .await
        .unwrap();
    stop("-CONT");
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("retrying"), "{err}");
    let survivor = &nodes[(leader + 1) % 3];
    assert_eq!(value(survivor, "k").await, "v");
}
