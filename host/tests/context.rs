//! The `raftwasm:fsm@0.2.0` context, on a real three-node cluster running the context-probe
//! guest: every node's guest sees the same entry, time and random bytes for each command; the
//! log's time never goes back, even when the next leader's clock is behind the last one's; a
//! snapshot carries it; a query gets no random bytes; and what guests log reaches each node's
//! guest log.

mod common;

use common::*;
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

const PROBE: &str = env!("RAFTWASM_CONTEXT_PROBE_WASM");
/// How far ahead node1's clock runs while it leads (failpoint `clock_ahead_ms`).
const AHEAD_MS: u64 = 600_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One applied probe: `INDEX TERM UNIX_MS RANDOM_HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    index: u64,
    term: u64,
    unix_ms: u64,
    random: String,
}

async fn probe(node: &Node) -> Probe {
    let (code, text) = post_text(node, "/v1/apply", "probe").await;
    assert_eq!(code, 200, "{text}");
    let f: Vec<&str> = text.split(' ').collect();
    Probe {
        index: f[0].parse().unwrap(),
        term: f[1].parse().unwrap(),
        unix_ms: f[2].parse().unwrap(),
        random: f[3].to_string(),
    }
}

async fn guest_log(node: &Node) -> Vec<Value> {
    let page: Value = get_json(&node.url("/v1/guest/log")).await;
    page["lines"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_sees_the_same_context_and_the_log_clock_never_goes_back() {
    let root = TestDir::new();
    let fsm = ["--fsm", PROBE];
    let ahead = format!("clock_ahead_ms={AHEAD_MS}");
    let mut n1 = Node::start_with_env(
        root.path(),
        "node1",
        true,
        &fsm,
        &[("RAFTWASM_FAILPOINTS", &ahead)],
    );
    let n2 = Node::start(root.path(), "node2", false, &fsm);
    let n3 = Node::start(root.path(), "node3", false, &fsm);
    wait_for_leader(&[&n1]).await;
    add_voter(&n1, &n2).await;
    add_voter(&n1, &n3).await;

    // Under node1, whose clock runs ten minutes ahead.
    let before = now_ms();
    let mut probes = Vec::new();
    for _ in 0..10 {
        probes.push(probe(&n1).await);
    }
    let after = now_ms();
    for p in &probes {
        assert!(
            p.unix_ms >= before + AHEAD_MS && p.unix_ms <= after + AHEAD_MS,
            "{p:?} not stamped by node1's clock ({before}..{after} + {AHEAD_MS})"
        );
    }
    let fast = probes.last().unwrap().clone();

    // node1 goes; the next leader's clock is ten minutes behind the log's.
    n1.kill();
    let survivors = [&n2, &n3];
    let leader = survivors[wait_for_leader(&survivors).await];
    for _ in 0..5 {
        probes.push(probe(leader).await);
    }
    let slow = &probes[10..];
    assert!(slow.iter().all(|p| p.term > fast.term), "{probes:?}");
    for p in slow {
        assert_eq!(
            p.unix_ms, fast.unix_ms,
            "the log's clock went back, or on: {p:?} after {fast:?}"
        );
    }
    for pair in probes.windows(2) {
        assert!(pair[1].index > pair[0].index, "{pair:?}");
        assert!(pair[1].unix_ms >= pair[0].unix_ms, "{pair:?}");
        assert_ne!(pair[1].random, pair[0].random, "{pair:?}");
    }

    // node1 back with an honest clock: every node applied the same probes, times and bytes.
    n1.env.clear();
    n1.restart(false);
    let nodes = [&n1, &n2, &n3];
    wait_for_equal_state(&nodes).await;
    let expected: Vec<String> = probes
        .iter()
        .map(|p| format!("{} {} {} {}", p.index, p.term, p.unix_ms, p.random))
        .collect();
    for n in nodes {
        let (code, text) = post_text(n, "/v1/query?consistency=stale", "probes").await;
        assert_eq!(code, 200, "{text}");
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{}", n.name);
    }

    // A read's time is the serving node's clock, but never before the log's.
    let (code, text) = post_text(&n2, "/v1/query?consistency=stale", "now").await;
    assert_eq!(code, 200, "{text}");
    let read_ms: u64 = text.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        read_ms >= fast.unix_ms,
        "read at {read_ms}, log at {fast:?}"
    );

    // No random bytes in a query.
    let (code, text) = post_text(&n3, "/v1/query", "random").await;
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("refused in query"), "{text}");

    // Each node logged each probe once, at the same index.
    for n in nodes {
        wait_for("the probes in the guest log", || async {
            let lines = guest_log(n).await;
            let logged: Vec<u64> = lines
                .iter()
                .filter(|l| l["message"].as_str().unwrap().starts_with("probe "))
                .map(|l| l["index"].as_u64().unwrap())
                .collect();
            let want: Vec<u64> = probes.iter().map(|p| p.index).collect();
            // node1 was down for the last five: it applied them on its return.
            (logged == want).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_clock_survives_a_snapshot_and_a_failed_call_keeps_its_log_lines() {
    let root = TestDir::new();
    let ahead = format!("clock_ahead_ms={AHEAD_MS}");
    let mut node = Node::start_with_env(
        root.path(),
        "solo",
        true,
        &["--fsm", PROBE],
        &[("RAFTWASM_FAILPOINTS", &ahead)],
    );
    wait_for_leader(&[&node]).await;
    let last = probe(&node).await;

    // A trapping command: refused, and what it logged first is kept.
    let (code, text) = post_text(&node, "/v1/apply", "panic").await;
    assert_eq!(code, 422, "{text}");
    let lines = guest_log(&node).await;
    assert!(
        lines.iter().any(|l| l["message"] == "about to trap"),
        "{lines:?}"
    );
    let (code, text) = post_text(&node, "/v1/apply", "chatter 100").await;
    assert_eq!(code, 200, "{text}");
    let lines = guest_log(&node).await;
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "36 more lines dropped (at most 64 per call)"),
        "{lines:?}"
    );

    // The log's clock: the last command's stamp, ten minutes ahead of the node's (a read's
    // time is the node's clock, but never before the log's).
    let (code, text) = post_text(&node, "/v1/query", "now").await;
    assert_eq!(code, 200, "{text}");
    let clock: u64 = text.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        clock >= last.unix_ms && clock > now_ms() + AHEAD_MS / 2,
        "{clock}"
    );

    // A snapshot, then a restart with an honest clock: the state comes back from the snapshot
    // with the log's clock.
    let (code, text) = post_text(&node, "/v1/snapshot", "").await;
    assert_eq!(code, 200, "{text}");
    node.env.clear();
    node.restart(false);
    wait_for_leader(&[&node]).await;
    let (code, text) = post_text(&node, "/v1/query?consistency=stale", "now").await;
    assert_eq!(code, 200, "{text}");
    let read_ms: u64 = text.split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(read_ms, clock, "after the restart a read is at {read_ms}");
    let next = probe(&node).await;
    assert_eq!(next.unix_ms, clock, "{next:?} after {last:?}");
}
