//! Guests written on the SDK (`raftwasm-guest`), on real clusters: the counter of the README,
//! and the lease example, whose expiry every node decides the same way from the log's time,
//! also after restoring a snapshot; and guest-kv, on the SDK, against its twin on raw bindings.

mod common;

use common::*;
use serde_json::Value;

const COUNTER: &str = env!("RAFTWASM_COUNTER_WASM");
const COUNTER_V2: &str = env!("RAFTWASM_COUNTER_V2_WASM");
const LEASE: &str = env!("RAFTWASM_LEASE_WASM");

#[tokio::test(flavor = "multi_thread")]
async fn the_counter_takes_json_commands_and_refuses_bad_ones() {
    let root = TestDir::new();
    let node = Node::start(root.path(), "solo", true, &["--fsm", COUNTER]);
    wait_for_leader(&[&node]).await;
    assert_eq!(
        post_text(&node, "/v1/apply", r#"{"add":5}"#).await,
        (200, "5".into())
    );
    assert_eq!(
        post_text(&node, "/v1/apply", r#"{"add":10}"#).await,
        (200, "15".into())
    );
    assert_eq!(
        post_text(&node, "/v1/query", "null").await,
        (200, "15".into())
    );
    let (code, text) = post_text(&node, "/v1/apply", "sub 1").await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("bad command"), "{text}");
    let (code, text) = post_text(&node, "/v1/apply", &format!(r#"{{"add":{}}}"#, i64::MAX)).await;
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("overflow"), "{text}");
    // The default snapshot (the state's own encoding) restores.
    let (code, text) = post_text(&node, "/v1/snapshot", "").await;
    assert_eq!(code, 200, "{text}");
    let mut node = node;
    node.restart(false);
    wait_for_leader(&[&node]).await;
    assert_eq!(
        post_text(&node, "/v1/query", "null").await,
        (200, "15".into())
    );

    // Version 2 through the log: its restore migrates version 1's state.
    let v2 = std::fs::read(COUNTER_V2).unwrap();
    let resp = http()
        .post(node.url("/v1/fsm"))
        .body(v2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(
        post_text(&node, "/v1/apply", r#"{"sub":3}"#).await,
        (200, "12".into())
    );
    assert_eq!(
        post_text(&node, "/v1/query", r#""stats""#).await,
        (200, r#"{"total":12,"count":1}"#.into())
    );
}

/// Acquires `name` for `owner` through `node` until it is granted; the lease.
async fn acquire_when_free(node: &Node, name: &str, owner: &str, ttl_ms: u64) -> Value {
    let command =
        format!(r#"{{"acquire":{{"name":"{name}","owner":"{owner}","ttl_ms":{ttl_ms}}}}}"#);
    wait_for("the lease to be granted", || async {
        let (code, text) = post_text(node, "/v1/apply", &command).await;
        match code {
            200 => Some(serde_json::from_str::<Value>(&text).unwrap()),
            409 => None,
            _ => panic!("{code} {text}"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_expiry_is_decided_alike_on_every_node_and_after_a_snapshot() {
    let root = TestDir::new();
    let mut nodes = three_nodes(root.path(), &["--fsm", LEASE]).await;
    let leader = &nodes[0];

    let alice = acquire_when_free(leader, "db", "alice", 1_000).await;
    assert_eq!(alice["owner"], "alice");
    assert_eq!(alice["id"].as_str().unwrap().len(), 32, "{alice}");
    let (code, text) = post_text(
        leader,
        "/v1/apply",
        r#"{"acquire":{"name":"db","owner":"bob","ttl_ms":1000}}"#,
    )
    .await;
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("held by alice"), "{text}");

    // Bob gets it once the log's time passes alice's expiry, and not before.
    let bob = acquire_when_free(leader, "db", "bob", 1_000).await;
    assert!(
        bob["token"].as_u64() > alice["token"].as_u64(),
        "{bob} {alice}"
    );
    assert!(
        bob["expires_ms"].as_u64().unwrap() >= alice["expires_ms"].as_u64().unwrap() + 1_000,
        "{bob} granted before {alice} expired"
    );
    assert_ne!(bob["id"], alice["id"]);
    let renew = format!(
        r#"{{"renew":{{"name":"db","id":{},"ttl_ms":1000}}}}"#,
        alice["id"]
    );
    let (code, text) = post_text(leader, "/v1/apply", &renew).await;
    assert_eq!(code, 409, "an expired lease was renewed: {text}");
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_equal_state(&refs).await;

    // node3 restarts from a snapshot of that state; the next expiry it decides like the others.
    let (code, text) = post_text(&nodes[2], "/v1/snapshot", "").await;
    assert_eq!(code, 200, "{text}");
    nodes[2].restart(false);
    let carol = acquire_when_free(&nodes[0], "db", "carol", 60_000).await;
    assert!(carol["expires_ms"].as_u64() > bob["expires_ms"].as_u64());
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_equal_state(&refs).await;
    for n in &nodes {
        let (code, text) = post_text(n, "/v1/query?consistency=stale", r#"{"holder":"db"}"#).await;
        assert_eq!(code, 200, "{text}");
        let holder: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(holder, carol, "{}", n.name);
    }
}

/// guest-kv on the SDK against its raw twin (the benchmark's measure of the SDK is only fair if
/// both do the same work): the same responses, errors and snapshot bytes over a mixed script,
/// and each restores the other's snapshot.
#[test]
fn guest_kv_on_the_sdk_answers_byte_for_byte_like_the_raw_one() {
    use host::check::{guest_kv_script, Step};
    use host::fsm::{EntryContext, GuestLimits, GuestModule};
    use std::path::Path;
    use std::sync::Arc;

    let load =
        |path: &str| GuestModule::from_file(Path::new(path), GuestLimits::default()).unwrap();
    let (raw, sdk) = (
        load(env!("RAFTWASM_GUEST_KV_RAW_WASM")),
        load(env!("RAFTWASM_GUEST_KV_WASM")),
    );
    let (mut a, mut b) = (raw.start().unwrap(), sdk.start().unwrap());
    let mut steps = guest_kv_script(5_000, 7);
    // A refusal by the map's rules (an empty key) must come back the same too.
    steps.push(Step::Apply(
        br#"{"op":"put","key":"","value":"x"}"#.to_vec(),
    ));
    let (mut ok, mut refused) = (0, 0);
    for step in &steps {
        let (x, y) = match step {
            Step::Apply(c) => (
                a.apply(c, EntryContext::default()).unwrap().result,
                b.apply(c, EntryContext::default()).unwrap().result,
            ),
            Step::Query(q) => (
                a.query(q, EntryContext::default()).unwrap().result,
                b.query(q, EntryContext::default()).unwrap().result,
            ),
        };
        assert_eq!(format!("{x:?}"), format!("{y:?}"), "at {step:?}");
        if x.is_ok() {
            ok += 1
        } else {
            refused += 1
        }
    }
    assert!(
        ok > 4_000 && refused >= 1,
        "{ok} answered, {refused} refused"
    );
    let snapshot = a.snapshot().unwrap();
    assert_eq!(snapshot, b.snapshot().unwrap());

    // Each restores the other's snapshot and goes on the same way.
    let (mut a2, mut b2) = (raw.start().unwrap(), sdk.start().unwrap());
    a2.restore(b.snapshot().unwrap()).unwrap().result.unwrap();
    b2.restore(Arc::clone(&snapshot)).unwrap().result.unwrap();
    let put = br#"{"op":"put","key":"k1","value":"after"}"#;
    let (x, y) = (
        a2.apply(put, EntryContext::default())
            .unwrap()
            .result
            .unwrap(),
        b2.apply(put, EntryContext::default())
            .unwrap()
            .result
            .unwrap(),
    );
    assert_eq!(x, y);
    assert_eq!(a2.snapshot().unwrap(), b2.snapshot().unwrap());
}
