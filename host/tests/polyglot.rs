//! Guests written in Python (examples/py-kv, by componentize-py) and JavaScript
//! (examples/js-ratelimit, by componentize-js) under the deterministic WASI, in real clusters:
//! writes through a follower, a leader kill, a node that joins by installing a snapshot, equal
//! state hashes; the Python guest upgraded live from version 1 to 2 with its state migrated; and
//! a module over the old 32 MiB cap uploaded, replicated and carried in a snapshot; the guest
//! checker passes both. The polyglot
//! guests are built by scripts/polyglot.sh (`make polyglot`, which `make test` runs first).

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// These tests compile components of tens of MiB on every node: one at a time, so they do not
/// starve each other's nodes of the machine's cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const INSTALLS: &str = r#"raftwasm_raft_snapshot_duration_seconds_count{kind="install"}"#;

/// A guest scripts/polyglot.sh built.
fn polyglot(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the polyglot guests with scripts/polyglot.sh (make polyglot)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// Starts node4 with `opts`, adds it through `via` and waits until it installed a snapshot.
async fn join_by_snapshot(dir: &Path, via: &Node, opts: &[&str]) -> Node {
    let joiner = Node::start(dir, "node4", false, opts);
    add_voter(via, &joiner).await;
    wait_for("node4 to install a snapshot", || async {
        (metric_value(&joiner, INSTALLS).await >= 1.0).then_some(())
    })
    .await;
    joiner
}

/// `POST /v1/apply` of `command`, expecting it applied: the guest's answer as JSON.
async fn apply(node: &Node, command: &str) -> Value {
    let (code, body) = post_text(node, "/v1/apply", command).await;
    assert_eq!(code, 200, "{command}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Runs `guest` on three nodes; applies `command(i)` for i in 0..60 through a follower, kills the
/// leader, applies 60..120 through a survivor, brings the leader back, adds a fourth node that
/// must install a snapshot, and waits for the four to hold equal state. Returns the nodes and the
/// answers, in order.
async fn through_faults(
    dir: &Path,
    guest: &str,
    command: impl Fn(usize) -> String,
) -> (Vec<Node>, Vec<Value>) {
    let opts = [
        "--fsm",
        guest,
        "--snapshot-every",
        "40",
        "--snapshot-keep-logs",
        "5",
        // Each node compiles the guest (seconds, on every core) when it starts: a membership
        // change committed meanwhile may wait for a starved follower past the default 5 s.
        "--request-timeout-ms",
        "30000",
    ];
    let mut nodes = three_nodes(dir, &opts).await;
    let l = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let f = (l + 1) % 3;
    let mut answers = Vec::new();
    for i in 0..60 {
        answers.push(apply(&nodes[f], &command(i)).await);
    }
    nodes[l].kill();
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != l)
        .map(|(_, n)| n)
        .collect();
    wait_for_leader(&survivors).await;
    for i in 60..120 {
        answers.push(apply(&nodes[f], &command(i)).await);
    }
    nodes[l].restart(false);
    nodes.push(join_by_snapshot(dir, &nodes[f], &opts).await);
    wait_for_equal_state(&nodes.iter().collect::<Vec<_>>()).await;
    (nodes, answers)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_guest_replicates_through_faults_and_upgrades_live() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = TestDir::new();
    let put = |i| format!(r#"{{"op":"put","key":"key{i:03}","value":"value{i}"}}"#);
    let (nodes, answers) = through_faults(dir.path(), &polyglot("py_kv"), put).await;
    assert!(
        answers
            .iter()
            .all(|a| a == &serde_json::json!({"prev": null})),
        "{answers:?}"
    );
    // guest-kv's HTTP API works on it: the node that joined by snapshot has every write.
    for i in [0, 59, 60, 119] {
        let (code, body) = get_value(&nodes[3], &format!("key{i:03}"), "consistency=stale").await;
        assert_eq!((code, body), (200, format!("value{i}")));
    }

    // Version 1 knows no `incr`; version 2, uploaded live, does and keeps version 1's state.
    let incr = r#"{"op":"incr","key":"n","by":5}"#;
    let (code, body) = post_text(&nodes[0], "/v1/apply", incr).await;
    assert!(
        code == 400 && body.contains("unknown command 'incr'"),
        "{code} {body}"
    );
    let v2 = std::fs::read(polyglot("py_kv_v2")).unwrap();
    let (code, body) = upgrade_fsm(&nodes[1], v2.clone(), false).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        apply(&nodes[2], incr).await,
        serde_json::json!({"value": 5})
    );
    let state = wait_for_equal_state(&nodes.iter().collect::<Vec<_>>()).await;
    assert_eq!(state.fsm_module_size, v2.len() as u64);
    for node in &nodes {
        let (code, body) = get_value(node, "key119", "consistency=stale").await;
        assert_eq!((code, body), (200, "value119".to_string()), "{}", node.name);
    }
    // Its restore migrated the state and said so on stdout, which is the guest's log.
    let log: Value = get_json(&nodes[0].url("/v1/guest/log")).await;
    assert!(
        log.to_string().contains("restored 120 keys into version 2"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_guest_replicates_through_faults() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = TestDir::new();
    // A rule first, then takes from seven buckets of three tokens that refill slowly: the first
    // three takes of each bucket pass, later ones mostly wait.
    let take = |i: usize| match i {
        0 => r#"{"op":"rule","prefix":"user","capacity":3,"per_second":1}"#.to_string(),
        i => format!(r#"{{"op":"take","key":"user{}"}}"#, i % 7),
    };
    let (nodes, answers) = through_faults(dir.path(), &polyglot("js_ratelimit"), take).await;
    assert_eq!(answers[0], serde_json::json!({"rules": 2}));
    assert_eq!(answers[1], serde_json::json!({"allowed": true, "left": 2}));
    let refused = answers.iter().filter(|a| a["allowed"] == false).count();
    assert!(refused > 0, "{answers:?}");
    // Every node answers a read from the same state.
    let peek = r#"{"op":"rules"}"#;
    for node in &nodes {
        let (code, body) = post_text(node, "/v1/query?consistency=stale", peek).await;
        assert_eq!(code, 200, "{body}");
        let rules: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(rules["user"]["capacity"], 3, "{}: {body}", node.name);
    }
}

/// `component` with a custom section of `pad` bytes appended: still the same guest.
fn padded(component: &[u8], pad: usize) -> Vec<u8> {
    let name = b"raftwasm-padding";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.resize(payload.len() + pad, 0);
    let mut out = component.to_vec();
    out.push(0); // custom section
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        out.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(&payload);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_over_32_mib_is_uploaded_replicated_and_carried_in_snapshots() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = TestDir::new();
    let opts = [
        "--snapshot-every",
        "20",
        "--snapshot-keep-logs",
        "5",
        "--request-timeout-ms",
        "30000",
    ];
    let nodes = three_nodes(dir.path(), &opts).await;
    let big = padded(
        &std::fs::read(env!("RAFTWASM_GUEST_KV_WASM")).unwrap(),
        40 << 20,
    );
    assert!(big.len() > 40 << 20);
    let (code, body) = upgrade_fsm(&nodes[0], big.clone(), false).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(put_many(&nodes[1], 0..60, 4).await.len(), 60);
    let joiner = join_by_snapshot(dir.path(), &nodes[0], &opts).await;
    let mut all: Vec<&Node> = nodes.iter().collect();
    all.push(&joiner);
    let state = wait_for_equal_state(&all).await;
    assert_eq!(state.fsm_module_size, big.len() as u64);
    let (code, body) = get_value(&joiner, "key000059", "consistency=stale").await;
    assert_eq!((code, body), (200, "value59".to_string()));
}

#[test]
fn the_checker_passes_both() {
    let (ok, out) = host_command(&["guest", "check", &polyglot("py_kv"), "--generate", "2000"]);
    assert!(ok, "{out}");
    assert!(out.contains("ok: deterministic over this script"), "{out}");
    assert!(out.contains("wasi:cli/environment@0.2."), "{out}");
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        r#"{"apply":{"op":"rule","prefix":"api:","capacity":3,"per_second":2}}
{"apply":{"op":"take","key":"api:alice"}}
{"apply":{"op":"take","key":"api:alice","cost":2}}
{"apply":{"op":"take","key":"api:alice"}}
{"query":{"op":"peek","key":"api:alice"}}
{"apply":{"op":"take","key":"other"}}
{"apply":{"op":"forget","key":"api:alice"}}
{"query":{"op":"rules"}}
"#,
    )
    .unwrap();
    let script = script.path().to_str().unwrap();
    let (ok, out) = host_command(&[
        "guest",
        "check",
        &polyglot("js_ratelimit"),
        "--commands",
        script,
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("script: 6 commands, 2 queries"), "{out}");
}
