//! Watch: the changes guests announce, on real clusters. Every node's feed holds every
//! acknowledged write once, in revision order, through a leader kill and a snapshot install,
//! with watchers that resume after their node went away; a start from a compacted revision is
//! refused; a resumed watcher continues inside a revision; a watcher that stops reading is cut
//! off while writes go on; kvclient's watch resumes across a restart of its node.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One received change: (revision, seq, key, value after).
type Seen = (u64, u32, String, Option<String>);

/// One server-sent event.
#[derive(Debug, Default)]
struct Sse {
    event: String,
    id: String,
    data: String,
}

/// Reads events from an SSE response until it ends; `on` returns false to stop.
async fn read_sse(mut resp: reqwest::Response, mut on: impl FnMut(Sse) -> bool) -> bool {
    let mut buf = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut e = Sse::default();
            for line in block.lines() {
                if let Some((field, value)) = line.split_once(": ") {
                    match field {
                        "event" => e.event = value.into(),
                        "id" => e.id = value.into(),
                        "data" => e.data = value.into(),
                        _ => {}
                    }
                }
            }
            if !on(e) {
                return false;
            }
        }
    }
    true
}

/// A watcher of every key on `url`'s node from revision 1 that reconnects with
/// `Last-Event-ID` whenever its stream breaks (its node killed), until `stop`.
fn spawn_watcher(url: String, seen: Arc<Mutex<Vec<Seen>>>, stop: Arc<Mutex<bool>>) {
    tokio::spawn(async move {
        let mut last_id: Option<String> = None;
        while !*stop.lock().unwrap() {
            let mut req = http()
                .get(format!("{url}/v1/watch?prefix=&from=1&progress_ms=200"))
                .timeout(Duration::from_secs(3600));
            if let Some(id) = &last_id {
                req = req.header("Last-Event-ID", id);
            }
            let Ok(resp) = req.send().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
            let (seen, stop) = (seen.clone(), stop.clone());
            read_sse(resp, |e| {
                match e.event.as_str() {
                    "change" => {
                        let v: Value = serde_json::from_str(&e.data).unwrap();
                        let value = v["change"]["value"].as_str().map(String::from);
                        let key = v["key"].as_str().unwrap().to_string();
                        let at = (v["revision"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
                        seen.lock().unwrap().push((at.0, at.1 as u32, key, value));
                    }
                    "error" => panic!("watch ended: {}", e.data),
                    _ => {}
                }
                if !e.id.is_empty() {
                    last_id = Some(e.id);
                }
                !*stop.lock().unwrap()
            })
            .await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_feeds_every_acknowledged_write_once_in_order() {
    let dir = TestDir::new();
    let opts = ["--snapshot-every", "1000", "--snapshot-keep-logs", "10"];
    let mut nodes = three_nodes(dir.path(), &opts).await;
    let feeds: Vec<Arc<Mutex<Vec<Seen>>>> = (0..3).map(|_| Arc::default()).collect();
    let stop = Arc::new(Mutex::new(false));
    for (node, feed) in nodes.iter().zip(&feeds) {
        spawn_watcher(node.url(""), feed.clone(), stop.clone());
    }
    let l = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let (f, g) = ((l + 1) % 3, (l + 2) % 3);
    let mut acked: BTreeSet<usize> = put_many(&nodes[l], 0..100, 4).await.into_iter().collect();

    // Node g misses writes; f snapshots them and purges its log (a follower purges at once, where
    // a leader waits for replication to g, which it cannot finish while g is down). With l killed,
    // f is the only node g can catch up from, and f no longer holds what g misses: g must
    // install f's snapshot.
    // Nothing is being written now, so no node's log goes past the leader's.
    let l_last = nodes[l].status().await.unwrap().last_log_index;
    nodes[g].kill();
    acked.extend(put_many(&nodes[l], 100..400, 4).await);
    let (code, body) = post_text(&nodes[f], "/v1/snapshot", "").await;
    assert_eq!(code, 200, "{body}");
    wait_for("node f to purge its log", || async {
        (nodes[f].status().await?.purged_index > l_last).then_some(())
    })
    .await;

    // Writes through f while the leader is killed and g comes back, then l comes back too.
    let writer = {
        let url = nodes[f].url("");
        tokio::spawn(async move {
            let client = http();
            let mut acked = Vec::new();
            for i in 400..700 {
                // Retried only when certainly not applied (503, or not sent): a retried write
                // of unknown outcome could apply twice, which the feed would rightly show.
                for _ in 0..100 {
                    let resp = client
                        .put(format!("{url}/v1/kv/key{i:06}"))
                        .body(format!("value{i}"))
                        .send()
                        .await;
                    match resp.map(|r| r.status().as_u16()) {
                        Ok(200) => acked.push(i),
                        Ok(503) => {}
                        Err(e) if e.is_connect() => {}
                        _ => break,
                    }
                    if acked.last() == Some(&i) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            acked
        })
    };
    wait_for("writes to reach key 450", || async {
        let (code, _) = get_value(&nodes[f], "key000450", "consistency=stale").await;
        (code == 200).then_some(())
    })
    .await;
    nodes[l].kill();
    nodes[g].restart(false);
    let install = r#"raftwasm_raft_snapshot_duration_seconds_count{kind="install"}"#;
    wait_for("node g to install the snapshot", || async {
        (metric_value(&nodes[g], install).await >= 1.0).then_some(())
    })
    .await;
    acked.extend(writer.await.unwrap());
    nodes[l].restart(false);
    assert!(
        acked.len() > 600,
        "only {} writes acknowledged",
        acked.len()
    );

    // Every node's feed ends up with every acknowledged write.
    let want: BTreeMap<String, String> = acked
        .iter()
        .map(|i| (format!("key{i:06}"), format!("value{i}")))
        .collect();
    for (n, feed) in feeds.iter().enumerate() {
        wait_for(&format!("node {n}'s feed to hold every write"), || async {
            let have: BTreeSet<(String, String)> = feed
                .lock()
                .unwrap()
                .iter()
                .filter_map(|(_, _, k, v)| Some((k.clone(), v.clone()?)))
                .collect();
            want.iter()
                .all(|(k, v)| have.contains(&(k.clone(), v.clone())))
                .then_some(())
        })
        .await;
    }
    *stop.lock().unwrap() = true;
    let copies: Vec<Vec<Seen>> = feeds.iter().map(|f| f.lock().unwrap().clone()).collect();
    for (n, feed) in copies.iter().enumerate() {
        // In order, each once: positions strictly increase and no write shows twice.
        for pair in feed.windows(2) {
            assert!(
                (pair[0].0, pair[0].1) < (pair[1].0, pair[1].1),
                "node {n}: {pair:?}"
            );
        }
        let writes: BTreeSet<_> = feed.iter().map(|(_, _, k, v)| (k, v)).collect();
        assert_eq!(writes.len(), feed.len(), "node {n} saw a change twice");
    }
    // And every node's feed is the same sequence, as far as the shortest goes.
    let shortest = copies.iter().map(Vec::len).min().unwrap();
    for feed in &copies[1..] {
        assert_eq!(feed[..shortest], copies[0][..shortest]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compacted_starts_resumes_inside_a_revision_and_slow_watchers() {
    let dir = TestDir::new();
    let opts = [
        "--snapshot-every",
        "1000",
        "--snapshot-keep-logs",
        "5",
        "--watch-history",
        "5",
        "--watch-slow-cutoff-ms",
        "300",
    ];
    let node = Node::start(dir.path(), "solo", true, &opts);
    wait_for_leader(&[&node]).await;
    for i in 0..20 {
        assert_eq!(put_many(&node, i..i + 1, 1).await.len(), 1);
    }
    // A txn: one revision, three changes.
    let txn = r#"{"op":"txn","ops":[{"op":"put","key":"t1","value":"a"},
        {"op":"put","key":"t2","value":"b"},{"op":"put","key":"t3","value":"c"}]}"#;
    let (code, body) = post_text(&node, "/v1/apply", txn).await;
    assert_eq!(code, 200, "{body}");
    let revision = node.status().await.unwrap().applied_index;

    // From revision 1: compacted, with the oldest revision kept.
    let resp = http()
        .get(node.url("/v1/watch?prefix=&from=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 410);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["code"], "compacted", "{error}");
    let oldest = error["oldest"].as_u64().unwrap();
    assert!(oldest > 1 && oldest <= revision, "{error}");
    let mut grpc = node.grpc_client().await;
    let request = host::proto::WatchKeysRequest {
        prefix: true,
        start_revision: 1,
        ..Default::default()
    };
    let status = grpc.watch_keys(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

    // Read the txn's first change, leave, come back after it: the other two follow.
    let url = node.url(&format!("/v1/watch?prefix=t&from={revision}"));
    let mut first = None;
    read_sse(http().get(&url).send().await.unwrap(), |e| {
        first = Some(e.id);
        false
    })
    .await;
    let first = first.unwrap();
    assert_eq!(first, format!("{revision}.0"));
    let resp = http()
        .get(&url)
        .header("Last-Event-ID", &first)
        .send()
        .await
        .unwrap();
    let mut rest = Vec::new();
    read_sse(resp, |e| {
        rest.push((e.event.clone(), e.id.clone()));
        e.event == "change"
    })
    .await;
    let ids: Vec<&str> = rest.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids[..2], [format!("{revision}.1"), format!("{revision}.2")]);
    assert_eq!(rest[2], ("progress".to_string(), revision.to_string()));

    // A gRPC watcher that never reads while 32 KiB values are written (38 MiB, well past what
    // the HTTP/2 windows and the watcher's queue hold: about 2.2 MiB, 69 changes, as measured
    // with the node's counter of changes sent): cut off, writes go on.
    // (On a node keeping the default history: here, it would fall out of the 5 revisions kept
    // and end as compacted first.)
    let dir = TestDir::new();
    let node = Node::start(
        dir.path(),
        "solo2",
        true,
        &["--watch-slow-cutoff-ms", "300"],
    );
    wait_for_leader(&[&node]).await;
    let mut grpc = node.grpc_client().await;
    let request = host::proto::WatchKeysRequest {
        prefix: true,
        ..Default::default()
    };
    let mut stalled = grpc.watch_keys(request).await.unwrap().into_inner();
    let big = "x".repeat(32 << 10);
    let client = http();
    for i in 0..1200 {
        let resp = client
            .put(node.url(&format!("/v1/kv/big{i}")))
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "write {i} while a watcher stalls"
        );
    }
    // The node ended the watch itself, before the watcher read anything.
    wait_for("the node to count the cut-off watch", || async {
        let cut = metric_value(&node, r#"raftwasm_watches_ended_total{reason="too_slow"}"#).await;
        let open = metric_value(&node, "raftwasm_watches_open").await;
        (cut == 1.0 && open == 0.0).then_some(())
    })
    .await;
    let mut received = 0;
    let reading = async {
        loop {
            match stalled.message().await {
                Ok(Some(reply)) => received += reply.events.len(),
                Ok(None) => panic!("the stream ended without an error"),
                Err(status) => break status,
            }
        }
    };
    let end = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the stalled watcher was never cut off");
    assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
    assert!(end.message().contains("too slow"), "{end:?}");
    assert!(
        received < 300,
        "a cut-off watcher got all {received} changes"
    );
}

/// `kvclient --command watch` prints each change once, as a JSON line, in order, and resumes by
/// itself when its node restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvclient_watch_prints_every_change_once_across_a_node_restart() {
    use std::io::BufRead;
    let dir = TestDir::new();
    let mut node = Node::start(dir.path(), "solo", true, &[]);
    wait_for_leader(&[&node]).await;
    assert_eq!(put_many(&node, 0..10, 4).await.len(), 10);
    let mut watcher = std::process::Command::new(env!("CARGO_BIN_EXE_kvclient"))
        .args([
            "--server",
            &node.grpc,
            "--command",
            "watch",
            "--prefix",
            "key",
        ])
        .args(["--from", "1", "--retries", "1000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run kvclient");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = watcher.stdout.take().expect("piped stdout");
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push(line);
            }
        })
    };
    let printed = |n: usize| {
        let lines = lines.clone();
        move || {
            let lines = lines.clone();
            async move { (lines.lock().unwrap().len() >= n).then_some(()) }
        }
    };
    wait_for("kvclient to print the first 10 changes", printed(10)).await;
    node.restart(false);
    wait_for_leader(&[&node]).await;
    assert_eq!(put_many(&node, 10..20, 4).await.len(), 10);
    // A last change: the feed is in order, so a change printed twice shows up before it.
    let resp = http()
        .put(node.url("/v1/kv/key999999"))
        .body("last")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_for("kvclient to print the last change", || {
        let lines = lines.clone();
        async move {
            let lines = lines.lock().unwrap();
            lines.iter().any(|l| l.contains("key999999")).then_some(())
        }
    })
    .await;
    let _ = watcher.kill();
    let _ = watcher.wait();
    let _ = reader.join();

    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 21, "{lines:#?}");
    let mut last = (0, 0);
    let mut keys = BTreeSet::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let at = (v["revision"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
        assert!(at > last, "{at:?} after {last:?}: {lines:#?}");
        last = at;
        assert_eq!(v["change"]["op"], "put", "{line}");
        keys.insert(v["key"].as_str().unwrap().to_string());
    }
    let mut expected: BTreeSet<String> = (0..20).map(|i| format!("key{i:06}")).collect();
    expected.insert("key999999".into());
    assert_eq!(keys, expected);
}
