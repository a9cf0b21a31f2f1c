//! The guest log as clients read it: the latest lines guests logged on this node (the `log`
//! of `raftwasm:fsm/context@0.2.0`), after a line number the reader already has. Each node keeps
//! its own: applied commands log the same lines on every node, queries only where they ran.

use super::{Service, ServiceError};
use crate::auth::{Caller, Permission, Scope};
use crate::store::{NumberedLine, KEPT_GUEST_LINES};
use serde::{Deserialize, Serialize};

/// One read of a node's guest log (`GET /v1/guest/log?after=N`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLogPage {
    /// The node that answered.
    pub node: String,
    /// Its kept lines numbered after `after`, oldest first.
    pub lines: Vec<NumberedLine>,
    /// The number of the last line logged so far: the next read's `after`.
    pub last_seq: u64,
    /// How many lines a node keeps: a reader further behind misses the oldest.
    pub kept: usize,
}

impl Service {
    /// The guest log lines this node kept after line `after`, for a caller with `read`.
    pub fn guest_log(&self, caller: &Caller, after: u64) -> Result<GuestLogPage, ServiceError> {
        caller.allow(Permission::Read, Scope::Cluster)?;
        let (lines, last_seq) = self.inner.sm.guest_log().after(after);
        Ok(GuestLogPage {
            node: self.inner.name.clone(),
            lines,
            last_seq,
            kept: KEPT_GUEST_LINES,
        })
    }
}
