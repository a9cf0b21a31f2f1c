//! The API's contract across its two doors and its start-up: HTTP and gRPC answer the same
//! request the same way, every HTTP error has one JSON shape, the banner names the module that
//! really runs, nodes can listen on every interface and advertise a reachable name, and a long
//! guest call (a state hash over a large state) does not stall writes on the same node.

mod common;

use common::*;
use host::proto;

#[tokio::test(flavor = "multi_thread")]
async fn http_and_grpc_answer_alike() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::start(root.path(), "solo", true, &[]);
    wait_for_leader(&[&node]).await;
    let client = http();

    // Deleting a missing key succeeds with deleted: false, on both doors (etcd's deleted: 0).
    for path in ["/v1/kv/missing", "/Delete/missing"] {
        let req = if path.starts_with("/v1") {
            client.delete(node.url(path))
        } else {
            client.get(node.url(path))
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["deleted"], false, "{path}: {body}");
        assert!(body["log_index"].as_u64().unwrap() > 0, "{body}");
    }
    let mut grpc = node.grpc_client().await;
    let reply = grpc
        .delete(proto::DeleteRequest {
            session: None,
            key: "missing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.deleted);

    // An empty scan parameter means the same as none, on both doors.
    for key in ["a/1", "b/1", "c/1"] {
        let resp = client.put(node.url(&format!("/v1/kv/{key}"))).body("v");
        assert_eq!(resp.send().await.unwrap().status(), 200);
    }
    let resp = client
        .get(node.url("/v1/kv?prefix=&start=&end="))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: host::service::ScanResponse = resp.json().await.unwrap();
    let over_http: Vec<String> = page.items.into_iter().map(|kv| kv.key).collect();
    let over_grpc: Vec<String> = grpc
        .scan(proto::ScanRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(over_http, ["a/1", "b/1", "c/1"]);
    assert_eq!(over_http, over_grpc);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_http_error_has_one_json_shape() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::start(root.path(), "solo", true, &["--max-body-bytes", "2097152"]);
    wait_for_leader(&[&node]).await;
    // A client each: after a 413 the server closes the connection with the body unread.
    let client = http;
    let requests = [
        (client().get(node.url("/No/Such/Route")), 404, "not_found"),
        (
            client().delete(node.url("/v1/status")),
            405,
            "method_not_allowed",
        ),
        (client().post(node.url("/Get/k")), 405, "method_not_allowed"),
        (client().get(node.url("/Get/absent")), 404, "not_found"),
        (
            client()
                .post(node.url("/v1/apply"))
                .body("not a guest-kv command"),
            400,
            "guest",
        ),
        (
            client()
                .put(node.url("/v1/kv/big"))
                .body("x".repeat(3 << 20)),
            413,
            "too_large",
        ),
        (
            client()
                .post(node.url("/v1/cluster/nodes"))
                .body("{not json"),
            400,
            "invalid_input",
        ),
    ];
    for (request, status, code) in requests {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{code}");
        let body: serde_json::Value = resp.json().await.expect("a JSON error body");
        assert_eq!(body["code"], code, "{body}");
        for field in ["error", "message"] {
            let text = body[field].as_str().unwrap_or("");
            assert!(!text.is_empty(), "{field} missing: {body}");
        }
    }

    // A JSON route reads its body whatever the Content-Type (curl -d sends form encoding).
    let resp = client()
        .post(node.url("/v1/cluster/leader"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"id":"solo"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_never_send_a_large_input_back() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::start(root.path(), "solo", true, &[]);
    wait_for_leader(&[&node]).await;
    let big = "x".repeat(10_000);
    let client = http();
    // A guest's parser quotes the bad input (guest-kv names the unknown `op`), the gateway's
    // JSON parser names the unknown field, a 404 names the path.
    let requests = [
        client
            .post(node.url("/v1/apply"))
            .body(format!(r#"{{"op":"{big}"}}"#)),
        client
            .post(node.url("/v1/cluster/nodes"))
            .body(format!(r#"{{"{big}":1}}"#)),
        client.get(node.url(&format!("/No/{big}"))),
    ];
    for request in requests {
        let resp = request.send().await.unwrap();
        assert!(resp.status().is_client_error());
        let body = resp.text().await.unwrap();
        assert!(body.len() < 2048, "{} bytes: {}", body.len(), &body[..300]);
        assert!(body.contains("more bytes not shown"), "{body}");
    }
    let mut grpc = node.grpc_client().await;
    let err = grpc
        .apply(proto::ApplyRequest {
            session: None,
            command: format!(r#"{{"op":"{big}"}}"#).into_bytes(),
        })
        .await
        .unwrap_err();
    assert!(err.message().len() < 1024, "{}", err.message().len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_another_fsm_names_the_module_it_runs() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::start(root.path(), "solo", true, &[]);
    wait_for_leader(&[&node]).await;
    let resp = http().get(node.url("/Put/k/v")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let running = node.status().await.unwrap().fsm_module_hash;
    assert!(node.banner.contains(&running[..12]), "{}", node.banner);

    node.set_extra(&["--fsm", env!("RAFTWASM_BANK_WASM")]);
    node.restart(false);
    // The data dir's module (guest-kv) still runs, and the first line says so.
    assert!(node.banner.contains(&running[..12]), "{}", node.banner);
    assert!(node.banner.contains("from the data dir"), "{}", node.banner);
    assert!(!node.banner.contains("bank"), "{}", node.banner);
    wait_for_leader(&[&node]).await;
    assert_eq!(get_value(&node, "k", "").await, (200, "v".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_listening_on_every_interface_advertise_reachable_names() {
    let root = tempfile::tempdir().unwrap();
    let start = |name: &str, host: &str, bootstrap: bool| {
        let advertise = format!("{host}:0");
        Node::start_bound(
            root.path(),
            name,
            bootstrap,
            &["--advertise-address", &advertise, "--insecure"],
            "0.0.0.0:0",
        )
    };
    let n1 = start("node1", "127.0.0.2", true);
    let n2 = start("node2", "127.0.0.3", false);
    let n3 = start("node3", "127.0.0.4", false);
    for (n, host) in [
        (&n1, "127.0.0.2:"),
        (&n2, "127.0.0.3:"),
        (&n3, "127.0.0.4:"),
    ] {
        assert!(n.grpc.starts_with(host), "{}", n.banner);
    }
    wait_for_leader(&[&n1]).await;
    add_voter(&n1, &n2).await;
    add_voter(&n1, &n3).await;
    let nodes = [&n1, &n2, &n3];
    wait_for_leader(&nodes).await;
    // Writes through a follower are forwarded to the leader's advertised address, and every
    // node's membership lists the advertised names.
    let resp = http().get(n3.url("/Put/k/v")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(get_value(&n2, "k", "").await, (200, "v".to_string()));
    let members = n2.status().await.unwrap().members;
    let mut addresses: Vec<String> = members.into_iter().map(|m| m.address).collect();
    addresses.sort();
    let expected: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    assert_eq!(addresses, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_snapshot_stream_is_refused_and_the_node_keeps_running() {
    use host::network::SnapshotHeader;
    use host::proto::{raft_client::RaftClient, RaftMessage};
    let root = tempfile::tempdir().unwrap();
    let node = Node::start(root.path(), "solo", true, &[]);
    wait_for_leader(&[&node]).await;
    // A header and then nothing: what a receiver sees when the sender cancels the stream.
    let header = SnapshotHeader {
        vote: host::types::Vote::new_committed(1, 1),
        meta: host::types::SnapshotMeta::default(),
    };
    let messages = vec![RaftMessage {
        payload: bincode::serialize(&header).unwrap(),
    }];
    let mut client = RaftClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap();
    let err = client
        .install_snapshot(futures::stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("refusing a snapshot"), "{err}");
    let resp = http()
        .get(node.url("/Put/still/alive"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(node.status().await.unwrap().state, "Leader");
}
