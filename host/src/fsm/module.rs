//! Loading a guest: the wasmtime engine configured for deterministic execution, validation of
//! the component against the `raftwasm:fsm` world, and the limits every instance runs under.
//!
//! A module is compiled once ([`GuestModule::from_bytes`]); every [`GuestFsm`] made from it gets
//! its own store and instance.

use super::bindings::{Fsm, FsmPre};
use super::error::{FsmError, LoadError};
use super::machine::GuestFsm;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, LazyLock};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, Store};

/// Default fuel for one `apply` or `query` call. A guest-kv put costs a few thousand units, so
/// this leaves four orders of magnitude of headroom while stopping a runaway loop in well under
/// a second.
pub const DEFAULT_FUEL_PER_APPLY: u64 = 100_000_000;
/// Default fuel for one `snapshot` or `restore` call, which walk the whole state.
pub const DEFAULT_FUEL_PER_SNAPSHOT: u64 = 200_000_000_000;
/// Default cap on a guest's linear memory. A guest holds its state and, while snapshotting, a
/// serialized copy of it: 2 GiB leaves room for a few hundred MiB of state.
pub const DEFAULT_GUEST_MEMORY_MIB: u64 = 2048;
/// The wasm stack every guest gets. Fixed, so a deep recursion overflows at the same depth on
/// every node running the same host build.
const MAX_WASM_STACK_BYTES: usize = 512 * 1024;
/// Tables and instances are not what a hostile guest should exhaust the host with.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
const MAX_INSTANCES: usize = 64;

/// The limits every call runs under. Part of the replicated contract: all nodes of a cluster
/// must use the same values, or a command near a limit could succeed on one node and fail on
/// another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Fuel for one `apply` or `query` call.
    pub fuel_per_apply: u64,
    /// Fuel for one `snapshot` or `restore` call.
    pub fuel_per_snapshot: u64,
    /// Cap on guest linear memory, in MiB.
    pub memory_mib: u64,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            fuel_per_apply: DEFAULT_FUEL_PER_APPLY,
            fuel_per_snapshot: DEFAULT_FUEL_PER_SNAPSHOT,
            memory_mib: DEFAULT_GUEST_MEMORY_MIB,
        }
    }
}

impl GuestLimits {
    pub(super) fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// One engine per process: its configuration is fixed, and sharing it shares compiled code.
static ENGINE: LazyLock<Result<Engine, String>> = LazyLock::new(|| {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .max_wasm_stack(MAX_WASM_STACK_BYTES)
        // No threads: wasmtime is built without its `threads` feature, so shared memories and
        // atomics-wait are rejected at compile time.
        // Component-model async is off: calls are synchronous, and the per-call overhead halves.
        .concurrency_support(false);
    Engine::new(&config).map_err(|e| format!("{e:#}"))
});

/// Per-store data: the limiter that enforces the memory cap and remembers that it did.
#[derive(Debug)]
pub(super) struct StoreState {
    pub(super) limiter: GuestLimiter,
}

impl StoreState {
    pub(super) fn limiter_limit_mib(&self) -> u64 {
        (self.limiter.memory_bytes >> 20) as u64
    }
}

/// Refuses memory growth past the cap by trapping the call, and records it so the failure is
/// reported as [`super::CallError::MemoryLimit`] rather than as a generic trap.
#[derive(Debug)]
pub(super) struct GuestLimiter {
    memory_bytes: usize,
    pub(super) hit_memory_limit: bool,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit_memory_limit = true;
            wasmtime::bail!("guest memory limit exceeded");
        }
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

struct Inner {
    name: String,
    hash: String,
    /// The component as loaded: snapshots carry it to nodes that do not have it yet.
    bytes: Arc<[u8]>,
    limits: GuestLimits,
    engine: Engine,
    pre: FsmPre<StoreState>,
}

/// A compiled, validated guest component. Cheap to clone.
#[derive(Clone)]
pub struct GuestModule {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GuestModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestModule")
            .field("name", &self.inner.name)
            .field("hash", &self.inner.hash)
            .field("size", &self.inner.bytes.len())
            .field("limits", &self.inner.limits)
            .finish()
    }
}

