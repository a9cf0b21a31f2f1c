//! What openraft measures inside a node (`GET /v1/debug/raft`): how long log entries spend in
//! each stage from proposal to apply (proposed, received by the Raft core, submitted to the log,
//! persisted, committed, applied) and the batch sizes at each step, as percentiles since the node
//! started. Where a write's time goes, for an operator or a benchmark, without a profiler.

use super::{Service, ServiceError};
use crate::auth::{Caller, Permission, Scope};

impl Service {
    /// openraft's runtime statistics as text.
    pub async fn raft_stats(&self, caller: &Caller) -> Result<String, ServiceError> {
        caller.allow(Permission::Read, Scope::Cluster)?;
        let stats =
            self.inner.raft.runtime_stats().await.map_err(|e| {
                ServiceError::unavailable(format!("the node is stopping: {e}"), None)
            })?;
        Ok(stats.display().multiline().to_string())
    }
}
