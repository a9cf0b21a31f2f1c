//! The per-store data every guest instance carries: the limiter that enforces the memory cap (and
//! the table and instance caps) and remembers that it did, so a failed call is reported as
//! [`super::CallError::MemoryLimit`] rather than as a generic trap; and the context of the call
//! the store is in, which a 0.2.0 or 0.3.0 guest imports (the latter with its snapshot stream),
//! and the deterministic WASI a guest may import.

use super::context::{CallContext, Level};
use super::stream::SnapshotStream;
use super::wasi::{WasiState, MAX_OUTPUT_BYTES};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtxView, WasiView};

/// Tables and instances are not what a hostile guest should exhaust the host with.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
const MAX_INSTANCES: usize = 64;

/// Per-store data: the limiter that enforces the memory cap and remembers that it did, the
/// call's context, and WASI's state (which reads the same context).
#[derive(Debug)]
pub(super) struct StoreState {
    pub(super) limiter: GuestLimiter,
    pub(super) context: CallContext,
    /// What a 0.3.0 guest's `snapshot` writes or `restore` reads.
    pub(super) stream: SnapshotStream,
    wasi: WasiState,
    /// Whether calls may block the thread (the module imports WASI: see
    /// [`super::GuestModule::may_block`]).
    pub(super) may_block: bool,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl StoreState {
    /// The data of a fresh store whose guest may grow its memories to `memory_bytes`.
    pub(super) fn new(memory_bytes: usize, may_block: bool) -> Self {
        let context = CallContext::default();
        let wasi = WasiState::new(context.shared());
        StoreState {
            limiter: GuestLimiter::new(memory_bytes),
            context,
            stream: SnapshotStream::new(memory_bytes.saturating_mul(2)),
            wasi,
            may_block,
        }
    }

    /// Turns what the guest wrote to stdout and stderr during the call into its log lines
    /// (info and warn).
    pub(super) fn log_output(&mut self) {
        let output = self.wasi.take_output();
        for (bytes, level) in [(output.stdout, Level::Info), (output.stderr, Level::Warn)] {
            for line in String::from_utf8_lossy(&bytes).lines() {
                self.context.log(level, line.to_string());
            }
        }
        if output.dropped > 0 {
            self.context.log(
                Level::Warn,
                format!(
                    "{} more bytes of output dropped (at most {MAX_OUTPUT_BYTES} per call)",
                    output.dropped
                ),
            );
        }
    }

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
