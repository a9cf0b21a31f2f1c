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
    /// In memory, or in a file: an unlinked scratch file (gone with the process or the next
    /// checkpoint), or the snapshot file the state was restored from or built into.
    State(SnapshotData),
}

impl Checkpoint {
    /// A checkpoint of `bytes`: kept as they are, or spilled if they are large.
    pub(super) fn new(bytes: Arc<Vec<u8>>) -> Checkpoint {
        if bytes.len() <= SPILL_ABOVE_BYTES {
            return Checkpoint::State(SnapshotData::Bytes(bytes));
        }
        match spill(&bytes) {
            Ok(file) => Checkpoint::spilled(file, bytes.len()),
            Err(_) => Checkpoint::State(SnapshotData::Bytes(bytes)),
        }
    }

    /// A checkpoint of `state`, which stays where it is (a slice of a snapshot envelope).
    pub(super) fn copy_of(state: &[u8]) -> Checkpoint {
        if state.len() > SPILL_ABOVE_BYTES {
            if let Ok(file) = spill(state) {
                return Checkpoint::spilled(file, state.len());
            }
        }
        Checkpoint::State(SnapshotData::from(state.to_vec()))
    }

    /// The `len` bytes a scratch file holds.
    pub(super) fn spilled(file: std::fs::File, len: usize) -> Checkpoint {
        Checkpoint::State(SnapshotData::File {
            file: Arc::new(file),
            offset: 0,
            len: len as u64,
        })
    }

    /// A checkpoint of the state a guest was restored from or wrote: where it already is (a
    /// large state in the snapshot file is not copied), or as [`Checkpoint::new`] keeps bytes.
    pub(super) fn of(state: SnapshotData) -> Checkpoint {
        match state {
            SnapshotData::Bytes(bytes) => Checkpoint::new(bytes),
            file if file.len() as usize <= SPILL_ABOVE_BYTES => match file.clone().into_bytes() {
                Ok(bytes) => Checkpoint::State(SnapshotData::from(bytes)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the state; the checkpoint refers to its file");
                    Checkpoint::State(file)
                }
            },
            file => Checkpoint::State(file),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Checkpoint::Empty => 0,
            Checkpoint::State(state) => state.len() as usize,
        }
    }

    /// Whether it is in a file rather than in memory.
    pub(super) fn is_spilled(&self) -> bool {
        matches!(self, Checkpoint::State(SnapshotData::File { .. }))
    }

    /// The checkpoint's state, to restore (`None`: the empty state). One in a file is read
    /// only as the guest restores it.
    pub(super) fn state(&self) -> Option<SnapshotData> {
        match self {
            Checkpoint::Empty => None,
            Checkpoint::State(state) => Some(state.clone()),
        }
    }
}

/// `bytes` in a new scratch file (an error is logged: the caller keeps them in memory).
fn spill(bytes: &[u8]) -> std::io::Result<std::fs::File> {
    let spilled = scratch_file().and_then(|mut file| {
        file.write_all(bytes)?;
        Ok(file)
    });
    if let Err(e) = &spilled {
        tracing::warn!(error = %e, "cannot spill the rollback checkpoint; it stays in memory");
    }
    spilled
}
