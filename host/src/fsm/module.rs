//! Loading a guest: the wasmtime engine configured for deterministic execution, validation of
//! the component against the `raftwasm:fsm` world, and the limits every instance runs under.
//!
//! A module is compiled once ([`GuestModule::from_bytes`]); every [`super::GuestFsm`] made from
//! it (`GuestModule::start`, in `machine`) gets its own store and instance.

use super::bindings::{may_block, shape, Fsm, FsmPre, LinkError, Shape, WorldVersion};
use super::code_cache::CodeCache;
use super::error::{FsmError, LoadError};
use super::limiter::StoreState;
use super::wasi::outside_async;
use crate::config::GuestLimits;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, LazyLock};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

/// The wasm stack every guest gets. Fixed, so a deep recursion overflows at the same depth on
/// every node running the same host build.
const MAX_WASM_STACK_BYTES: usize = 512 * 1024;

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

struct Inner {
    name: String,
    hash: String,
    /// The component as loaded: snapshots carry it to nodes that do not have it yet.
    bytes: Arc<[u8]>,
    limits: GuestLimits,
    engine: Engine,
    component: Component,
    pre: FsmPre,
    /// See [`GuestModule::may_block`].
    may_block: bool,
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

/// The process's engine, for tests that handle compiled code themselves.
#[cfg(test)]
pub(super) fn engine() -> Engine {
    ENGINE.clone().expect("the engine configuration is valid")
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
        Self::load_file(path, limits, None)
    }

    /// [`GuestModule::from_file`] through a [`CodeCache`].
    pub fn load_file(
        path: &Path,
        limits: GuestLimits,
        cache: Option<&CodeCache>,
    ) -> Result<Self, LoadError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            name: name.clone(),
            source,
        })?;
        Self::load(&name, &bytes, limits, cache)
    }

    /// Compiles and validates a component; `name` identifies it in errors (a path, or
    /// "embedded guest-kv").
    pub fn from_bytes(name: &str, bytes: &[u8], limits: GuestLimits) -> Result<Self, LoadError> {
        Self::load(name, bytes, limits, None)
    }

    /// [`GuestModule::from_bytes`], taking the compiled code from `cache` when it has it and
    /// keeping it there when it did not.
    pub fn load(
        name: &str,
        bytes: &[u8],
        limits: GuestLimits,
        cache: Option<&CodeCache>,
    ) -> Result<Self, LoadError> {
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
        let hash = module_hash(bytes);
        let component = match cache.and_then(|c| c.load(&engine, &hash)) {
            Some(component) => component,
            None => {
                let component = Component::new(&engine, bytes).map_err(|e| LoadError::Compile {
                    name: name.clone(),
                    reason: format!("{e:#}"),
                })?;
                if let Some(cache) = cache {
                    cache.store(&engine, &hash, &component);
                }
                component
            }
        };
        let mut linker = Linker::<StoreState>::new(&engine);
        FsmPre::link(&mut linker, &component)
            .map_err(|e| match e {
                LinkError::Import(import) => LoadError::Import {
                    name: name.clone(),
                    import,
                },
                LinkError::Exports(reason) => LoadError::WrongExports {
                    name: name.clone(),
                    reason,
                },
            })
            .and_then(|pre| {
                let module = GuestModule {
                    inner: Arc::new(Inner {
                        hash,
                        may_block: may_block(&component),
                        bytes: Arc::from(bytes),
                        name: name.clone(),
                        limits,
                        engine,
                        component,
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

    /// The version of the `raftwasm:fsm` world the component exports.
    pub fn world(&self) -> WorldVersion {
        self.inner.pre.version()
    }

    /// What the component exports and imports.
    pub fn shape(&self) -> Shape {
        shape(&self.inner.component, self.world())
    }

    /// Whether a call into it may block its thread (it imports WASI): such calls must not run
    /// on an async worker. A call into a module that imports nothing but the host's context
    /// runs anywhere, and needs no step out of the async runtime.
    pub fn may_block(&self) -> bool {
        self.inner.may_block
    }

    /// The limits instances of this module run under.
    pub fn limits(&self) -> GuestLimits {
        self.inner.limits
    }

    /// A fresh store and instance.
    pub(super) fn new_instance(&self) -> Result<(Store<StoreState>, Fsm), FsmError> {
        let inner = &self.inner;
        let state = StoreState::new(inner.limits.memory_bytes(), inner.may_block);
        let mut store = Store::new(&inner.engine, state);
        store.limiter(|state| &mut state.limiter);
        // What a guest may hand back in one call (a snapshot is its whole state) is bounded by
        // its memory cap, not by wasmtime's 128 MiB default.
        store.set_hostcall_fuel(inner.limits.memory_bytes());
        // Start functions run metered too.
        store
            .set_fuel(inner.limits.fuel_per_snapshot)
            .map_err(|e| FsmError::Instantiate(format!("{e:#}")))?;
        let instantiate = || inner.pre.instantiate(&mut store);
        let fsm = outside_async(inner.may_block, instantiate).map_err(|e| {
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
