//! The per-store data every guest instance carries: the limiter that enforces the memory cap (and
//! the table and instance caps) and remembers that it did, so a failed call is reported as
//! [`super::CallError::MemoryLimit`] rather than as a generic trap; and the context of the call
//! the store is in, which a 0.2.0 guest imports.

use super::context::CallContext;
use wasmtime::ResourceLimiter;

/// Tables and instances are not what a hostile guest should exhaust the host with.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
const MAX_INSTANCES: usize = 64;

/// Per-store data: the limiter that enforces the memory cap and remembers that it did, and the
/// call's context.
#[derive(Debug)]
pub(super) struct StoreState {
    pub(super) limiter: GuestLimiter,
    pub(super) context: CallContext,
}

impl StoreState {
    pub(super) fn limiter_limit_mib(&self) -> u64 {
        (self.limiter.memory_bytes >> 20) as u64
    }
}

impl GuestLimiter {
    pub(super) fn new(memory_bytes: usize) -> Self {
        GuestLimiter {
            memory_bytes,
            hit_memory_limit: false,
            in_use: 0,
        }
    }
}

/// Refuses memory growth past the cap by trapping the call, and records it so the failure is
/// reported as [`super::CallError::MemoryLimit`] rather than as a generic trap.
#[derive(Debug)]
pub(super) struct GuestLimiter {
    memory_bytes: usize,
    pub(super) hit_memory_limit: bool,
    /// Linear memory granted so far, over every memory of the instance (for metrics).
    pub(super) in_use: usize,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit_memory_limit = true;
            wasmtime::bail!("guest memory limit exceeded");
        }
        self.in_use += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
}
