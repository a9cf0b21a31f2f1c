//! Seeding a new cluster's first module entry, so every node that ever replays the log runs the
//! same module from the start, whatever its own `--fsm` (see [`crate::store::state_machine`]).
//!
//! Two callers: the bootstrap node right after initializing ([`crate::node`]), and a leader's
//! write batcher before it proposes commands into a log that has no module entry yet (the
//! bootstrap node may have died in between). A seed after another module entry is ignored when
//! applied, so racing seeds are harmless.

use crate::store::{Raft, StateMachine};
use crate::types::{Request, TypeConfig};
use openraft::error::{ClientWriteError, RaftError};
use std::time::Duration;
use thiserror::Error;

/// The seed entry was not committed.
#[derive(Debug, Error)]
#[error("logging the seed module failed: {source}")]
pub struct SeedError {
    #[source]
    source: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
}

/// Logs `sm`'s module as the cluster's first module entry. Retries for up to `retry_for` while
/// the node is not (yet) leader. Nothing to do on the native baseline.
pub async fn seed_module(
    raft: &Raft,
    sm: &StateMachine,
    retry_for: Duration,
) -> Result<(), SeedError> {
    let bytes = sm.active_module_bytes();
    if bytes.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + retry_for;
    loop {
        let write = raft.client_write(Request::Module {
            bytes: bytes.clone(),
            seed: true,
        });
        match write.await {
            Ok(_) => return Ok(()),
            // A fresh one-node cluster elects itself within an election timeout.
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "seed module entry not accepted yet; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(source) => return Err(SeedError { source }),
        }
    }
}
