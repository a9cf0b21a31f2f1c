//! Converting a log of the previous format (segments not closed, checksums without a salt):
//! replay it once with the rules it was written under, write what it holds into a new log
//! beside it, and swap the directories.

use super::files::{list, sync_dir, Format};
use super::replay::{replay, Mode};
use super::{Record, Wal, WalReader};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Entries per write while copying.
const CHUNK: usize = 1024;

fn aside(dir: &Path, what: &str) -> PathBuf {
    dir.with_extension(what)
}

/// Finishes or undoes a conversion that a crash interrupted: if the old log was moved aside
/// and the new one not yet moved in, the old one comes back (and is converted again).
pub(super) fn resume(dir: &Path) -> io::Result<()> {
    let old = aside(dir, "v2");
    if old.exists() {
        if !dir.exists() {
            std::fs::rename(&old, dir)?;
        } else {
            std::fs::remove_dir_all(&old)?;
        }
    }
    Ok(())
}

/// Rewrites the previous-format log in `dir` in the current format; returns its salt.
pub(super) fn rewrite_v2(dir: &Path, segment_bytes: u64) -> io::Result<u64> {
    let (ids, _) = list(dir)?;
    let old = replay(dir, &ids, Format::V2, Mode::Open { fresh: false })?;
    let purged = old.purged;
    let meta: Vec<(u8, Vec<u8>)> = old.index.meta.clone().into_iter().collect();
    let reader = WalReader {
        index: Arc::new(RwLock::new(old.index)),
    };
    let entries = reader.entries(..)?;

    let fresh = aside(dir, "v3.tmp");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)?;
    }
    let mut wal = Wal::open(&fresh, segment_bytes)?;
    let mut head: Vec<Record<'_>> = meta
        .iter()
        .map(|(key, value)| Record::Meta { key: *key, value })
        .collect();
    if let Some(upto) = purged {
        head.push(Record::Purge { upto });
    }
    wal.write(&head)?;
    for chunk in entries.chunks(CHUNK) {
        wal.write_entries(chunk)?;
    }
    let salt = wal.salt;
    drop(wal);
    tracing::info!(
        dir = %dir.display(),
        entries = entries.len(),
        "converted the write-ahead log to the current format"
    );
    let old_dir = aside(dir, "v2");
    std::fs::rename(dir, &old_dir)?;
    std::fs::rename(&fresh, dir)?;
    sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
    std::fs::remove_dir_all(&old_dir)?;
    Ok(salt)
}
