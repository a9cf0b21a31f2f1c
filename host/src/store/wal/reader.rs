//! Reading the log: entries by index and durable metadata, from any thread, while the writer
//! appends.

use super::files::corrupt;
use super::{Index, Loc, WalReader};
use std::fs::File;
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader").finish_non_exhaustive()
    }
}

impl WalReader {
    /// The durable value of metadata `key`.
    pub fn meta(&self, key: u8) -> Option<Vec<u8>> {
        self.read_index().meta.get(&key).cloned()
    }

    /// The highest live entry index.
    pub fn last_index(&self) -> Option<u64> {
        self.read_index().entries.keys().next_back().copied()
    }

    /// The encoded entries with index in `range`, in order.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let wanted: Vec<(u64, Loc, Arc<File>)> = {
            let index = self.read_index();
            index
                .entries
                .range(range)
                .map(|(i, loc)| {
                    let file = index.files.get(&loc.segment).cloned().ok_or_else(|| {
                        corrupt(format!("entry {i}: segment {} is gone", loc.segment))
                    })?;
                    Ok((*i, *loc, file))
                })
                .collect::<io::Result<_>>()?
        };
        wanted
            .into_iter()
            .map(|(i, loc, file)| {
                let mut bytes = vec![0u8; loc.len as usize];
                file.read_exact_at(&mut bytes, loc.offset)?;
                Ok((i, bytes))
            })
            .collect()
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }
}
