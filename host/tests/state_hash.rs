//! A state hash (`GET /v1/status?state_hash=true`) holds the guest only for the guest's own
//! snapshot call: writes go on while the snapshot is hashed. The guest call's share of the
//! hash's time varies widely (page faults over two 256 MiB copies, other load on the machine:
//! 18% to 85% here), so the test measures it, from the node's `snapshot` call histogram, and
//! checks writes stalled for little more than it. In a test binary of its own because it
//! compares pauses in time.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_long_state_hash_does_not_stall_writes() {
    let root = common::TestDir::new();
    // One async worker, as on a one-core machine: a guest call run on it would stop every
    // other task of the node for its whole duration.
    let one_worker = [("TOKIO_WORKER_THREADS", "1")];
    let node = Node::start_with_env(root.path(), "solo", true, &[], &one_worker);
    wait_for_leader(&[&node]).await;
    // A large state: 256 values of 1 MiB.
    let big = "x".repeat(1 << 20);
    let client = http();
    for i in 0..256 {
        let resp = client
            .put(node.url(&format!("/v1/kv/big{i}")))
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    // One writer, one small put at a time, while the state hash runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop) = (node.url("/v1/kv/"), stop.clone());
        tokio::spawn(async move {
            let client = http();
            let mut done = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client.put(format!("{url}w{i}")).body("v").send().await;
                assert_eq!(resp.unwrap().status(), 200);
                done.push(Instant::now());
                i += 1;
            }
            done
        })
    };
    wait_for("the writer to get going", || async {
        let s = node.status().await?;
        (s.applied_index > 300).then_some(())
    })
    .await;
    let snapshot_calls = r#"raftwasm_guest_call_duration_seconds_sum{call="snapshot"}"#;
    let held_before = metric_value(&node, snapshot_calls).await;
    let started = Instant::now();
    let resp = http()
        .get(node.url("/v1/status?state_hash=true"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let ended = Instant::now();
    assert_eq!(resp.status(), 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done = writer.await.unwrap();
    let held = Duration::from_secs_f64(metric_value(&node, snapshot_calls).await - held_before);

    // Writes completed while the hash ran, and the longest pause between two of them is the
    // guest's snapshot call plus well under half of the rest (the hashing): had the hashing
    // held the guest too, the pause would span the whole hash.
    let during: Vec<Instant> = done
        .into_iter()
        .filter(|t| *t > started && *t < ended)
        .collect();
    let took = ended - started;
    let mut marks = vec![started];
    marks.extend(&during);
    marks.push(ended);
    let longest = marks.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    eprintln!(
        "state hash took {took:?}, the guest's snapshot call {held:?}; {} writes completed \
         meanwhile; longest pause {longest:?}",
        during.len()
    );
    assert!(!during.is_empty(), "no write completed in {took:?}");
    assert!(held > Duration::ZERO, "no snapshot call was recorded");
    let rest = took.saturating_sub(held);
    assert!(
        longest < held + rest / 2,
        "writes stalled for {longest:?} of the hash's {took:?} (snapshot call {held:?})"
    );
}
