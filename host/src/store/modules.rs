//! The guest modules a state machine knows: compiled once per hash, kept on disk in
//! `<data-dir>/modules/<sha256>.wasm` once activated, and checked before an upgrade is logged.

use crate::fsm::{CallError, CodeCache, FsmError, GuestLimits, GuestModule, LoadError, Machine};
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Directory (inside the data dir) holding every module this node has activated.
pub const MODULES_DIR: &str = "modules";

/// Why a module cannot become the state machine. Deterministic for a given module and state:
/// every node refuses the same upgrade for the same reason.
#[derive(Debug, Error)]
pub enum ModuleRejected {
    #[error("this node runs the native guest-kv benchmark baseline, which cannot switch modules")]
    Native,
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the new module cannot start: {0}")]
    Start(#[source] FsmError),
    #[error("the new module failed to take the state: {0}")]
    Restore(#[source] FsmError),
    #[error("the new module's restore() failed: {0}")]
    Refused(#[source] CallError),
    #[error("the active guest's snapshot failed: {0}")]
    Snapshot(#[source] FsmError),
}

/// Compiled modules by hash, and where activated ones are kept.
pub(super) struct Modules {
    dir: PathBuf,
    /// Limits for modules loaded from the log or a snapshot; `None` on the native baseline,
    /// which cannot switch modules.
    limits: Option<GuestLimits>,
    /// So a replay or a validated upgrade does not compile twice.
    compiled: Mutex<HashMap<String, GuestModule>>,
    /// So a restart does not compile again either.
    code: CodeCache,
}

impl Modules {
    pub(super) fn new(dir: PathBuf, limits: Option<GuestLimits>) -> Self {
        Modules {
            code: CodeCache::in_data_dir(&dir),
            dir,
            limits,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// False on the native baseline.
    pub(super) fn can_switch(&self) -> bool {
        self.limits.is_some()
    }

    /// Compiles `bytes` (or takes it from the cache) under this node's limits.
    pub(super) fn compile(&self, bytes: &[u8]) -> Result<GuestModule, ModuleRejected> {
        let limits = self.limits.ok_or(ModuleRejected::Native)?;
        let hash = crate::fsm::module::module_hash(bytes);
        if let Some(m) = self.cached(&hash) {
            return Ok(m);
        }
        // Compiled without the cache's lock held: compiling can take a while.
        let name = format!("sha256:{}", &hash[..12]);
        let module = GuestModule::load(&name, bytes, limits, Some(&self.code))?;
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, module.clone());
        Ok(module)
    }

    fn cached(&self, hash: &str) -> Option<GuestModule> {
        let compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        compiled.get(hash).cloned()
    }

    /// Writes `module` to `<dir>/modules/<hash>.wasm` (atomically, synced) unless it is there.
    pub(super) fn keep(&self, module: &GuestModule) -> io::Result<()> {
        keep_module(&self.dir, module.hash(), module.bytes())
    }
}

fn keep_module(dir: &Path, hash: &str, bytes: &[u8]) -> io::Result<()> {
    let modules = dir.join(MODULES_DIR);
    let path = modules.join(format!("{hash}.wasm"));
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&modules)?;
    let tmp = modules.join(format!("{hash}.wasm.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&modules)?.sync_all()
}

/// A new guest of `module` holding `state` (the active guest's snapshot).
pub(super) fn migrate(
    module: &GuestModule,
    state: Arc<Vec<u8>>,
) -> Result<Machine, ModuleRejected> {
    let mut fsm = module.start().map_err(ModuleRejected::Start)?;
    let outcome = fsm.restore(state).map_err(ModuleRejected::Restore)?;
    outcome.result.map_err(ModuleRejected::Refused)?;
    Ok(Machine::Wasm(fsm))
}
