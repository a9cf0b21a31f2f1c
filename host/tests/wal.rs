//! The write-ahead log as an operator meets it: a bit flipped in a stopped voter's log stops it
//! with a message naming the file and offset, `host wal verify` finds the same, and a failing
//! `fdatasync` stops a node without acknowledging anything after it.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

/// `host wal verify --data-dir D`: success and what it printed (stdout, then stderr).
fn wal_verify(data_dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["wal", "verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run host wal verify");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn a_flipped_bit_in_a_stopped_voters_log_stops_it_and_wal_verify_says_where() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::start(root.path(), "n1", true, &[]);
    wait_for_leader(&[&node]).await;
    assert_eq!(put_many(&node, 0..300, 8).await.len(), 300);
    node.kill();

    let (ok, report) = wal_verify(&node.data_dir);
    assert!(ok && report.contains("ok: a node can start"), "{report}");
    // The segment holding the writes, and where its records end.
    let line = report
        .lines()
        .filter(|l| l.contains("entries") && l.contains("records end at offset"))
        .max_by_key(|l| l.split(" records").next().unwrap_or("").len())
        .unwrap_or_else(|| panic!("no segment with entries in {report}"));
    let file = line.split(": ").next().unwrap();
    let end: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let at = end / 3;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    drop(f);

    let (started, stderr) = node.run_to_exit(&[]);
    assert!(!started, "the node started on a damaged log");
    assert!(
        stderr.contains(file) && stderr.contains("offset") && stderr.contains("add it back"),
        "{stderr}"
    );
    let (ok, report) = wal_verify(&node.data_dir);
    assert!(
        !ok && report.contains("DAMAGED") && report.contains(file),
        "{report}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (make test builds with it)"
)]
async fn a_failed_fdatasync_stops_the_node_and_nothing_after_it_is_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    let armed = format!("{}=150", host::failpoints::WAL_SYNC_FAILS);
    let env = [(host::failpoints::ENV, armed.as_str())];
    let mut node = Node::start_with_env(root.path(), "n1", true, &[], &env);
    wait_for_leader(&[&node]).await;

    // One writer, one write at a time, so "after" is well defined.
    let client = http();
    let (mut acked, mut first_failed) = (Vec::new(), None);
    for i in 0..5000 {
        let put = client
            .get(node.url(&format!("/Put/k{i}/v{i}")))
            .send()
            .await;
        match put {
            Ok(r) if r.status().is_success() => {
                assert_eq!(
                    first_failed, None,
                    "write {i} acknowledged after one failed"
                );
                acked.push(i);
            }
            _ => {
                first_failed.get_or_insert(i);
            }
        }
        if first_failed.is_some() && !node.is_running() {
            break;
        }
    }
    assert!(first_failed.is_some(), "no write failed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while node.is_running() {
        assert!(std::time::Instant::now() < deadline, "the node still runs");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = node.log();
    assert!(log.contains("fdatasync failed"), "{log}");
    assert!(
        acked.len() > 50 && acked.len() < 150,
        "{} acknowledged",
        acked.len()
    );

    // Without the failpoint the node starts on its log and has every acknowledged write.
    node.env.clear();
    node.restart(false);
    wait_for_leader(&[&node]).await;
    for i in acked {
        let (code, body) = get_value(&node, &format!("k{i}"), "").await;
        assert_eq!(
            (code, body.as_str()),
            (200, format!("v{i}").as_str()),
            "k{i}"
        );
    }
}
