//! The rollback checkpoint: the guest state a failed call is rolled back to before the journal
//! is replayed on it. One larger than [`SPILL_ABOVE_BYTES`] is kept in an unlinked scratch file
//! ([`spill_checkpoints_in`]) rather than in memory: it is read back only to roll a failed call
//! back, and a node holding a large state would otherwise carry a second copy of it for nothing.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Checkpoints larger than this go to a scratch file instead of staying in memory.
pub(super) const SPILL_ABOVE_BYTES: usize = 8 << 20;

/// Where large checkpoints are spilled: set once per process (the node's data directory, so
/// the scratch file sits on the disk the operator sized for the state, not on a `/tmp` that may
/// be memory); the system's temporary directory until then.
static SCRATCH_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Spill large rollback checkpoints into `dir` from now on (the first call wins).
pub fn spill_checkpoints_in(dir: &Path) {
    let _ = SCRATCH_DIR.set(dir.to_path_buf());
}

/// A new unlinked scratch file in the spill directory.
pub(super) fn scratch_file() -> std::io::Result<std::fs::File> {
    let dir = SCRATCH_DIR
        .get()
        .cloned()
        .unwrap_or_else(std::env::temp_dir);
    tempfile::tempfile_in(&dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
}

/// The state a failed call is rolled back to, before the journal is replayed on it.
#[derive(Debug, Default)]
pub(super) enum Checkpoint {
    /// The empty initial state.
    #[default]
    Empty,
    Memory(Arc<Vec<u8>>),
    /// In an unlinked file (gone with the process or the next checkpoint).
    Spilled {
        file: std::fs::File,
        len: usize,
    },
}

impl Checkpoint {
    pub(super) fn new(bytes: Arc<Vec<u8>>) -> Checkpoint {
        if bytes.len() <= SPILL_ABOVE_BYTES {
            return Checkpoint::Memory(bytes);
        }
        let spilled = scratch_file().and_then(|mut file| {
            file.write_all(&bytes)?;
            Ok(file)
        });
        match spilled {
            Ok(file) => Checkpoint::Spilled {
                file,
                len: bytes.len(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot spill the rollback checkpoint; it stays in memory");
                Checkpoint::Memory(bytes)
            }
        }
    }

    /// A checkpoint of `state`, which stays where it is (a slice of a snapshot envelope).
    pub(super) fn copy_of(state: &[u8]) -> Checkpoint {
        if state.len() <= SPILL_ABOVE_BYTES {
            return Checkpoint::Memory(Arc::new(state.to_vec()));
        }
        let spilled = scratch_file().and_then(|mut file| {
            file.write_all(state)?;
            Ok(file)
        });
        match spilled {
            Ok(file) => Checkpoint::Spilled {
                file,
                len: state.len(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot spill the rollback checkpoint; it stays in memory");
                Checkpoint::Memory(Arc::new(state.to_vec()))
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Checkpoint::Empty => 0,
            Checkpoint::Memory(bytes) => bytes.len(),
            Checkpoint::Spilled { len, .. } => *len,
        }
    }

    /// The checkpoint's bytes (`None`: the empty state).
    pub(super) fn load(&mut self) -> std::io::Result<Option<Arc<Vec<u8>>>> {
        match self {
            Checkpoint::Empty => Ok(None),
            Checkpoint::Memory(bytes) => Ok(Some(bytes.clone())),
            Checkpoint::Spilled { file, len } => {
                let mut bytes = Vec::with_capacity(*len);
                file.seek(SeekFrom::Start(0))?;
                file.take(*len as u64).read_to_end(&mut bytes)?;
                if bytes.len() != *len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} of {len} bytes", bytes.len()),
                    ));
                }
                Ok(Some(Arc::new(bytes)))
            }
        }
    }
}
