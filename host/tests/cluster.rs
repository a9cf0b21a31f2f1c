//! Cluster tests: real `host` processes forming a 3-node cluster on 127.0.0.1, driven through
//! the HTTP gateway and the gRPC API.

mod common;

use common::{
    add_voter, get_json, get_value, http, put_many, seg, three_nodes, wait_for,
    wait_for_equal_state, wait_for_leader, Node,
};
use host::failpoints::{ENV as FAILPOINTS, WAL_SYNC_HANGS_WHEN};
use host::proto::{self, Consistency};
use host::service::ServiceError;

const AWKWARD: &[(&str, &str)] = &[
    ("key_with_underscores", "value_with_underscores"),
    ("slash/in/key", "slash/in/value"),
    ("spaces in key", "spaces in value"),
    ("ключ ✓ 鍵", "значение 🎉"),
    ("empty-value", ""),
];

async fn http_get(node: &Node, key: &str) -> (u16, String) {
    common::get_value(node, key, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_replicate_forward_and_round_trip_awkward_keys() {
    let root = tempfile::tempdir().unwrap();
    let nodes = three_nodes(root.path(), &[]).await;
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let follower = (leader + 1) % 3;

    // Put on the leader through the original route; linearizable Get on every node.
    let resp = http()
        .get(nodes[leader].url("/Put/k1/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for n in &nodes {
        assert_eq!(
            http_get(n, "k1").await,
            (200, "v1".to_string()),
            "{}",
            n.name
        );
    }

    // Writes through a follower are forwarded, over both gateways.
    for (i, (k, v)) in AWKWARD.iter().enumerate() {
        let via = &nodes[(follower + i) % 3];
        if i % 2 == 0 {
            let resp = http()
                .get(via.url(&format!("/Put/{}/{}", seg(k), seg(v))))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{k}: {}", resp.text().await.unwrap());
        } else {
            let mut c = via.grpc_client().await;
            c.put(proto::PutRequest {
                session: None,
                key: k.to_string(),
                value: v.to_string(),
            })
            .await
            .unwrap();
        }
    }
    for n in &nodes {
        let mut c = n.grpc_client().await;
        for (k, v) in AWKWARD {
            assert_eq!(http_get(n, k).await, (200, v.to_string()), "{} {k}", n.name);
            let got = c
                .get(proto::GetRequest {
                    key: k.to_string(),
                    consistency: Consistency::Linearizable.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got.value, *v, "{} {k}", n.name);
            // The JSON API: keys with '/' go in the path as they are.
            let url = n.url(&format!(
                "/v1/kv/{}",
                k.split('/').map(seg).collect::<Vec<_>>().join("/")
            ));
            let body: serde_json::Value =
                http().get(url).send().await.unwrap().json().await.unwrap();
            assert_eq!(body["value"], *v, "{} {k}", n.name);
        }
    }

    // JSON API write through a follower, then a scan and a stale read.
    let resp = http()
        .put(nodes[follower].url("/v1/kv/dir/a"))
        .body("A")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: serde_json::Value = get_json(&nodes[leader].url("/v1/kv?prefix=dir/&limit=10")).await;
    assert_eq!(page["items"][0]["key"], "dir/a");
    let stale = nodes[follower].url("/v1/kv/dir/a?consistency=stale");
    wait_for("stale read to catch up", || async {
        let body: serde_json::Value = http().get(&stale).send().await.ok()?.json().await.ok()?;
        (body["value"] == "A").then_some(())
    })
    .await;

    // A missing key is a 404, not "".
    let (code, body) = http_get(&nodes[follower], "never-set").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not found"), "{body}");
    let mut c = nodes[follower].grpc_client().await;
    let err = c
        .get(proto::GetRequest {
            key: "never-set".into(),
            consistency: Consistency::Linearizable.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_keeps_acknowledged_writes() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(root.path(), &["--request-timeout-ms", "2000"]).await;
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let mut acked = Vec::new();
    for i in 0..30 {
        let via = &nodes[i % 3];
        let resp = http()
            .put(via.url(&format!("/v1/kv/acked-{i}")))
            .body(format!("value-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        acked.push(i);
    }
    let old_leader = nodes[leader].name.clone();
    nodes[leader].kill();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.name != old_leader).collect();
    let new_leader = wait_for("a new leader", || async {
        let s = survivors[0].status().await?;
        let l = s.leader_id?;
        (l != old_leader && s.state != "Candidate").then_some(l)
    })
    .await;
    assert_ne!(new_leader, old_leader);
    for n in &survivors {
        for i in &acked {
            let (code, value) = http_get(n, &format!("acked-{i}")).await;
            assert_eq!((code, value), (200, format!("value-{i}")), "{}", n.name);
        }
    }
    // Writes continue with two of three nodes.
    for n in &survivors {
        let resp = http()
            .get(n.url(&format!("/Put/after-{}/ok", n.name)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    // With a second node gone there is no quorum: a clear error, and the node keeps serving.
    // A follower or a leader past its lease refuses the write (503 `unavailable`); a leader
    // within its lease proposes it and cannot commit it (504 `unknown_outcome`).
    let last = survivors[1].name.clone();
    let idx = nodes
        .iter()
        .position(|n| n.name == survivors[0].name)
        .unwrap();
    nodes[idx].kill();
    let last = nodes.iter().find(|n| n.name == last).unwrap();
    let resp = http().get(last.url("/Put/no/quorum")).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    let expected = match status {
        503 => "unavailable",
        504 => "unknown_outcome",
        other => panic!("status {other}: {body}"),
    };
    assert_eq!(body["code"], expected, "{body}");
    let resp = http().get(last.url("/Monitor")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http()
        .get(last.url("/Get/acked-1?consistency=stale"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "value-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_every_node_recovers_data_without_rebootstrap() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(root.path(), &[]).await;
    for i in 0..20 {
        let resp = http()
            .get(nodes[i % 3].url(&format!("/Put/r{i}/v{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let before = nodes[0].status().await.unwrap();
    for n in nodes.iter_mut() {
        n.kill();
    }
    // node1 is restarted with --bs again: it must not re-initialize.
    for (i, n) in nodes.iter_mut().enumerate() {
        n.restart(i == 0);
    }
    wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    for n in &nodes {
        let s = n.status().await.unwrap();
        assert_eq!(s.members.len(), 3, "{}: {s:?}", n.name);
        assert!(s.term >= before.term);
        for i in 0..20 {
            assert_eq!(http_get(n, &format!("r{i}")).await, (200, format!("v{i}")));
        }
    }
    let resp = http()
        .get(nodes[2].url("/Put/after-restart/yes"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_the_node_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::start(
        root.path(),
        "solo",
        true,
        &[
            "--max-value-bytes",
            "1024",
            "--max-body-bytes",
            "4096",
            "--catch-up-timeout-ms",
            "2000",
        ],
    );
    wait_for_leader(&[&node]).await;
    let client = http();
    let check = |resp: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(resp.status().as_u16(), status);
        let body: serde_json::Value = resp.json().await.expect("JSON error body");
        assert_eq!(body["code"], code, "{body}");
        assert!(!body["error"].as_str().unwrap_or("").is_empty(), "{body}");
        assert!(!body["message"].as_str().unwrap_or("").is_empty(), "{body}");
    };

    let resp = client
        .post(node.url("/v1/cluster/nodes"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    check(resp, 400, "invalid_input").await;

    let resp = client
        .put(node.url("/v1/kv/big"))
        .body("x".repeat(2000))
        .send()
        .await
        .unwrap();
    check(resp, 413, "too_large").await;
    let resp = client
        .put(node.url("/v1/kv/huge"))
        .body("x".repeat(10_000))
        .send()
        .await
        .unwrap();
    check(resp, 413, "too_large").await;

    let resp = client.get(node.url("/No/Such/Route")).send().await.unwrap();
    check(resp, 404, "not_found").await;

    let resp = client
        .get(node.url("/AddVoter/127.0.0.1:1/ghost"))
        .send()
        .await
        .unwrap();
    check(resp, 503, "unavailable").await;
    let resp = client
        .get(node.url("/AddVoter/no-port/ghost"))
        .send()
        .await
        .unwrap();
    check(resp, 400, "invalid_input").await;

    let resp = client
        .post(node.url("/v1/apply"))
        .body("not a guest-kv command")
        .send()
        .await
        .unwrap();
    check(resp, 400, "guest").await;
    let resp = client
        .get(node.url("/v1/kv?limit=abc"))
        .send()
        .await
        .unwrap();
    check(resp, 400, "invalid_input").await;

    // gRPC: a clear status with the error in it.
    let mut c = node.grpc_client().await;
    let err = c
        .put(proto::PutRequest {
            session: None,
            key: String::new(),
            value: "v".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(matches!(
        ServiceError::from_status(&err),
        ServiceError::InvalidInput { .. }
    ));

    // Still serving, and the membership is unchanged (no half-added ghost).
    let resp = client
        .get(node.url("/Put/still/alive"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(http_get(&node, "still").await, (200, "alive".to_string()));
    let s = node.status().await.unwrap();
    assert_eq!(s.members.len(), 1, "{s:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kvclient_watch_and_remove_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = three_nodes(root.path(), &[]).await;
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let follower = &nodes[(leader + 1) % 3];
    let kvclient = |args: &[&str]| common::kvclient(&follower.grpc, args);
    let (ok, out, err) = kvclient(&["--command", "set", "--key", "a_b c", "--val", "d/e f"]);
    assert!(ok, "{out} {err}");
    let (ok, out, _) = kvclient(&["--command", "get", "--key", "a_b c"]);
    assert!(ok);
    assert_eq!(out, "d/e f");
    // Exit status: 0 found, 1 not found, 2 any other error.
    let exit = |args: &[&str]| common::kvclient_exit(&follower.grpc, args);
    let (code, _, err) = exit(&["--command", "get", "--key", "missing"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = exit(&["--command", "delete", "--key", "missing"]);
    assert_eq!(code, Some(1), "{err}");
    let (code, _, err) = exit(&["--command", "get", "--key", ""]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = common::kvclient_exit("127.0.0.1:1", &["--command", "status"]);
    assert_eq!(code, Some(2), "{err}");

    // scan, apply and query: the guest's own JSON, one line each.
    for i in 0..3 {
        let (ok, _, err) =
            kvclient(&["--command", "set", "--key", &format!("p/{i}"), "--val", "x"]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = kvclient(&["--command", "scan", "--prefix", "p/", "--limit", "2"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let scanned: host::service::ScanResponse = serde_json::from_str(&out).unwrap();
    let keys: Vec<&str> = scanned.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!((keys, scanned.more), (vec!["p/0", "p/1"], true));
    let command = r#"{"op":"append","key":"p/0","value":"yz"}"#;
    let (ok, out, err) = kvclient(&["--command", "apply", "--data", command]);
    assert!(ok, "{err}");
    assert_eq!(out, r#"{"len":3}"#);
    let (ok, out, err) = kvclient(&[
        "--command",
        "query",
        "--data",
        r#"{"op":"get","key":"p/0"}"#,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, r#"{"value":"xyz"}"#);
    let (code, _, err) = exit(&["--command", "apply", "--data", "not json"]);
    assert_eq!(code, Some(2), "{err}");

    // Watch the leader's view while a follower-routed RemoveNode takes the third node out.
    let mut watch = nodes[leader]
        .grpc_client()
        .await
        .watch(proto::MonitorRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.members.len(), 3);
    let victim = nodes
        .iter()
        .find(|n| n.name != nodes[leader].name && n.name != follower.name)
        .unwrap();
    let (ok, out, err) = kvclient(&["--command", "remove", "--id", &victim.name]);
    assert!(ok, "{out} {err}");
    // The stream ends the wait: each message is a change; stop at the first with two members.
    let seen = tokio::time::timeout(common::DEADLINE, async {
        loop {
            let s = watch.message().await.unwrap().expect("watch stream open");
            if s.members.len() == 2 {
                return s;
            }
        }
    })
    .await
    .expect("watch shows two members");
    assert!(seen.members.iter().all(|m| m.id != victim.name));
    let (ok, out, _) = kvclient(&["--command", "status"]);
    assert!(ok);
    // Not a terminal: one line of JSON.
    assert_eq!(out.lines().count(), 1, "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 2, "{status}");
    // Removing a non-member is a clear error.
    let (ok, _, err) = kvclient(&["--command", "remove", "--id", "nobody"]);
    assert!(!ok);
    assert!(err.contains("not a member"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn native_benchmark_baseline_serves_the_same_api() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::start(root.path(), "native", true, &["--native-fsm"]);
    wait_for_leader(&[&node]).await;
    let resp = http().get(node.url("/Put/k_1/v%201")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(http_get(&node, "k_1").await, (200, "v 1".to_string()));
    let s = node.status().await.unwrap();
    assert_eq!(s.fsm_module_size, 0, "{s:?}");
    let resp = http()
        .post(node.url("/v1/apply"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_guest_runs_through_the_same_flag_and_api() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::start(
        root.path(),
        "bank",
        true,
        &["--fsm", env!("RAFTWASM_BANK_WASM")],
    );
    wait_for_leader(&[&node]).await;
    let client = http();
    for cmd in ["open alice 100", "open bob 5", "transfer alice bob 30"] {
        let resp = client
            .post(node.url("/v1/apply"))
            .body(cmd)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{cmd}: {}", resp.text().await.unwrap());
    }
    // The guest's own rule refuses an overdraft: a 409 with the guest's message.
    let resp = client
        .post(node.url("/v1/apply"))
        .body("transfer bob alice 1000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("cannot send"),
        "{body}"
    );
    let resp = client
        .post(node.url("/v1/query"))
        .body("balance bob")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "35");
    let resp = client
        .post(node.url("/v1/query"))
        .body("audit")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok 105 2");
    let s = node.status().await.unwrap();
    assert!(
        s.fsm_module_size > 0 && s.fsm_module_hash.len() == 64,
        "{s:?}"
    );
}

/// Runs `kvbench` for a moment; returns its JSON summary line.
fn kvbench(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args([
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--clients",
            "8",
            "--connections",
            "2",
        ])
        .args(args)
        .output()
        .expect("run kvbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a JSON last line")
}

#[tokio::test(flavor = "multi_thread")]
async fn kvbench_loads_every_node_and_its_writes_land() {
    let root = tempfile::tempdir().unwrap();
    let nodes = three_nodes(root.path(), &[]).await;
    // Clients spread over all three nodes: followers forward the puts to the leader.
    let endpoints = nodes
        .iter()
        .map(|n| n.grpc.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let base = [
        "--endpoints",
        &endpoints,
        "--keyspace",
        "40",
        "--value-size",
        "32",
    ];

    let put = kvbench(&[&base[..], &["--op", "put", "--preload"]].concat());
    assert_eq!(put["errors"], 0, "{put}");
    assert!(put["ops_per_sec"].as_f64().unwrap() > 0.0, "{put}");
    let get = kvbench(&[&base[..], &["--op", "get"]].concat());
    assert_eq!(get["errors"], 0, "{get}");
    assert!(get["ops_per_sec"].as_f64().unwrap() > 0.0, "{get}");
    // In client sessions: one per client, each numbering its puts.
    let before = nodes[0].status().await.unwrap().sessions;
    let sessions = ["--op", "put", "--sessions", "--retries", "3"];
    let put = kvbench(&[&base[..], &sessions[..]].concat());
    assert_eq!(
        (&put["errors"], &put["sessions"]),
        (&0.into(), &true.into()),
        "{put}"
    );
    assert!(put["ops_per_sec"].as_f64().unwrap() > 0.0, "{put}");
    let after = nodes[0].status().await.unwrap().sessions;
    assert_eq!(after - before, 8, "one session per client");

    // Preloaded keys are 8 digits; every node ends with the same state.
    common::wait_for_equal_state(&nodes.iter().collect::<Vec<_>>()).await;
    for n in &nodes {
        assert_eq!(http_get(n, "00000039").await, (200, "v".repeat(32)));
    }
}

/// A leader whose disk stops answering keeps replicating what it was given: the followers
/// persist those entries and commit them, while the leader's copies wait in memory and die
/// with it. Restarted, it must not lead again in the same term (openraft's leader restore):
/// it would write different entries at the indexes the followers already hold, and replicas
/// would part.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_lost_unsynced_entries_does_not_lead_again_in_its_term() {
    let root = common::TestDir::new();
    let hang = root.path().join("disk-stops");
    let armed = format!("{}={}", WAL_SYNC_HANGS_WHEN, hang.display());
    let n1 = Node::start_with_env(root.path(), "node1", true, &[], &[(FAILPOINTS, &armed)]);
    let n2 = Node::start(root.path(), "node2", false, &[]);
    let n3 = Node::start(root.path(), "node3", false, &[]);
    wait_for_leader(&[&n1]).await;
    add_voter(&n1, &n2).await;
    add_voter(&n1, &n3).await;
    let mut nodes = vec![n1, n2, n3];
    assert_eq!(put_many(&nodes[0], 0..50, 8).await.len(), 50);
    let term = nodes[0].status().await.unwrap().term;

    // node1's fsync hangs from here on; the followers may still take and commit its entries.
    // Killed and restarted at once, before the followers would miss it.
    std::fs::write(&hang, b"").unwrap();
    let burst = put_many(&nodes[0], 50..60, 10);
    let mut acked = tokio::time::timeout(std::time::Duration::from_millis(300), burst)
        .await
        .unwrap_or_default();
    std::fs::remove_file(&hang).unwrap();
    nodes[0].kill();
    nodes[0].restart(false);

    acked.extend(put_many(&nodes[0], 100..150, 8).await);
    acked.extend(0..50);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for_leader(&all).await;
    let state = wait_for_equal_state(&all).await;
    assert!(
        state.term > term,
        "term {} after the restart, {term} before",
        state.term
    );
    for n in &nodes {
        for i in &acked {
            let (code, _) = get_value(n, &format!("key{i:06}"), "consistency=stale").await;
            assert_eq!(code, 200, "{} lost acknowledged key{i:06}", n.name);
        }
    }
}
