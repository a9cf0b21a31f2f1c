//! Storage tests: openraft's own conformance suite against our write-ahead log store and the
//! guest-backed state machine, on real files in a temporary directory.

use host::fsm::{GuestLimits, GuestModule, MachineSpec};
use host::store::{LogStore, StateMachine};
use host::types::TypeConfig;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
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
