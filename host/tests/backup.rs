//! Backup and restore on real processes: a backup taken through a follower (kvclient) and over
//! HTTP holds exactly the state at its index; `host restore` seeds a new one-node cluster from it
//! that reports the state hash the old cluster had at that index and takes more nodes as usual;
//! damaged and truncated files and used data dirs are refused, with nothing written.

mod common;

use common::{
    add_voter, free_port, get_value, http, kvclient, put_many, status_with_hash, three_nodes,
    wait_for_equal_state, wait_for_leader, Node, TestDir,
};
use host::store::backup;
use std::path::Path;
use std::process::Command;

/// Runs `host restore <args>`: (success, stdout, stderr).
fn restore(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("restore")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run host restore");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn restore_into(file: &Path, dir: &Path, id: &str, addr: &str) -> (bool, String, String) {
    restore(&[
        "--from",
        file.to_str().unwrap(),
        "--id",
        id,
        "--data-dir",
        dir.to_str().unwrap(),
        "--address",
        addr,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster_with_the_same_state() {
    let dir = TestDir::new();
    let nodes = three_nodes(dir.path(), &[]).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    let l = wait_for_leader(&refs).await;
    let f = (l + 1) % 3;
    assert_eq!(put_many(&nodes[l], 0..300, 16).await.len(), 300);
    let before = wait_for_equal_state(&refs).await;
    let at = before.state_hash.clone().unwrap();

    // Through a follower: the leader makes it, at the index everything written so far is at.
    let file = dir.path().join("cluster.backup");
    let (ok, out, err) = kvclient(
        &nodes[f].grpc,
        &["--command", "backup", "--out", file.to_str().unwrap()],
    );
    assert!(ok, "{out} {err}");
    let bytes = std::fs::read(&file).unwrap();
    let (header, _) = backup::read(&bytes).unwrap();
    assert_eq!(header.index, at.applied_index, "{header:?}");
    assert_eq!(header.made_by, nodes[l].name);
    assert_eq!(header.members.len(), 3);
    assert_eq!(header.module_hash, before.fsm_module_hash);
    assert!(
        out.contains(&format!("log index {}", header.index)),
        "{out}"
    );
    // Over HTTP, from another node: the same state, byte for byte.
    let resp = http()
        .get(nodes[(l + 2) % 3].url("/v1/backup"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let over_http = resp.bytes().await.unwrap();
    let (again, _) = backup::read(&over_http).unwrap();
    assert_eq!(
        (again.index, &again.envelope_sha256),
        (header.index, &header.envelope_sha256)
    );

    // Writes after the backup are not in it.
    assert_eq!(put_many(&nodes[l], 300..400, 16).await.len(), 100);
    let addr = format!("127.0.0.1:{}", free_port());
    let restored_dir = dir.path().join("restored");
    let (ok, out, err) = restore_into(&file, &restored_dir, "restored", &addr);
    assert!(ok, "{out} {err}");
    assert!(
        out.contains(&format!("log index {}", header.index)),
        "{out}"
    );
    let restored = Node::start_bound(dir.path(), "restored", false, &[], &addr);
    wait_for_leader(&[&restored]).await;
    let s = status_with_hash(&restored).await.unwrap();
    assert_eq!(s.state_hash.as_ref().unwrap().sha256, at.sha256);
    assert_eq!(s.fsm_module_hash, before.fsm_module_hash);
    assert_eq!(s.members.len(), 1, "{s:?}");
    assert_eq!(s.members[0].id, "restored");
    assert!(s.applied_index >= header.index);
    assert_eq!(
        get_value(&restored, "key000299", "").await,
        (200, "value299".into())
    );
    assert_eq!(get_value(&restored, "key000300", "").await.0, 404);

    // It takes writes and new members as any cluster does.
    let joiner = Node::start(dir.path(), "joiner", false, &[]);
    add_voter(&restored, &joiner).await;
    assert_eq!(put_many(&joiner, 400..420, 4).await.len(), 20);
    wait_for_equal_state(&[&restored, &joiner]).await;

    // Refused, nothing written: a used data dir, a damaged file, a truncated one.
    let (ok, _, err) = restore_into(&file, &restored_dir, "restored", &addr);
    assert!(!ok);
    assert!(err.contains("already holds data"), "{err}");
    let mut damaged = bytes.clone();
    let middle = bytes.len() - (header.envelope_bytes as usize) / 2;
    damaged[middle] ^= 0x01;
    let bad = dir.path().join("damaged.backup");
    std::fs::write(&bad, &damaged).unwrap();
    let fresh = dir.path().join("fresh");
    let (ok, _, err) = restore_into(&bad, &fresh, "fresh", &addr);
    assert!(!ok);
    assert!(err.contains("damaged backup"), "{err}");
    std::fs::write(&bad, &bytes[..bytes.len() - 1000]).unwrap();
    let (ok, _, err) = restore_into(&bad, &fresh, "fresh", &addr);
    assert!(!ok);
    assert!(err.contains("truncated backup"), "{err}");
    assert!(
        !fresh.exists(),
        "a refused restore created {}",
        fresh.display()
    );
}
