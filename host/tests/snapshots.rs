//! Snapshot, compaction, crash-recovery and membership tests on real `host` processes.

mod common;

use common::{http, put_many, three_nodes, wait_for, wait_for_equal_state, wait_for_leader, Node};
use host::service::Status;
use std::time::Instant;

async fn get(node: &Node, key: &str) -> (u16, String) {
    common::get_value(node, key, "").await
}

async fn get_stale(node: &Node, key: &str) -> (u16, String) {
    common::get_value(node, key, "consistency=stale").await
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_purge_the_log_restart_restores_and_a_late_node_installs_one() {
    let root = tempfile::tempdir().unwrap();
    let opts = ["--snapshot-every", "1000", "--snapshot-keep-logs", "100"];
    let mut nodes = three_nodes(root.path(), &opts).await;
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    // Few writers: concurrent writes share log entries, and the policy counts entries.
    let acked = put_many(&nodes[leader], 0..20_000, 4).await;
    assert_eq!(acked.len(), 20_000);
    let last = nodes[leader].status().await.unwrap().last_log_index;
    assert!(last >= 3_000, "only {last} log entries for 20,000 writes");

    // Every node snapshotted and purged its log behind the snapshot.
    for n in &nodes {
        let s = wait_for("a snapshot and a purged log", || async {
            let s = n.status().await?;
            (s.snapshot_index + 1_000 >= last && s.purged_index + 1_000 >= s.snapshot_index)
                .then_some(s)
        })
        .await;
        assert!(
            s.purged_index > 0 && s.purged_index <= s.snapshot_index,
            "{s:?}"
        );
        assert!(n.data_dir.join("snapshot.bin").exists());
        assert!(!n.data_dir.join("snapshot.bin.tmp").exists());
    }
    let before = wait_for_equal_state(&nodes.iter().collect::<Vec<_>>()).await;

    // Restart every node: snapshot + log tail bring the same state back.
    for n in nodes.iter_mut() {
        n.kill();
    }
    let started = Instant::now();
    for n in nodes.iter_mut() {
        n.restart(false);
    }
    wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let after = wait_for_equal_state(&nodes.iter().collect::<Vec<_>>()).await;
    println!(
        "restart of 3 nodes holding 20,000 keys: {:?} to an agreed leader and state",
        started.elapsed()
    );
    assert!(
        after.state_hash.as_ref().unwrap().applied_index
            >= before.state_hash.as_ref().unwrap().applied_index
    );
    for i in [0, 1, 9_999, 19_999] {
        assert_eq!(
            get(&nodes[i % 3], &format!("key{i:06}")).await,
            (200, format!("value{i}"))
        );
    }

    // A fourth node, added after the log was purged, gets the state by snapshot install.
    let n4 = Node::start(root.path(), "node4", false, &opts);
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let purged = nodes[leader].status().await.unwrap().purged_index;
    assert!(purged > 0);
    common::add_voter(&nodes[leader], &n4).await;
    // The leader no longer has the entries before `purged`: node4 can only have got that part
    // of the state by installing a snapshot that covers it.
    wait_for("node4 to install a snapshot", || async {
        let s = n4.status().await?;
        (s.snapshot_index >= purged).then_some(s)
    })
    .await;
    let all: Vec<&Node> = nodes.iter().chain([&n4]).collect();
    let state = wait_for_equal_state(&all).await;
    assert_eq!(state.members.len(), 4);
    assert_eq!(get(&n4, "key012345").await, (200, "value12345".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_on_demand_module_mismatch_and_corruption_are_reported() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::start(root.path(), "solo", true, &[]);
    wait_for_leader(&[&node]).await;
    assert_eq!(put_many(&node, 0..50, 8).await.len(), 50);
    let resp = http().post(node.url("/v1/snapshot")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let snap: serde_json::Value = resp.json().await.unwrap();
    let last = node.status().await.unwrap().last_log_index;
    assert_eq!(snap["index"].as_u64().unwrap(), last, "{snap}");
    assert!(snap["size"].as_u64().unwrap() > 0, "{snap}");
    let module = node.status().await.unwrap().fsm_module_hash;
    node.kill();

    // The snapshot carries its module: restarted with another --fsm, the node runs the module
    // the snapshot was made by, with its state.
    node.set_extra(&["--fsm", env!("RAFTWASM_BANK_WASM")]);
    node.restart(false);
    wait_for_leader(&[&node]).await;
    assert_eq!(node.status().await.unwrap().fsm_module_hash, module);
    assert_eq!(get(&node, "key000007").await, (200, "value7".to_string()));
    node.kill();
    node.set_extra(&[]);

    // The native baseline cannot run a wasm module: a clear error, not corruption.
    let (ok, stderr) = node.run_to_exit(&["--native-fsm"]);
    assert!(!ok);
    assert!(
        stderr.contains("snapshot was made by state machine"),
        "{stderr}"
    );

    // A flipped byte in the snapshot file is caught by its checksum.
    let path = node.data_dir.join("snapshot.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (ok, stderr) = node.run_to_exit(&[]);
    assert!(!ok);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (make test builds with it)"
)]
async fn crash_while_writing_a_snapshot_loses_no_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::start(root.path(), "solo", true, &["--snapshot-every", "300"]);
    wait_for_leader(&[&node]).await;
    assert_eq!(put_many(&node, 0..200, 8).await.len(), 200);
    // From now on the process aborts as soon as a snapshot file is about to be renamed into place.
    node.env.push((
        host::failpoints::ENV.into(),
        host::failpoints::SNAPSHOT_BEFORE_RENAME.into(),
    ));
    node.restart(false);
    wait_for_leader(&[&node]).await;
    let acked = put_many(&node, 200..2_000, 1).await;
    assert!(!node.is_running(), "the failpoint should have fired");
    // A built snapshot is written where it will lie, then renamed into place.
    let unfinished = node.data_dir.join("snapshot.bin.build");
    assert!(unfinished.exists());
    node.env.clear();
    // With 300 the restarted node would start a build of its own right away (its log is well past
    // 300 entries since the last snapshot) and create the file again before we look.
    node.set_extra(&["--snapshot-every", "1000000"]);
    node.restart(false);
    wait_for_leader(&[&node]).await;
    assert!(
        !unfinished.exists(),
        "the unfinished build is removed at start"
    );
    for i in (0..200).chain(acked) {
        assert_eq!(
            get(&node, &format!("key{i:06}")).await,
            (200, format!("value{i}")),
            "key {i}"
        );
    }
    // Snapshots work again after the crash.
    let resp = http().post(node.url("/v1/snapshot")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_writes_and_snapshots_loses_no_acknowledged_write() {
    let root = common::TestDir::new();
    // Concurrent writes share entries (up to one per writer), so 1,800 writes may be only ~120
    // entries under load: snapshot every 20 so every round crosses a few.
    let opts = ["--snapshot-every", "20", "--snapshot-keep-logs", "10"];
    let mut nodes = three_nodes(root.path(), &opts).await;
    let mut acked = Vec::new();
    for round in 0..3 {
        let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
        // Kill a different node each round (the leader in round 1) while writes are in flight.
        let victim = if round == 1 {
            leader
        } else {
            (leader + 1 + round) % 3
        };
        let base = round * 1_000;
        let via = if victim == leader {
            (leader + 1) % 3
        } else {
            leader
        };
        let pid = nodes[victim].pid();
        let (batch, ()) = tokio::join!(put_many(&nodes[via], base..base + 600, 16), async move {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            common::sigkill(pid);
        });
        nodes[victim].kill();
        acked.extend(batch);
        nodes[victim].restart(false);
    }
    wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let state = wait_for_equal_state(&nodes.iter().collect::<Vec<_>>()).await;
    assert!(state.snapshot_index > 0);
    // Writes fail while a killed leader is replaced; many still get through.
    assert!(
        acked.len() >= 300,
        "only {} writes acknowledged",
        acked.len()
    );
    for n in &nodes {
        for i in acked.iter().step_by(7) {
            assert_eq!(
                get_stale(n, &format!("key{i:06}")).await.0,
                200,
                "{} key {i}",
                n.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_and_readd_a_node_and_refuse_id_reuse() {
    let root = tempfile::tempdir().unwrap();
    let nodes = three_nodes(root.path(), &[]).await;
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let other = (leader + 1) % 3;
    let client = http();

    // Re-adding a member at its own address is a no-op success.
    let resp = client
        .get(nodes[leader].url(&format!(
            "/AddVoter/{}/{}",
            nodes[other].grpc, nodes[other].name
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The same id at another address is refused.
    let resp = client
        .get(nodes[leader].url(&format!("/AddVoter/127.0.0.1:1/{}", nodes[other].name)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("already a member"),
        "{body}"
    );

    // Remove a follower (through another follower), then add it back as a learner and promote it.
    let victim = &nodes[other];
    let via = &nodes[3 - leader - other];
    let resp = client
        .delete(via.url(&format!("/v1/cluster/nodes/{}", victim.name)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let s: Status = client
        .get(nodes[leader].url("/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s.members.len(), 2);
    assert_eq!(put_many(&nodes[leader], 0..20, 4).await.len(), 20);
    let body = serde_json::json!({"id": victim.name, "address": victim.grpc, "learner": true});
    let resp = client
        .post(via.url("/v1/cluster/nodes"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let s: Status = resp.json().await.unwrap();
    let m = s.members.iter().find(|m| m.id == victim.name).unwrap();
    assert!(!m.voter);
    let body = serde_json::json!({"id": victim.name, "address": victim.grpc});
    let resp = client
        .post(via.url("/v1/cluster/nodes"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The leader reports every member's replication progress.
    let s = wait_for("three voters, all caught up", || async {
        let s = nodes[leader].status().await?;
        let ok = s.members.len() == 3
            && s.members
                .iter()
                .all(|m| m.voter && m.lag == Some(0) && m.matched_index.is_some());
        ok.then_some(s)
    })
    .await;
    assert_eq!(s.members.len(), 3);
    assert_eq!(get(victim, "key000019").await, (200, "value19".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_leadership_and_remove_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let nodes = three_nodes(root.path(), &[]).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = wait_for_leader(&all).await;
    let target = (leader + 1) % 3;
    let client = http();
    assert_eq!(put_many(&nodes[leader], 0..50, 8).await.len(), 50);

    // Transfer through a node that is not the leader: forwarded, and it returns once moved.
    let via = &nodes[3 - leader - target];
    let body = serde_json::json!({"id": nodes[target].name});
    let resp = client
        .post(via.url("/v1/cluster/leader"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(wait_for_leader(&all).await, target);
    // Writes go on under the new leader, and nothing was lost.
    assert_eq!(put_many(&nodes[leader], 50..100, 8).await.len(), 50);

    // A learner cannot be made leader; an unknown node is a 404.
    let resp = client
        .get(via.url("/TransferLeader/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Removing the leader moves leadership first, then removes it.
    let old = nodes[target].name.clone();
    let resp = client
        .delete(via.url(&format!("/v1/cluster/nodes/{old}")))
        .send()
        .await
        .unwrap();
    let (status, text) = (resp.status(), resp.text().await.unwrap());
    assert_eq!(status, 200, "{text}");
    // The answer comes from the successor, already leading when the removal committed (without a
    // hand-off it would come from the removed leader itself).
    let removed: Status = serde_json::from_str(&text).unwrap();
    assert_ne!(removed.id, old, "{removed:?}");
    assert_eq!(removed.state, "Leader", "{removed:?}");
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.name != old).collect();
    let new_leader = wait_for_leader(&rest).await;
    let s = rest[new_leader].status().await.unwrap();
    assert_eq!(s.members.len(), 2, "{s:?}");
    assert!(s.members.iter().all(|m| m.id != old));
    for n in &rest {
        for i in [0, 49, 99] {
            assert_eq!(
                get(n, &format!("key{i:06}")).await,
                (200, format!("value{i}"))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_sigkill_mid_write_never_corrupts_the_log() {
    // Each kill lands while batches are being written, so some write is cut short; the log must
    // come back at its last complete record, and every acknowledged write must be in it.
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::start(root.path(), "solo", true, &["--snapshot-every", "500"]);
    let mut acked = Vec::new();
    for round in 0..8u64 {
        wait_for_leader(&[&node]).await;
        let base = (round * 10_000) as usize;
        let pid = node.pid();
        let delay = std::time::Duration::from_millis(40 + 37 * round);
        let (batch, ()) = tokio::join!(put_many(&node, base..base + 5_000, 32), async move {
            tokio::time::sleep(delay).await;
            common::sigkill(pid);
        });
        acked.extend(batch);
        node.restart(false);
    }
    wait_for_leader(&[&node]).await;
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    for i in &acked {
        assert_eq!(
            get_stale(&node, &format!("key{i:06}")).await,
            (200, format!("value{i}")),
            "key {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_during_its_first_start_starts_again() {
    // SIGKILL as soon as the node has bound its ports, i.e. while it creates its log (an earlier
    // log store left a half-written database that made every later start fail). Several rounds,
    // as the kill lands at random.
    for _ in 0..5 {
        let root = tempfile::tempdir().unwrap();
        let mut node = Node::start(root.path(), "solo", false, &[]);
        node.restart(true);
        wait_for_leader(&[&node]).await;
    }
}

/// Write-ahead log segments on disk: `(highest segment id, number of segment files)`.
fn wal_segments(node: &Node) -> (u64, usize) {
    let dir = node.data_dir.join("wal");
    let ids: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            u64::from_str_radix(name.strip_suffix(".wal")?, 16).ok()
        })
        .collect();
    (ids.iter().copied().max().unwrap_or(0), ids.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn small_log_segments_rotate_are_reused_and_survive_kills() {
    // 8 KiB segments: the writes below rotate through dozens of them while snapshots purge
    // the log (and free segments for reuse), and each round SIGKILLs a node mid-write (the leader
    // in the last round).
    let root = tempfile::tempdir().unwrap();
    let opts = [
        "--snapshot-every",
        "40",
        "--snapshot-keep-logs",
        "10",
        "--wal-segment-bytes",
        "8192",
    ];
    let mut nodes = three_nodes(root.path(), &opts).await;
    let mut acked = Vec::new();
    for round in 0..3 {
        let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
        let victim = (leader + 1 + round) % 3;
        let via = if victim == leader {
            (leader + 1) % 3
        } else {
            leader
        };
        let pid = nodes[victim].pid();
        let base = round * 10_000;
        let (batch, ()) = tokio::join!(put_many(&nodes[via], base..base + 1_500, 8), async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            common::sigkill(pid);
        });
        nodes[victim].kill();
        acked.extend(batch);
        nodes[victim].restart(false);
    }
    wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    wait_for_equal_state(&nodes.iter().collect::<Vec<_>>()).await;
    assert!(acked.len() >= 1_000, "only {} acknowledged", acked.len());
    for n in &nodes {
        for i in acked.iter().step_by(5) {
            assert_eq!(
                get_stale(n, &format!("key{i:06}")).await,
                (200, format!("value{i}")),
                "{} key {i}",
                n.name
            );
        }
        let (highest, files) = wal_segments(n);
        eprintln!(
            "{}: highest segment {highest}, {files} segment files",
            n.name
        );
        // A node that was down catches up by snapshot and writes fewer segments than one that
        // took every entry (fewer still since a restarted leader goes through an election: 13
        // seen): seen, highest segment id 35-45 on the busiest node, 2-18 segment files per
        // node. Without deletion a node would keep nearly every segment it ever had, so every
        // node must have rotated past 10 more segments than it keeps.
        assert!(
            files + 10 <= highest as usize,
            "{}: {files} segment files of {highest}: purged ones are not deleted",
            n.name
        );
    }
    let busiest = nodes.iter().map(|n| wal_segments(n).0).max().unwrap_or(0);
    assert!(
        busiest >= 25,
        "the busiest node had only {busiest} segments"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_comes_after_enough_commands_however_few_entries_carried_them() {
    // Entries alone would not snapshot for a million; 16 concurrent writers share entries, so
    // 600 writes fill far fewer than 600 of them.
    let root = tempfile::tempdir().unwrap();
    let by_commands = [
        "--snapshot-every",
        "1000000",
        "--snapshot-every-commands",
        "500",
    ];
    let node = Node::start(root.path(), "solo", true, &by_commands);
    wait_for_leader(&[&node]).await;
    assert_eq!(put_many(&node, 0..600, 16).await.len(), 600);
    let index = wait_for("a snapshot by commands", || async {
        let index = common::metric_value(&node, "raftwasm_raft_snapshot_index").await;
        (index > 0.0).then_some(index)
    })
    .await;
    let applied = node.status().await.unwrap().applied_index;
    assert!(index as u64 <= applied, "{index} <= {applied}");

    // Without it, the same writes leave the node without a snapshot.
    let root = tempfile::tempdir().unwrap();
    let only_entries = [
        "--snapshot-every",
        "1000000",
        "--snapshot-every-commands",
        "0",
    ];
    let node = Node::start(root.path(), "solo", true, &only_entries);
    wait_for_leader(&[&node]).await;
    assert_eq!(put_many(&node, 0..600, 16).await.len(), 600);
    assert_eq!(
        common::metric_value(&node, "raftwasm_raft_snapshot_index").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_lone_voter_leads_without_waiting_out_an_election_timeout() {
    // An election timeout far beyond the test's deadline: the restarted node must campaign at
    // start (openraft does, for a lone voter), or its first write and read wait it out.
    let root = tempfile::tempdir().unwrap();
    let slow = ["--election-timeout-ms", "600000"];
    let mut node = Node::start(root.path(), "solo", true, &slow);
    wait_for_leader(&[&node]).await;
    assert_eq!(put_many(&node, 0..10, 2).await.len(), 10);
    node.kill();
    node.restart(false);
    wait_for_leader(&[&node]).await;
    assert_eq!(get(&node, "key000003").await, (200, "value3".to_string()));
}
