//! Building a snapshot file where it will lie: the file's head and the envelope's head are
//! written, the guest streams its state straight after them, then the rest of the envelope
//! (sessions, clock, change feed) and its checksum follow, and the file is synced and renamed
//! into place. The layout is [`super::snapshot`]'s; nothing of the state is held in memory, so
//! building a snapshot of a large state costs no more memory than the state itself.

use super::snapshot::{self, SnapshotError, SNAPSHOT_FILE};
use crate::types::{ModuleRecord, SnapshotData, SnapshotMeta};
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a snapshot is built before it is renamed into place. One build runs at a time
/// (openraft starts no other until it is done); one left by a crash is removed at start.
const BUILD_FILE: &str = "snapshot.bin.build";

/// A snapshot file being built.
#[derive(Debug)]
pub struct Build {
    file: File,
    path: PathBuf,
    /// Where the envelope starts in the file.
    envelope_at: u64,
    /// Where the guest state starts (the state's length goes in the 8 bytes before it).
    state_at: u64,
}

/// A built, synced snapshot file, not yet in place.
#[derive(Debug)]
pub struct Built {
    path: PathBuf,
    /// The envelope as it lies in the file (the open handle keeps it readable after renames).
    pub envelope: SnapshotData,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a build a crash left behind in `dir`.
pub fn remove_leftover(dir: &Path) {
    let path = dir.join(BUILD_FILE);
    if path.exists() {
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an unfinished snapshot");
        }
    }
}

impl Build {
    /// Starts a snapshot file in `dir` for `meta`, up to where the guest state goes.
    pub fn start(
        dir: &Path,
        meta: &SnapshotMeta,
        module_hash: &str,
        module: &[u8],
        modules: &[ModuleRecord],
    ) -> Result<Build, SnapshotError> {
        let path = dir.join(BUILD_FILE);
        // A build that failed after the guest wrote its state may have left its file here, and
        // that state is still the rollback checkpoint, read through an open handle: unlinked,
        // not overwritten.
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        // Read as well as written: the checksum is read back from it.
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        let head = snapshot::file_head(meta)?;
        let envelope = snapshot::begin(module_hash, module, modules, 0);
        file.write_all(&head).map_err(io(&path))?;
        file.write_all(&envelope).map_err(io(&path))?;
        let envelope_at = head.len() as u64;
        Ok(Build {
            file,
            path,
            envelope_at,
            state_at: envelope_at + envelope.len() as u64,
        })
    }

    /// A handle to write the guest state with, positioned where it goes, and that position.
    pub fn state_writer(&self) -> Result<(File, u64), SnapshotError> {
        let file = self.file.try_clone().map_err(io(&self.path))?;
        Ok((file, self.state_at))
    }

    /// Completes the envelope once `state_len` bytes of state were written through
    /// [`Build::state_writer`]: the rest of it, then its checksum (read back from the file, which
    /// is in the page cache), then a sync. Blocking, and long for a large state: call it after
    /// the guest is released.
    pub fn finish(
        mut self,
        state_len: u64,
        sessions: &[u8],
        clock_ms: u64,
        feed: &[u8],
    ) -> Result<Built, SnapshotError> {
        let path = self.path.clone();
        let file = &mut self.file;
        file.write_all_at(&state_len.to_le_bytes(), self.state_at - 8)
            .map_err(io(&path))?;
        file.seek(SeekFrom::Start(self.state_at + state_len))
            .map_err(io(&path))?;
        file.write_all(&snapshot::tail(sessions, clock_ms, feed))
            .map_err(io(&path))?;
        let end = file.stream_position().map_err(io(&path))?;
        let mut crc = crc32fast::Hasher::new();
        let mut piece = vec![0u8; 4 << 20];
        let mut at = self.envelope_at;
        while at < end {
            let n = piece.len().min((end - at) as usize);
            file.read_exact_at(&mut piece[..n], at).map_err(io(&path))?;
            crc.update(&piece[..n]);
            at += n as u64;
        }
        file.write_all(&crc.finalize().to_le_bytes())
            .map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        Ok(Built {
            path,
            envelope: SnapshotData::File {
                file: Arc::new(self.file),
                offset: self.envelope_at,
                len: end + 4 - self.envelope_at,
            },
        })
    }
}

impl Built {
    /// Renames the file into place as `dir`'s snapshot and syncs the directory.
    pub fn install(self, dir: &Path) -> Result<SnapshotData, SnapshotError> {
        if crate::failpoints::is_set(crate::failpoints::SNAPSHOT_BEFORE_RENAME) {
            std::process::abort();
        }
        let dest = dir.join(SNAPSHOT_FILE);
        fs::rename(&self.path, &dest).map_err(io(&dest))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(self.envelope)
    }

    /// Drops the file (a newer snapshot is in place); its envelope stays readable through the
    /// returned handle.
    pub fn discard(self) -> SnapshotData {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a stale snapshot");
        }
        self.envelope
    }
}
