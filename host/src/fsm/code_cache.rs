//! Compiled guest code kept on disk, so a node that compiled a module once (at a start, an
//! upgrade or a snapshot install) loads the machine code on the next start instead of compiling
//! again: tens of milliseconds for guest-kv, seconds for the tens of MiB of an interpreter.
//!
//! One file per module and engine: `<data-dir>/compiled/<module sha256>-<engine>.cwasm`, the engine part a
//! hash of everything that makes wasmtime's code incompatible (its version, the configuration,
//! the CPU features). A file holds the SHA-256 of the code, then the code as
//! `Component::serialize` wrote it; it is written beside its name and renamed into place.
//! Anything that does not check out (missing, short, another digest) is ignored: the module is
//! compiled as without a cache, and the file is written again.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where compiled code is kept (created on first use).
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
}

/// Directory inside a node's data dir.
const COMPILED_DIR: &str = "compiled";

impl CodeCache {
    /// The cache of the node whose data dir is `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        CodeCache {
            dir: data_dir.join(COMPILED_DIR),
        }
    }

    fn path(&self, engine: &Engine, module_hash: &str) -> PathBuf {
        // SipHash with fixed keys: the same name for the same engine on every run.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir
            .join(format!("{module_hash}-{:016x}.cwasm", h.finish()))
    }

    /// The module's compiled code, if this node kept a sound copy for this engine.
    pub fn load(&self, engine: &Engine, module_hash: &str) -> Option<Component> {
        let bytes = std::fs::read(self.path(engine, module_hash)).ok()?;
        let (digest, code) = bytes.split_at_checked(32)?;
        if Sha256::digest(code).as_slice() != digest {
            tracing::warn!(
                module = module_hash,
                "compiled code on disk is damaged; compiling"
            );
            return None;
        }
        deserialize(engine, code)
    }

    /// Keeps `component`'s compiled code. Failing to is only logged: the next start compiles.
    pub fn store(&self, engine: &Engine, module_hash: &str, component: &Component) {
        if let Err(e) = self.write(engine, module_hash, component) {
            tracing::warn!(module = module_hash, error = %e, "could not keep compiled code");
        }
    }

    fn write(&self, engine: &Engine, module_hash: &str, c: &Component) -> std::io::Result<()> {
        let code = c.serialize().map_err(std::io::Error::other)?;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(engine, module_hash);
        let tmp = path.with_extension("cwasm.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&Sha256::digest(&code))?;
        file.write_all(&code)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir);
        Ok(())
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: &[u8]) -> Option<Component> {
    // SAFETY: `code` is what `Component::serialize` wrote for an engine with this
    // compatibility hash, in this node's own data directory, and it matched the SHA-256 written
    // with it, so it is those bytes whole; wasmtime checks its header and the engine settings
    // again and refuses code made for another engine (then this returns None and the module is
    // compiled).
    unsafe { Component::deserialize(engine, code) }.ok()
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::GuestModule;

    /// Loads guest-kv through the cache in `dir`; true if the code came from the cache.
    fn load(dir: &Path) -> bool {
        let cache = CodeCache::in_data_dir(dir);
        let had = std::fs::read_dir(dir.join(COMPILED_DIR)).is_ok_and(|mut d| d.next().is_some());
        let module = GuestModule::load(
            "guest-kv",
            crate::guests::GUEST_KV,
            Default::default(),
            Some(&cache),
        )
        .expect("guest-kv loads");
        let mut fsm = module.start().expect("starts");
        let entry = crate::fsm::EntryContext {
            index: 1,
            term: 1,
            unix_ms: 0,
            position: 0,
        };
        let put = fsm
            .apply(br#"{"op":"put","key":"k","value":"v"}"#, entry)
            .unwrap();
        assert!(put.result.is_ok(), "{:?}", put.result);
        had
    }

    fn the_file(dir: &Path) -> PathBuf {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(COMPILED_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.remove(0)
    }

    #[test]
    fn compiled_code_is_kept_reused_and_replaced_when_damaged() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!load(dir.path()), "nothing to reuse yet");
        let file = the_file(dir.path());
        let good = std::fs::read(&file).unwrap();
        let engine = crate::fsm::module::engine();
        let hash = crate::fsm::module::module_hash(crate::guests::GUEST_KV);
        assert!(CodeCache::in_data_dir(dir.path())
            .load(&engine, &hash)
            .is_some());

        // One flipped byte in the code, then a file cut short: refused, compiled, rewritten.
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        for damaged in [flipped, good[..good.len() / 3].to_vec(), Vec::new()] {
            std::fs::write(&file, &damaged).unwrap();
            assert!(CodeCache::in_data_dir(dir.path())
                .load(&engine, &hash)
                .is_none());
            load(dir.path());
            assert_eq!(
                std::fs::read(&file).unwrap(),
                good,
                "the file was written again"
            );
        }
    }
}
