//! The rollback checkpoint: the guest state a failed call is rolled back to before the journal
//! is replayed on it. One larger than [`SPILL_ABOVE_BYTES`] is kept in an unlinked scratch file
//! ([`spill_checkpoints_in`]) rather than in memory: it is read back only to roll a failed call
//! back, and a node holding a large state would otherwise carry a second copy of it for nothing.

use crate::snapshot_data::SnapshotData;
use std::io::Write;
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
    /// `len` bytes from `offset` of a file: an unlinked scratch file (gone with the process or
    /// the next checkpoint), or the snapshot file the state was restored from.
    Spilled {
        file: Arc<std::fs::File>,
        offset: u64,
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
            Ok(file) => Checkpoint::spilled(file, bytes.len()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot spill the rollback checkpoint; it stays in memory");
                Checkpoint::Memory(bytes)
            }
        }
    }

    /// The `len` bytes a scratch file holds.
    pub(super) fn spilled(file: std::fs::File, len: usize) -> Checkpoint {
        Checkpoint::Spilled {
            file: Arc::new(file),
            offset: 0,
            len,
        }
    }

    /// A checkpoint of the state a guest was restored from: where it already is (a large state
    /// in the snapshot file is not copied), or as [`Checkpoint::new`] keeps bytes.
    pub(super) fn of(state: SnapshotData) -> Checkpoint {
        if matches!(state, SnapshotData::File { len, .. } if len as usize <= SPILL_ABOVE_BYTES) {
            match state.clone().into_bytes() {
                Ok(bytes) => return Checkpoint::Memory(Arc::new(bytes)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the state; the checkpoint refers to its file")
                }
            }
        }
        match state {
            SnapshotData::Bytes(bytes) => Checkpoint::new(bytes),
            SnapshotData::File { file, offset, len } => Checkpoint::Spilled {
                file,
                offset,
                len: len as usize,
            },
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
            Ok(file) => Checkpoint::spilled(file, state.len()),
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

    /// The checkpoint's state, to restore (`None`: the empty state). A spilled one is read
    /// from its file only as the guest restores it.
    pub(super) fn state(&self) -> Option<SnapshotData> {
        match self {
            Checkpoint::Empty => None,
            Checkpoint::Memory(bytes) => Some(SnapshotData::Bytes(bytes.clone())),
            Checkpoint::Spilled { file, offset, len } => Some(SnapshotData::File {
                file: file.clone(),
                offset: *offset,
                len: *len as u64,
            }),
        }
    }
}
