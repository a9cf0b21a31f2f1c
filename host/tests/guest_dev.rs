//! The guest author's loop: `host guest new` writes a crate on the SDK that builds as it is and
//! passes the checker; `host dev` runs a one-node cluster that upgrades itself through the log
//! each time the wasm file changes, printing the checker's verdict first.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

const COUNTER: &str = env!("RAFTWASM_COUNTER_WASM");
const COUNTER_V2: &str = env!("RAFTWASM_COUNTER_V2_WASM");

#[test]
fn a_new_guest_builds_as_it_is_and_passes_the_check() {
    let root = TestDir::new();
    let parent = root.path().to_str().unwrap();
    let (ok, out) = host_command(&["guest", "new", "demo-guest", "--dir", parent]);
    assert!(ok, "{out}");
    let dir = root.path().join("demo-guest");
    for file in ["Cargo.toml", ".cargo/config.toml", "src/lib.rs"] {
        assert!(dir.join(file).is_file(), "{file} missing: {out}");
    }
    let (ok, out) = host_command(&["guest", "new", "demo-guest", "--dir", parent]);
    assert!(!ok && out.contains("exists already"), "{out}");
    let (ok, out) = host_command(&["guest", "new", "Bad Name", "--dir", parent]);
    assert!(!ok && out.contains("not a crate name"), "{out}");

    // As a guest author would: cargo build --release in the new crate. Its own target dir is
    // kept under this workspace's, so later runs reuse the compiled dependencies.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold");
    let built = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["build", "--release"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = target.join("wasm32-unknown-unknown/release/demo_guest.wasm");
    let script = root.path().join("script");
    std::fs::write(
        &script,
        "{\"apply\":{\"add\":5}}\n{\"query\":null}\n{\"apply\":{\"add\":-2}}\n",
    )
    .unwrap();
    let (ok, out) = host_command(&[
        "guest",
        "check",
        wasm.to_str().unwrap(),
        "--commands",
        script.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("world: raftwasm:fsm@0.3.0"), "{out}");
}

fn sha256_hex(path: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn host_dev_upgrades_through_the_log_when_the_file_changes() {
    let root = TestDir::new();
    let guest = root.path().join("guest.wasm");
    std::fs::copy(COUNTER, &guest).unwrap();
    let (grpc, web) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["dev", "--fsm", guest.to_str().unwrap()])
        .args(["--address", &format!("127.0.0.1:{grpc}")])
        .args(["--http", &format!("127.0.0.1:{web}")])
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let printed = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (stdout, printed) = (child.stdout.take().unwrap(), printed.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut p = printed.lock().unwrap();
                p.push_str(&line);
                p.push('\n');
            }
        })
    };
    let url = |path: &str| format!("http://127.0.0.1:{web}{path}");
    let client = http();
    let module_hash = || async {
        let status: serde_json::Value = client
            .get(url("/v1/status"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(status["fsm_module_hash"].as_str()?.to_string())
    };
    let v1 = sha256_hex(COUNTER);
    wait_for("the dev node to run v1", || async {
        (module_hash().await? == v1).then_some(())
    })
    .await;
    let apply = |body: &'static str| {
        let (client, url) = (client.clone(), url("/v1/apply"));
        async move {
            let resp = client.post(url).body(body).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(apply(r#"{"add":5}"#).await, (200, "5".into()));

    // A new build lands on the file: checked, then upgraded through the log.
    std::fs::copy(COUNTER_V2, &guest).unwrap();
    let v2 = sha256_hex(COUNTER_V2);
    wait_for("the dev node to run v2", || async {
        (module_hash().await? == v2).then_some(())
    })
    .await;
    let resp = client
        .post(url("/v1/query"))
        .body(r#""stats""#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), r#"{"total":5,"count":0}"#);
    assert_eq!(apply(r#"{"sub":1}"#).await, (200, "4".into()));

    // A broken build is refused, and v2 keeps running.
    std::fs::write(&guest, b"not a component").unwrap();
    wait_for("the dev node to refuse the broken file", || async {
        printed
            .lock()
            .unwrap()
            .contains("still running the previous version")
            .then_some(())
    })
    .await;
    assert_eq!(module_hash().await.unwrap(), v2);
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    let printed = printed.lock().unwrap().clone();
    let check = printed.find("dev: check of").expect(&printed);
    let upgraded = printed.find("dev: upgraded to").expect(&printed);
    assert!(check < upgraded, "{printed}");
    assert!(printed.contains("ok: deterministic"), "{printed}");
}
