//! Storage tests: openraft's own conformance suite against our write-ahead log store and the
//! guest-backed state machine, on real files in a temporary directory; where the state machine
//! applies an entry.

use host::fsm::{GuestLimits, GuestModule, MachineSpec};
use host::metrics::Metrics;
use host::store::{LogStore, StateMachine};
use host::types::{Entry, LogId, Request, TypeConfig};
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, StorageError};
use std::path::Path;

struct Builder {
    module: MachineSpec,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let err = |e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(dir.path(), 1 << 16, None).map_err(err)?;
        let sm = StateMachine::open(
            dir.path().to_path_buf(),
            self.module.clone(),
            None,
            Default::default(),
        )
        .map_err(err)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test]
async fn openraft_storage_suite() {
    let module = GuestModule::from_file(
        Path::new(env!("RAFTWASM_GUEST_KV_WASM")),
        GuestLimits::default(),
    )
    .expect("guest-kv loads");
    Suite::test_all(Builder {
        module: MachineSpec::Wasm(module),
    })
    .await
    .expect("conformance suite passes");
}

fn entry(index: u64, commands: Vec<Vec<u8>>) -> Entry {
    let leader = LeaderId {
        term: 1,
        node_id: 1,
    };
    Entry {
        log_id: LogId::new(leader, index),
        payload: EntryPayload::Normal(Request::Commands(commands)),
    }
}

fn open(dir: &Path, guest: &str, metrics: &Metrics) -> StateMachine {
    let module = GuestModule::from_file(Path::new(guest), GuestLimits::default()).expect("loads");
    let (spec, metrics) = (MachineSpec::Wasm(module), Some(metrics.clone()));
    StateMachine::open(dir.to_path_buf(), spec, metrics, Default::default()).expect("opens")
}

fn inline_applies(metrics: &Metrics) -> String {
    let text = metrics.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("raftwasm_guest_inline_applies_total "));
    line.expect("the inline applies counter").to_string()
}

/// A guest-kv put is applied on the async worker that asks (no hand-off to the blocking pool).
/// An entry for a guest that imports WASI is given back: wasmtime-wasi's synchronous WASI
/// finishes a print with `block_on`, which panics on a worker; through openraft's `apply` it is
/// applied on the blocking pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_brief_apply_runs_on_the_worker_and_a_wasi_guests_goes_to_the_blocking_pool() {
    let (dir, metrics) = (tempfile::tempdir().unwrap(), Metrics::new().unwrap());
    std::fs::create_dir(dir.path().join("kv")).unwrap();
    std::fs::create_dir(dir.path().join("wasi")).unwrap();
    let kv = open(
        &dir.path().join("kv"),
        env!("RAFTWASM_GUEST_KV_WASM"),
        &metrics,
    );
    let put = guest_kv::Command::Put {
        key: "k".into(),
        value: "v".into(),
    };
    let response = kv.apply_here(entry(1, vec![put.encode()]));
    let response = response
        .expect("applied on the worker")
        .expect("no storage error");
    assert!(matches!(response.results[..], [Ok(_)]), "{response:?}");
    assert_eq!(
        inline_applies(&metrics),
        "raftwasm_guest_inline_applies_total 1"
    );

    let mut wasi = open(
        &dir.path().join("wasi"),
        env!("RAFTWASM_WASI_USER_WASM"),
        &metrics,
    );
    let print = entry(1, vec![b"print".to_vec()]);
    let print = wasi
        .apply_here(print)
        .expect_err("a WASI guest's entry is given back");
    let items = futures::stream::iter([Ok((print, None))]);
    wasi.apply(items)
        .await
        .expect("applied on the blocking pool");
    let (applied, _) = wasi.applied_state().await.unwrap();
    assert_eq!(applied.map(|id| id.index), Some(1));
    assert_eq!(
        inline_applies(&metrics),
        "raftwasm_guest_inline_applies_total 1"
    );
}
