//! Live guest upgrades through the Raft log, on real 3-node clusters: v1 (guest-kv) → v2
//! (examples/guest-kv-v2) under continuous writes, restarts and a late node on v2 whatever their
//! `--fsm`, and rejected upgrades that leave the old guest active everywhere.

mod common;

use common::{
    add_voter, get_value, http, kvclient, three_nodes, upgrade_fsm, wait_for, wait_for_equal_state,
    wait_for_leader, Node,
};
use host::service::Status;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const V2: &str = env!("RAFTWASM_GUEST_KV_V2_WASM");

fn module_hash(path: &str) -> String {
    host::fsm::module::module_hash(&std::fs::read(path).expect("read module"))
}

async fn status(node: &Node) -> Status {
    node.status().await.expect("status")
}

/// POST /v1/apply with a guest-kv JSON command: (HTTP status, body).
async fn apply(node: &Node, command: &str) -> (u16, String) {
    let resp = http()
        .post(node.url("/v1/apply"))
        .body(command.to_string())
        .send()
        .await
        .expect("POST /v1/apply");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// Waits until every node runs module `hash` with the same module history.
async fn wait_for_module(nodes: &[&Node], hash: &str) -> Status {
    wait_for(&format!("every node on module {}", &hash[..12]), || async {
        let mut first: Option<Status> = None;
        for n in nodes {
            let s = n.status().await?;
            if s.fsm_module_hash != hash {
                return None;
            }
            match &first {
                Some(f) if f.fsm_modules != s.fsm_modules => return None,
                Some(_) => {}
                None => first = Some(s),
            }
        }
        first
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_under_writes_survives_restarts_and_reaches_a_late_node() {
    let root = tempfile::tempdir().unwrap();
    // A short log tail after snapshots, so the late node has to install one.
    let mut nodes = three_nodes(root.path(), &["--snapshot-keep-logs", "5"]).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    let leader = wait_for_leader(&refs).await;
    let v1 = status(&nodes[0]).await.fsm_module_hash;
    let v2 = module_hash(V2);
    assert_ne!(v1, v2);

    // Four writers, each on its own node in turn, until told to stop; acknowledged keys recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let url = nodes[w % 3].url("/v1/kv/");
        let (stop, acked) = (stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{i:05}");
                if let Ok(resp) = http()
                    .put(format!("{url}{key}"))
                    .body(key.clone())
                    .send()
                    .await
                {
                    if resp.status().is_success() {
                        acked.lock().unwrap().push(key);
                    }
                }
                i += 1;
            }
        }));
    }
    wait_for("writes flowing", || async {
        (acked.lock().unwrap().len() >= 200).then_some(())
    })
    .await;

    // The upgrade goes through a follower (forwarded to the leader) with kvclient, over gRPC.
    let follower = &nodes[(leader + 1) % 3];
    let (ok, out, err) = kvclient(&follower.grpc, &["--command", "upgrade", "--fsm", V2]);
    assert!(ok, "{out} {err}");
    assert!(
        out.contains(&v2) && out.contains("active from log index"),
        "{out}"
    );
    let before = acked.lock().unwrap().len();
    wait_for("writes after the upgrade", || async {
        (acked.lock().unwrap().len() >= before + 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    let on_v2 = wait_for_module(&refs, &v2).await;
    assert_eq!(on_v2.fsm_modules.len(), 2, "{:?}", on_v2.fsm_modules);
    assert_eq!(on_v2.fsm_modules[0].hash, v1);
    assert!(on_v2.fsm_module_since_index > on_v2.fsm_modules[0].since_index);
    let equal = wait_for_equal_state(&refs).await;
    let acked = acked.lock().unwrap().clone();
    println!(
        "{} writes acknowledged around the upgrade at index {}",
        acked.len(),
        on_v2.fsm_module_since_index
    );
    for key in &acked {
        assert_eq!(get_value(&nodes[leader], key, "").await, (200, key.clone()));
    }
    // v2's new command and query.
    assert_eq!(
        apply(&nodes[0], r#"{"op":"incr","key":"counter"}"#).await,
        (200, r#"{"value":"1"}"#.to_string())
    );

    // Restart every node, started (as before) with the embedded v1: they come back on v2.
    for n in nodes.iter_mut() {
        n.kill();
    }
    for n in nodes.iter_mut() {
        n.restart(false);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let leader = wait_for_leader(&refs).await;
    wait_for_module(&refs, &v2).await;
    let after = wait_for_equal_state(&refs).await;
    assert!(
        after.state_hash.as_ref().unwrap().applied_index
            >= equal.state_hash.as_ref().unwrap().applied_index
    );
    assert_eq!(
        apply(&nodes[1], r#"{"op":"incr","key":"counter"}"#).await,
        (200, r#"{"value":"2"}"#.to_string())
    );

    // Snapshot on the leader (log purged to a 5-entry tail), then a fourth node, started with
    // v1, joins: it installs the snapshot and runs v2 with identical state.
    let resp = http()
        .post(nodes[leader].url("/v1/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let n4 = Node::start(root.path(), "node4", false, &["--snapshot-keep-logs", "5"]);
    add_voter(&nodes[leader], &n4).await;
    let all: Vec<&Node> = nodes.iter().chain([&n4]).collect();
    wait_for_module(&all, &v2).await;
    wait_for_equal_state(&all).await;
    assert!(
        status(&n4).await.snapshot_index > 0,
        "node4 installed no snapshot"
    );
    // The revision (commands that changed state since the upgrade: the writes after it and the
    // two increments) came to node4 inside the snapshot, equal to the leader's.
    let revision = |n: &Node| {
        let url = n.url("/v1/query?consistency=stale");
        async move {
            let body = http()
                .post(url)
                .body(r#"{"op":"revision"}"#)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["revision"].as_u64().unwrap_or_else(|| panic!("{body}"))
        }
    };
    let on_n4 = revision(&n4).await;
    assert!(on_n4 >= 2, "revision {on_n4}");
    assert_eq!(on_n4, revision(&nodes[leader]).await);
    assert!(n4
        .data_dir
        .join("modules")
        .join(format!("{v2}.wasm"))
        .exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_upgrades_leave_the_old_guest_active_everywhere() {
    let root = tempfile::tempdir().unwrap();
    // A smaller restore/snapshot fuel budget, so a restore that loops runs out quickly.
    let nodes = three_nodes(root.path(), &["--fuel-per-snapshot", "300000000"]).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_leader(&refs).await;
    let v1 = status(&nodes[0]).await.fsm_module_hash;
    let bad_restore = std::fs::read(env!("RAFTWASM_BAD_RESTORE_WASM")).unwrap();

    // (module, a value that makes bad-restore fail, expected words in the error)
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "garbage",
            b"definitely not wasm".to_vec(),
            "",
            "not a WebAssembly file",
        ),
        (
            "core module",
            wat::parse_str("(module)").unwrap(),
            "",
            "core WebAssembly module",
        ),
        (
            "wrong exports",
            wat::parse_str("(component)").unwrap(),
            "",
            "does not implement",
        ),
        (
            "restore error",
            bad_restore.clone(),
            "RESTORE-ERR",
            "restore() failed",
        ),
        (
            "restore trap",
            bad_restore.clone(),
            "RESTORE-TRAP",
            "trapped",
        ),
        (
            "restore out of fuel",
            bad_restore,
            "RESTORE-LOOP",
            "ran out of fuel",
        ),
    ];
    for (i, (what, module, cue, expected)) in cases.into_iter().enumerate() {
        let via = &nodes[i % 3];
        if !cue.is_empty() {
            let resp = http()
                .put(via.url("/v1/kv/cue"))
                .body(cue)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
        }
        let (code, body) = upgrade_fsm(via, module, false).await;
        assert_eq!(code, 400, "{what}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{what}: {body}");
        // Nothing changed anywhere, and writes keep working.
        for n in &nodes {
            let s = status(n).await;
            assert_eq!(s.fsm_module_hash, v1, "{what}");
            assert_eq!(s.fsm_modules.len(), 1, "{what}: {:?}", s.fsm_modules);
        }
        let key = format!("after-{i}");
        let resp = http()
            .put(via.url(&format!("/v1/kv/{key}")))
            .body("ok")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{what}");
        assert_eq!(get_value(via, &key, "").await, (200, "ok".to_string()));
    }

    // A dry run of a good module validates it and changes nothing.
    let (code, body) = upgrade_fsm(&nodes[1], std::fs::read(V2).unwrap(), true).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["dry_run"], true);
    assert_eq!(body["hash"], module_hash(V2));
    for n in &nodes {
        assert_eq!(status(n).await.fsm_module_hash, v1);
    }
    wait_for_equal_state(&refs).await;
}

mod in_process {
    //! The state machine alone, entry by entry: what every node does with module entries.

    use host::fsm::{CallError, GuestLimits, GuestModule, MachineSpec};
    use host::store::StateMachine;
    use host::types::{Entry, LogId, Request};
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::storage::RaftStateMachine;
    use openraft::{EntryPayload, RaftSnapshotBuilder};

    fn spec(path: &str) -> MachineSpec {
        MachineSpec::Wasm(
            GuestModule::from_file(path.as_ref(), GuestLimits::default()).expect("load module"),
        )
    }

    fn entry(index: u64, request: Request) -> Entry {
        Entry {
            log_id: LogId::new(
                LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            ),
            payload: EntryPayload::Normal(request),
        }
    }

    fn module(path: &str, seed: bool) -> Request {
        Request::Module {
            bytes: std::fs::read(path).unwrap(),
            seed,
        }
    }

    fn put(key: &str, value: &str) -> Request {
        let put = guest_kv::Command::Put {
            key: key.into(),
            value: value.into(),
        };
        Request::Commands(vec![put.encode()])
    }

    #[tokio::test]
    async fn module_entries_switch_reject_and_travel_in_snapshots() {
        let (v1, v2) = (env!("RAFTWASM_GUEST_KV_WASM"), super::V2);
        let bad = env!("RAFTWASM_BAD_RESTORE_WASM");
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        // Started with the bank guest: the seed entry decides what runs, not --fsm.
        let mut sm = StateMachine::open(
            dir.path().join("a"),
            spec(env!("RAFTWASM_BANK_WASM")),
            None,
            Default::default(),
        )
        .unwrap();
        let out: Vec<_> = [
            entry(1, module(v1, true)),
            entry(2, put("k", "v")),
            entry(3, module(v1, true)),
            entry(4, put("cue", "RESTORE-TRAP")),
            entry(5, module(bad, false)),
            entry(6, module(v2, false)),
            entry(
                7,
                Request::Commands(vec![br#"{"op":"incr","key":"n"}"#.to_vec()]),
            ),
        ]
        .into_iter()
        .map(|e| sm.apply_entry(e).unwrap())
        .collect();
        let result = |i: usize| out[i].results[0].clone();
        assert!(result(0).is_ok() && result(1).is_ok());
        // A second seed changes nothing.
        assert!(String::from_utf8_lossy(&result(2).unwrap()).contains("ignored"));
        // bad-restore traps on this state: rejected, v1 stays and v2 then takes v1's state.
        match result(4) {
            Err(CallError::ModuleRejected { reason }) => {
                assert!(reason.contains("trap"), "{reason}")
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(result(5).is_ok(), "{:?}", result(5));
        assert_eq!(result(6).unwrap(), br#"{"value":"1"}"#);
        let status = sm.status();
        let hash = |p: &str| host::fsm::module::module_hash(&std::fs::read(p).unwrap());
        let history: Vec<(String, u64)> = status
            .modules
            .iter()
            .map(|m| (m.hash.clone(), m.since_index))
            .collect();
        assert_eq!(history, [(hash(v1), 1), (hash(v2), 6)]);
        assert!(dir
            .path()
            .join("a/modules")
            .join(format!("{}.wasm", hash(v2)))
            .exists());

        // The snapshot carries v2: a node started with bank installs it and runs v2.
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut other = StateMachine::open(
            dir.path().join("b"),
            spec(env!("RAFTWASM_BANK_WASM")),
            None,
            Default::default(),
        )
        .unwrap();
        other
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(other.status().module_hash, hash(v2));
        assert_eq!(other.status().modules, status.modules);
        let get = guest_kv::Query::Get { key: "k".into() };
        let got = other.query(get.encode()).await.unwrap().result.unwrap();
        let got: guest_kv::schema::GetResponse = guest_kv::schema::decode(&got).unwrap();
        assert_eq!(got.value.as_deref(), Some("v"));
        assert_eq!(
            other.state_hash().await.unwrap(),
            sm.state_hash().await.unwrap()
        );
        // And so does a restart of that node, from its own snapshot file.
        drop(other);
        let reopened = StateMachine::open(
            dir.path().join("b"),
            spec(env!("RAFTWASM_BANK_WASM")),
            None,
            Default::default(),
        )
        .unwrap();
        assert_eq!(reopened.status().module_hash, hash(v2));
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (make test builds with it)"
)]
async fn a_cluster_whose_seed_entry_was_never_logged_seeds_before_its_first_command() {
    let root = tempfile::tempdir().unwrap();
    // node1 bootstraps but "crashes" before logging its seed (failpoint); node2 runs another
    // module. The first write makes the leader log the seed first, so node2 replays into
    // guest-kv, not bank.
    let n1 = Node::start_with_env(
        root.path(),
        "node1",
        true,
        &[],
        &[(host::failpoints::ENV, host::failpoints::SKIP_SEED)],
    );
    wait_for_leader(&[&n1]).await;
    let s = status(&n1).await;
    assert!(
        s.fsm_modules.iter().all(|m| m.since_index == 0),
        "{:?}",
        s.fsm_modules
    );
    let resp = http()
        .put(n1.url("/v1/kv/first"))
        .body("write")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let s = status(&n1).await;
    assert_eq!(s.fsm_modules.len(), 1, "{:?}", s.fsm_modules);
    assert!(s.fsm_modules[0].since_index > 0);

    let n2 = Node::start(
        root.path(),
        "node2",
        false,
        &["--fsm", env!("RAFTWASM_BANK_WASM")],
    );
    add_voter(&n1, &n2).await;
    wait_for_module(&[&n1, &n2], &s.fsm_module_hash).await;
    wait_for_equal_state(&[&n1, &n2]).await;
    assert_eq!(
        get_value(&n2, "first", "consistency=stale").await,
        (200, "write".to_string())
    );
}
