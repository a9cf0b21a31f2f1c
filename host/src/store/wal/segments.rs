//! Segment turnover: starting the next segment (its head first, durable before the old one is
//! closed), and deleting, or keeping for reuse, the segments nothing needs any more.

use super::files::{prepare, segment_path, take_unread};
use super::record::{encode, seal, Record};
use super::replay::log_end;
use super::{close, Segment, Wal, RECYCLE};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

impl Wal {
    /// Starts the next segment and closes the one before, in that order (see [`replay`]).
    pub(super) fn rotate(&mut self) -> io::Result<()> {
        let (old, old_end) = (self.active.clone(), self.pos);
        let old_id = self.segments.last().expect("active segment").id;
        let want = self.segments.last().map_or(1, |s| s.id + 1);
        let (id, file) = match self.next.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("preparing a segment panicked")))?,
            None => {
                let reuse = take_unread(&mut self.recycled);
                prepare(&self.dir, want, reuse, self.segment_bytes)?
            }
        };
        if id != want {
            return Err(io::Error::other(format!(
                "prepared segment {id}, expected {want}"
            )));
        }
        self.start_segment(id, file)?;
        self.sync()?;
        close(&old, self.seal(old_id), old_end)
    }

    /// Makes the prepared `file` the active segment `id`, writes its head and starts preparing
    /// the one after it.
    pub(super) fn start_segment(&mut self, id: u64, file: Arc<File>) -> io::Result<()> {
        let mut head = Vec::new();
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let follow = index.meta.len() + usize::from(self.purged.is_some());
            let head_record = Record::Head {
                size: file.metadata()?.len(),
                end: log_end(&index, self.purged),
                follow: follow as u32,
            };
            encode(&mut head, &head_record);
            for (key, value) in &index.meta {
                encode(&mut head, &Record::Meta { key: *key, value });
            }
        }
        if let Some(upto) = self.purged {
            encode(&mut head, &Record::Purge { upto });
        }
        seal(&mut head, self.seal(id));
        file.write_all_at(&head, 0)?;
        self.active = file.clone();
        self.pos = head.len() as u64;
        self.head_len = self.pos;
        self.segments.push(Segment {
            id,
            max_index: None,
            truncates: false,
        });
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .files
            .insert(id, file);
        let reuse = take_unread(&mut self.recycled);
        if let Some(m) = &self.metrics {
            if reuse.is_some() {
                m.reused();
            }
            m.segments(self.segments.len(), self.disk_bytes());
        }
        let (dir, bytes) = (self.dir.clone(), self.segment_bytes);
        self.next = Some(
            std::thread::Builder::new()
                .name("raft-wal-next".into())
                .spawn(move || prepare(&dir, id + 1, reuse, bytes))?,
        );
        Ok(())
    }

    /// Deletes segments nothing needs any more: those holding only metadata and purges (later
    /// heads restate them), and the oldest ones whose entries are all purged. A segment with a
    /// truncation stays while an older one does, since replay applies it to them.
    pub(super) fn delete_obsolete(&mut self) {
        let active = self.segments.last().map(|s| s.id);
        let purged = self.purged;
        let mut prefix = true;
        let mut gone = Vec::new();
        self.segments.retain(|s| {
            if Some(s.id) == active {
                return true;
            }
            let only_meta = s.max_index.is_none() && !s.truncates;
            let all_purged = prefix && s.max_index.is_none_or(|m| Some(m) <= purged);
            if only_meta || all_purged {
                gone.push(s.id);
                false
            } else {
                prefix = false;
                true
            }
        });
        if gone.is_empty() {
            return;
        }
        if let Some(m) = &self.metrics {
            m.segments(self.segments.len(), self.disk_bytes());
        }
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for id in gone {
            let file = index.files.remove(&id);
            let path = segment_path(&self.dir, id);
            // Best effort: a segment that survives a crash is replayed and its entries dropped
            // again by the purge point restated in every later head.
            if let (Some(file), true) = (file, self.recycled.len() < RECYCLE) {
                let keep = path.with_extension("recycle");
                if std::fs::rename(&path, &keep).is_ok() {
                    self.recycled.push((keep, file));
                    continue;
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}