/// SHA-256 (hex) of a component's bytes: the identity [`GuestModule::hash`] reports.
pub fn module_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The version word of a wasm binary's preamble tells a core module (1) from a component (0x0d).
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

impl GuestModule {
    /// Reads, compiles and validates the component at `path`.
    pub fn from_file(path: &Path, limits: GuestLimits) -> Result<Self, LoadError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            name: name.clone(),
            source,
        })?;
        Self::from_bytes(&name, &bytes, limits)
    }

    /// Compiles and validates a component; `name` identifies it in errors (a path, or
    /// "embedded guest-kv").
    pub fn from_bytes(name: &str, bytes: &[u8], limits: GuestLimits) -> Result<Self, LoadError> {
        let name = name.to_string();
        if bytes.get(..4) != Some(b"\0asm") {
            return Err(LoadError::NotWasm { name });
        }
        if bytes.get(4..8) == Some(&CORE_MODULE_VERSION[..]) {
            return Err(LoadError::CoreModule { name });
        }
        let engine = ENGINE.clone().map_err(|reason| LoadError::Compile {
            name: name.clone(),
            reason,
        })?;
        let component = Component::new(&engine, bytes).map_err(|e| LoadError::Compile {
            name: name.clone(),
            reason: format!("{e:#}"),
        })?;
        let mut linker = Linker::<StoreState>::new(&engine);
        // The host provides nothing. Whatever the guest imports (WASI, typically) is stubbed
        // with a function that traps with the same message on every node.
        linker
            .define_unknown_imports_as_traps(&component)
            .and_then(|()| linker.instantiate_pre(&component))
            .map_err(|e| LoadError::Instantiate {
                name: name.clone(),
                reason: format!("{e:#}"),
            })
            .and_then(|pre| {
                FsmPre::new(pre).map_err(|e| LoadError::WrongExports {
                    name: name.clone(),
                    reason: format!("{e:#}"),
                })
            })
            .and_then(|pre| {
                let module = GuestModule {
                    inner: Arc::new(Inner {
                        hash: module_hash(bytes),
                        bytes: Arc::from(bytes),
                        name: name.clone(),
                        limits,
                        engine,
                        pre,
                    }),
                };
                // Instantiate once now, so a guest that cannot start under these limits (a huge
                // initial memory, a trapping start function) is refused at load, not at the first
                // committed entry.
                module.new_instance().map_err(|e| LoadError::Instantiate {
                    name,
                    reason: e.to_string(),
                })?;
                Ok(module)
            })
    }

    /// Where the module came from, for messages.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// SHA-256 of the component bytes, hex: identifies the module across nodes.
    pub fn hash(&self) -> &str {
        &self.inner.hash
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.inner.bytes.len()
    }

    /// The component's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.inner.bytes
    }

    /// The limits instances of this module run under.
    pub fn limits(&self) -> GuestLimits {
        self.inner.limits
    }

    /// A running state machine with an empty state.
    pub fn start(&self) -> Result<GuestFsm, FsmError> {
        GuestFsm::new(self.clone())
    }

    /// A fresh store and instance.
    pub(super) fn new_instance(&self) -> Result<(Store<StoreState>, Fsm), FsmError> {
        let inner = &self.inner;
        let mut store = Store::new(
            &inner.engine,
            StoreState {
                limiter: GuestLimiter {
                    memory_bytes: inner.limits.memory_bytes(),
                    hit_memory_limit: false,
                },
            },
        );
        store.limiter(|state| &mut state.limiter);
        // What a guest may hand back in one call (a snapshot is its whole state) is bounded by
        // its memory cap, not by wasmtime's 128 MiB default.
        store.set_hostcall_fuel(inner.limits.memory_bytes());
        // Start functions run metered too.
        store
            .set_fuel(inner.limits.fuel_per_snapshot)
            .map_err(|e| FsmError::Instantiate(format!("{e:#}")))?;
        let fsm = inner.pre.instantiate(&mut store).map_err(|e| {
            if store.data().limiter.hit_memory_limit {
                FsmError::Instantiate(format!(
                    "its initial memory is over the guest memory limit of {} MiB",
                    inner.limits.memory_mib
                ))
            } else {
                FsmError::Instantiate(format!("{e:#}"))
            }
        })?;
        Ok((store, fsm))
    }
}
