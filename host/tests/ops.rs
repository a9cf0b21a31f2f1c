//! Operations: `/metrics` scraped from a 3-node cluster under traffic (counters move, every
//! family passes `promtool check metrics`, leader changes are counted), and the health probes
//! (`/livez`, `/readyz`, gRPC `grpc.health.v1`) of a node outside any cluster and of a leader;
//! a removed node that learns it was removed; the JSON log lines of cluster events.

mod common;

use common::{add_voter, http, put_many, three_nodes, wait_for, wait_for_leader, Node, TestDir};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Samples of one scrape: `name{labels}` (labels as printed) to value.
type Samples = BTreeMap<String, f64>;

async fn scrape(node: &Node) -> (String, Samples) {
    let resp = http().get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect();
    (text, samples)
}

/// The value of `series` (`name` or `name{a="b",...}` exactly as rendered), 0 when absent.
fn value(samples: &Samples, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// Series of family `name` (with any labels).
fn series<'a>(samples: &'a Samples, name: &str) -> Vec<(&'a String, f64)> {
    let prefix = format!("{name}{{");
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k, *v))
        .collect()
}

/// Runs `promtool check metrics` on `text`: its success and what it printed.
fn promtool(text: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.expect("promtool not found: scripts/test-tools.sh installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_under_traffic_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &[]).await;
    let l = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let f = (l + 1) % 3;
    let (_, before) = scrape(&nodes[l]).await;

    assert_eq!(put_many(&nodes[l], 0..200, 16).await.len(), 200);
    assert_eq!(put_many(&nodes[f], 200..220, 4).await.len(), 20);
    let mut grpc = nodes[l].grpc_client().await;
    grpc.put(host::proto::PutRequest {
        key: "grpc-key".into(),
        value: "v".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (text, after) = scrape(&nodes[l]).await;
    let (follower_text, follower) = scrape(&nodes[f]).await;

    // openraft's own stage timings: the leader proposed and applied the writes just made.
    let resp = http()
        .get(nodes[l].url("/v1/debug/raft"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stats = resp.text().await.unwrap();
    for line in ["ClientWrite", "submitted→persisted", "proposed→applied"] {
        assert!(stats.contains(line), "{line} missing from:\n{stats}");
    }

    let kv_puts = r#"raftwasm_requests_total{api="http",code="200",operation="/v1/kv/{*key}"}"#;
    assert!(
        value(&after, kv_puts) - value(&before, kv_puts) >= 200.0,
        "{text}"
    );
    let grpc_puts =
        r#"raftwasm_requests_total{api="grpc",code="Ok",operation="raftwasm.v1.Client/Put"}"#;
    assert!(value(&after, grpc_puts) >= 1.0, "{text}");
    for counter in [
        "raftwasm_wal_fsync_duration_seconds_count",
        "raftwasm_wal_appended_bytes_total",
        "raftwasm_write_batch_commands_count",
        r#"raftwasm_guest_call_duration_seconds_count{call="apply"}"#,
        r#"raftwasm_guest_fuel_per_call_sum{call="apply"}"#,
    ] {
        assert!(
            value(&after, counter) > value(&before, counter),
            "{counter} did not move:\n{text}"
        );
    }
    let applies = r#"raftwasm_guest_call_duration_seconds_count{call="apply"}"#;
    assert!(value(&after, applies) - value(&before, applies) >= 221.0);
    assert!(value(&after, "raftwasm_guest_memory_bytes") > 0.0);
    // Puts share entries (batched), so indexes grow by fewer than the puts.
    let applied = value(&after, "raftwasm_raft_applied_index");
    assert!(applied > value(&before, "raftwasm_raft_applied_index"));
    assert!(value(&after, "raftwasm_raft_commit_index") >= applied);
    assert!(value(&after, "raftwasm_raft_last_log_index") >= applied);
    assert_eq!(value(&after, "raftwasm_raft_members"), 3.0);
    assert_eq!(value(&after, "raftwasm_raft_is_leader"), 1.0);
    assert_eq!(value(&follower, "raftwasm_raft_is_leader"), 0.0);
    assert_eq!(series(&after, "raftwasm_raft_member_lag_entries").len(), 3);
    assert!(series(&follower, "raftwasm_raft_member_lag_entries").is_empty());
    let hash = nodes[l].status().await.unwrap().fsm_module_hash;
    let info = format!(r#"raftwasm_guest_module_info{{hash="{hash}"}}"#);
    assert_eq!(value(&after, &info), 1.0, "{text}");
    assert_eq!(series(&after, "raftwasm_guest_module_info").len(), 1);
    let forwarded = r#"raftwasm_forwarded_requests_total{operation="Put"}"#;
    assert!(value(&follower, forwarded) >= 20.0, "{follower_text}");
    let raft_calls: f64 = series(&follower, "raftwasm_requests_total")
        .iter()
        .filter(|(k, _)| k.contains(r#"operation="raftwasm.v1.Raft/"#))
        .map(|(_, v)| v)
        .sum();
    assert!(raft_calls > 0.0, "{follower_text}");

    for (who, text) in [("leader", &text), ("follower", &follower_text)] {
        let (ok, printed) = promtool(text);
        assert!(
            ok,
            "promtool refused the {who}'s metrics: {printed}\n{text}"
        );
    }
    // The check can fail: a counter named against the conventions is refused.
    let broken = format!(
        "{text}# HELP raftwasm_broken x\n# TYPE raftwasm_broken counter\nraftwasm_broken 1\n"
    );
    assert!(
        !promtool(&broken).0,
        "promtool accepted a counter without _total"
    );

    // Kill the leader: a survivor counts the leader change.
    let changes = "raftwasm_raft_leader_changes_total";
    let seen = value(&follower, changes);
    nodes[l].kill();
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != l)
        .map(|(_, n)| n)
        .collect();
    wait_for("a new leader", || async {
        let s = survivors[0].status().await?;
        (s.leader_id.is_some() && s.leader_id.as_deref() != Some(nodes[l].name.as_str()))
            .then_some(())
    })
    .await;
    // The counters come from a watcher that looks at Raft's metrics at a paced interval, and
    // `f` may learn of the new leader after survivors[0]: poll rather than read once.
    wait_for("the survivor to count the leader change", || async {
        let (_, later) = scrape(&nodes[f]).await;
        (value(&later, changes) > seen).then_some(())
    })
    .await;
    // The new leader campaigned for it.
    let new_leader = survivors[0].status().await.unwrap().leader_id.unwrap();
    let winner = survivors.iter().find(|n| n.name == new_leader).unwrap();
    wait_for("the new leader to count its election", || async {
        let (_, won) = scrape(winner).await;
        (value(&won, "raftwasm_raft_elections_started_total") >= 1.0).then_some(())
    })
    .await;
}

async fn grpc_health(node: &Node, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let reply = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

async fn readyz(node: &Node) -> (u16, serde_json::Value) {
    let resp = http().get(node.url("/readyz")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_follow_readiness() {
    let dir = tempfile::tempdir().unwrap();
    // Not bootstrapped, never added: live, not ready.
    let alone = Node::start(dir.path(), "alone", false, &[]);
    let live = http().get(alone.url("/livez")).send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
    let (code, body) = readyz(&alone).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["ready"], false);
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("not a member of any cluster yet") && reason.contains("--bs"),
        "{body}"
    );
    // A write there says the same, with how to join, instead of waiting for an election.
    let body = put_refused_as_not_member(&alone).await;
    assert!(
        body["error"].as_str().unwrap().contains("/AddVoter/"),
        "{body}"
    );
    let status = wait_for("the health service to answer", || grpc_health(&alone, "")).await;
    assert_eq!(status, ServingStatus::NotServing);

    // A bootstrapped node becomes leader: ready, and the health service says so.
    let leader = Node::start(dir.path(), "leader", true, &[]);
    wait_for("readyz 200", || async {
        let (code, _) = readyz(&leader).await;
        (code == 200).then_some(())
    })
    .await;
    let (_, body) = readyz(&leader).await;
    assert_eq!(body["ready"], true);
    assert_eq!(body["leader_id"], "leader");
    for service in ["", "raftwasm.v1.Client"] {
        let status = wait_for("SERVING", || async {
            let s = grpc_health(&leader, service).await?;
            (s == ServingStatus::Serving).then_some(s)
        })
        .await;
        assert_eq!(status, ServingStatus::Serving);
    }
    // The election is counted by a watcher that lets metrics settle first: it may trail readiness.
    wait_for("the election counted", || async {
        let (_, samples) = scrape(&leader).await;
        (value(&samples, "raftwasm_raft_elections_started_total") >= 1.0).then_some(())
    })
    .await;
}

/// A put on `node`, refused with 503 `not_member`: the error body.
async fn put_refused_as_not_member(node: &Node) -> serde_json::Value {
    let resp = http()
        .put(node.url("/v1/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not_member", "{body}");
    body
}

/// Lines of `log` from byte `from` on, each parsed as one JSON object.
fn json_lines(log: &str, from: usize) -> Vec<serde_json::Value> {
    log[from..]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The first JSON log line whose message contains `text`.
fn logged<'a>(lines: &'a [serde_json::Value], text: &str) -> Option<&'a serde_json::Value> {
    lines.iter().find(|l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(text))
    })
}

/// Vote and pre-vote requests `nodes` have received, summed.
async fn vote_requests(nodes: &[&Node]) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        let (_, samples) = scrape(node).await;
        sum += series(&samples, "raftwasm_requests_total")
            .iter()
            .filter(|(k, _)| {
                k.contains(r#"operation="raftwasm.v1.Raft/Vote""#)
                    || k.contains(r#"operation="raftwasm.v1.Raft/PreVote""#)
            })
            .map(|(_, v)| v)
            .sum::<f64>();
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_learns_it_was_removed_and_stops_campaigning() {
    let dir = TestDir::new();
    let mut nodes = three_nodes(dir.path(), &[]).await;
    let l = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let v = (l + 1) % 3;
    // Down while it is removed: it never receives the entry that removes it, and comes back
    // with a configuration in which it is still a voter.
    nodes[v].kill();
    let resp = http()
        .delete(nodes[l].url(&format!("/v1/cluster/nodes/{}", nodes[v].name)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let text_log = nodes[v].log().len();
    nodes[v].env.push(("RUST_LOG".into(), "info".into()));
    nodes[v].set_extra(&["--log-format", "json"]);
    nodes[v].restart(false);

    // The members refuse its votes: it learns why, and says so.
    let (code, body) = wait_for("the removed node to say so", || async {
        let (code, body) = readyz(&nodes[v]).await;
        let removed = body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("was removed from its cluster"));
        removed.then_some((code, body))
    })
    .await;
    assert_eq!(code, 503, "{body}");
    put_refused_as_not_member(&nodes[v]).await;
    let mut grpc = nodes[v].grpc_client().await;
    let refused = grpc
        .put(host::proto::PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // It stops campaigning: its term holds still and the members get no more vote or pre-vote
    // requests for 20 election timeouts (while it campaigned they came several times a second).
    let term = nodes[v].status().await.unwrap().term;
    let members: Vec<&Node> = (0..3).filter(|i| *i != v).map(|i| &nodes[i]).collect();
    let before = vote_requests(&members).await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(6);
    while std::time::Instant::now() < until {
        let s = nodes[v].status().await.unwrap();
        assert_eq!(s.term, term, "the removed node's term moved: {s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        vote_requests(&members).await,
        before,
        "the removed node still campaigns"
    );
    let leader = nodes[l].status().await.unwrap();
    assert_eq!(leader.members.len(), 2, "{leader:?}");
    assert_eq!(leader.leader_id.as_deref(), Some(nodes[l].name.as_str()));

    // Its log: plain text (no colour codes: stderr is a file) until the restart, then one JSON
    // object per line; the line about the removal names the node and its term.
    let log = nodes[v].log();
    assert!(
        !log[..text_log].contains('\x1b'),
        "colour codes in a log file"
    );
    let lines = json_lines(&log, text_log);
    let line = logged(&lines, "was removed from the cluster").expect("removal logged");
    assert_eq!(line["fields"]["node"], nodes[v].name.as_str(), "{line}");
    assert!(line["fields"]["term"].as_u64().is_some(), "{line}");
    assert_eq!(line["level"], "WARN", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_events_are_logged_as_json_with_the_node_name_and_term() {
    let dir = TestDir::new();
    let json = ["--log-format", "json"];
    let info = [("RUST_LOG", "info")];
    let n1 = Node::start_with_env(dir.path(), "first", true, &json, &info);
    let n2 = Node::start(dir.path(), "second", false, &[]);
    wait_for_leader(&[&n1]).await;
    add_voter(&n1, &n2).await;
    let resp = http().post(n1.url("/v1/snapshot")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v2 = std::fs::read(env!("RAFTWASM_GUEST_KV_V2_WASM")).unwrap();
    let resp = http()
        .post(n1.url("/v1/fsm"))
        .body(v2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    let lines = wait_for("every event logged", || async {
        let lines = json_lines(&n1.log(), 0);
        let all = [
            "leader elected",
            "membership changed",
            "snapshot in place",
            "module replaced",
        ]
        .iter()
        .all(|event| logged(&lines, event).is_some());
        all.then_some(lines)
    })
    .await;
    let events = [
        "campaigning",
        "leader elected",
        "membership changed",
        "snapshot in place",
        "module replaced",
    ];
    for event in events {
        let line = logged(&lines, event).unwrap_or_else(|| panic!("{event} not logged"));
        assert_eq!(line["fields"]["node"], "first", "{line}");
        assert!(line["fields"]["term"].as_u64() >= Some(1), "{line}");
    }
    let elected = logged(&lines, "leader elected").unwrap();
    assert_eq!(elected["fields"]["leader"], "first", "{elected}");
    let members = lines
        .iter()
        .rev()
        .find(|l| l["fields"]["message"] == "membership changed")
        .unwrap();
    let voters = members["fields"]["voters"].as_str().unwrap();
    assert!(
        voters.contains("first") && voters.contains("second"),
        "{members}"
    );
}
