//! Replacing the guest module through the log, so every node switches at the same index (see
//! [`crate::store::state_machine`]). The leader first validates the module: it must compile, be
//! a component exporting the state machine world, and restore the current state in a dry run; a
//! module that fails gets an error and nothing is logged. Followers forward to the leader.

use super::{Service, ServiceError};
use crate::auth::{Caller, Permission, Scope};
use crate::config::MAX_MODULE_BYTES;
use crate::types::{ModuleRecord, Request};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

/// What an accepted (or, on a dry run, validated) guest module upgrade reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleUpgrade {
    /// SHA-256 (hex) of the new module.
    pub hash: String,
    pub size: u64,
    /// The log index from which every node runs it (0 on a dry run).
    pub log_index: u64,
    /// True when only validated, nothing logged.
    pub dry_run: bool,
}

impl Service {
    /// Validates `module` on the leader and, unless `dry_run`, logs it as the new state machine.
    pub async fn upgrade_fsm(
        &self,
        caller: &Caller,
        module: Vec<u8>,
        dry_run: bool,
    ) -> Result<ModuleUpgrade, ServiceError> {
        caller.allow(Permission::Upgrade, Scope::Cluster)?;
        Self::check_size("module", module.len(), MAX_MODULE_BYTES)?;
        let metrics = self.metrics();
        if let Some(leader) = self.forward_target(&metrics, caller)? {
            return leader.upgrade_fsm(module, dry_run).await;
        }
        let checked = self
            .inner
            .sm
            .check_upgrade(module.clone())
            .await?
            .map_err(|e| ServiceError::invalid(format!("module rejected: {e}")))?;
        if dry_run {
            return Ok(ModuleUpgrade {
                hash: checked.hash,
                size: checked.size,
                log_index: 0,
                dry_run: true,
            });
        }
        let write = self.inner.raft.client_write(Request::Module {
            bytes: module,
            seed: false,
        });
        let written = timeout(self.inner.limits.request_timeout, write)
            .await
            .map_err(|_| self.timed_out("module upgrade was not committed"))??;
        match written.data.results.into_iter().next() {
            Some(Ok(response)) => {
                let rec: ModuleRecord = serde_json::from_slice(&response).map_err(|e| {
                    ServiceError::internal(format!("bad module upgrade response: {e}"))
                })?;
                let action = format!(
                    "upgrade the module to sha256:{} ({} bytes)",
                    rec.hash, rec.size
                );
                self.audit(caller, &action, written.log_id.index);
                Ok(ModuleUpgrade {
                    hash: rec.hash,
                    size: rec.size,
                    log_index: written.log_id.index,
                    dry_run: false,
                })
            }
            // Refused when applied (the same on every node); the old module stays active.
            Some(Err(error)) => Err(ServiceError::Guest { error }),
            None => Err(ServiceError::internal("module upgrade produced no result")),
        }
    }
}
