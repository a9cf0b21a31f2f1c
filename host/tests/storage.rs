//! Storage tests: openraft's own conformance suite against our write-ahead log store and the
//! guest-backed state machine, on real files in a temporary directory.

use host::fsm::{GuestLimits, GuestModule, MachineSpec};
use host::store::{LogStore, StateMachine};
use host::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use std::path::Path;

struct Builder {
    module: MachineSpec,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(dir.path(), 1 << 16)?;
        let sm = StateMachine::open(dir.path().to_path_buf(), self.module.clone())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    let module = GuestModule::from_file(
        Path::new(env!("RAFTWASM_GUEST_KV_WASM")),
        GuestLimits::default(),
    )
    .expect("guest-kv loads");
    Suite::test_all(Builder {
        module: MachineSpec::Wasm(module),
    })
    .expect("conformance suite passes");
}
