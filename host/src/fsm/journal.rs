//! The rollback journal: every command applied since the checkpoint, with its entry, replayed
//! on the checkpoint to rebuild the state a failed call must be rolled back to.
//!
//! Beside a small checkpoint it is kept in memory. Beside a spilled one (a large state) it is
//! appended to an unlinked scratch file instead, so it can grow as large as the state itself
//! before the next checkpoint: a checkpoint costs a full `snapshot` of the guest, and taking one
//! every few MiB of commands made a large state's writes (and a restart's replay of the log)
//! spend most of their time copying the state out.

use super::checkpoint::scratch_file;
use super::context::EntryContext;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// Journal bytes per command beyond the command itself: its end offset (in memory) or length
/// (in the file), and its entry.
const PER_COMMAND: usize = std::mem::size_of::<(usize, EntryContext)>();
/// A journal buffer larger than this is given back when the journal is cleared rather than kept
/// for reuse, so an idle node does not hold the last burst's journal.
const KEEP_CAPACITY: usize = 1 << 20;
/// Size of a spilled record's header: index, term, time, position and command length.
const RECORD_HEAD: usize = 8 + 8 + 8 + 4 + 8;

/// Commands applied since the checkpoint, in order (successful or refused by the guest: both
/// ran, and both must run again for a replay to reach the same state).
#[derive(Default)]
pub(super) struct Journal {
    records: Records,
    /// Size of what is recorded, per [`Journal::bytes`].
    bytes: usize,
    commands: usize,
    /// A spilled record could not be written: the journal no longer covers every command.
    broken: Option<String>,
}

enum Records {
    /// Commands back to back in one buffer, with their end offsets and entries, so recording a
    /// command allocates nothing.
    Memory {
        commands: Vec<u8>,
        ends: Vec<(usize, EntryContext)>,
    },
    /// Records appended to an unlinked file (gone with the process).
    Spilled(BufWriter<File>),
}

impl Default for Records {
    fn default() -> Self {
        Records::Memory {
            commands: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("commands", &self.commands)
            .field("bytes", &self.bytes)
            .field("spilled", &self.is_spilled())
            .finish()
    }
}

impl Journal {
    /// Bytes recorded: the commands plus a fixed overhead per command.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// What recording `command` adds to [`Journal::bytes`].
    pub(super) fn recorded_bytes(command: &[u8]) -> usize {
        command.len() + PER_COMMAND
    }

    pub(super) fn is_spilled(&self) -> bool {
        matches!(self.records, Records::Spilled(_))
    }

    /// Records `command`. A spilled journal that cannot be written is marked broken (a rebuild
    /// then fails rather than reach a state short of some commands); the caller should take a
    /// checkpoint at once, which starts a new journal.
    pub(super) fn push(&mut self, command: &[u8], entry: EntryContext) -> std::io::Result<()> {
        self.bytes += Self::recorded_bytes(command);
        self.commands += 1;
        match &mut self.records {
            Records::Memory { commands, ends } => {
                commands.extend_from_slice(command);
                ends.push((commands.len(), entry));
                Ok(())
            }
            Records::Spilled(writer) => {
                let written = write_record(writer, command, entry);
                if let Err(e) = &written {
                    self.broken.get_or_insert_with(|| e.to_string());
                }
                written
            }
        }
    }

    /// Empties the journal for a new checkpoint; `spill` says where the next one is kept (a
    /// scratch file that cannot be made leaves it in memory).
    pub(super) fn clear(&mut self, spill: bool) {
        self.bytes = 0;
        self.commands = 0;
        self.broken = None;
        let records = std::mem::take(&mut self.records);
        self.records = match (records, spill) {
            (Records::Memory { commands, ends }, false) => Records::Memory {
                commands: reuse(commands, 1),
                ends: reuse(ends, PER_COMMAND),
            },
            (Records::Spilled(writer), true) => match rewind(writer) {
                Ok(file) => Records::Spilled(BufWriter::with_capacity(1 << 20, file)),
                Err(e) => spilled_or_memory(Some(e)),
            },
            (_, true) => spilled_or_memory(None),
            (_, false) => Records::default(),
        };
    }

    /// Calls `replay` on every recorded command in order; stops at its first error.
    pub(super) fn replay(
        &mut self,
        mut replay: impl FnMut(usize, &[u8], EntryContext) -> Result<(), String>,
    ) -> Result<(), String> {
        if let Some(why) = &self.broken {
            return Err(format!("the journal could not be written: {why}"));
        }
        match &mut self.records {
            Records::Memory { commands, ends } => {
                let mut start = 0;
                for (i, &(end, entry)) in ends.iter().enumerate() {
                    replay(i, &commands[start..end], entry)?;
                    start = end;
                }
                Ok(())
            }
            Records::Spilled(writer) => {
                let read = |e: std::io::Error| format!("reading the journal: {e}");
                writer.flush().map_err(read)?;
                let file = writer.get_mut();
                let end = file.stream_position().map_err(read)?;
                file.seek(SeekFrom::Start(0)).map_err(read)?;
                let mut reader = BufReader::with_capacity(1 << 20, (&*file).take(end));
                let mut command = Vec::new();
                let mut result = Ok(());
                for i in 0..self.commands {
                    let entry = match read_record(&mut reader, &mut command) {
                        Ok(entry) => entry,
                        Err(e) => {
                            result = Err(read(e));
                            break;
                        }
                    };
                    if let Err(e) = replay(i, &command, entry) {
                        result = Err(e);
                        break;
                    }
                }
                // Appends go on from the end whatever the replay did.
                drop(reader);
                writer.get_mut().seek(SeekFrom::Start(end)).map_err(read)?;
                result
            }
        }
    }
}

/// A cleared buffer, or a fresh one if it had grown past [`KEEP_CAPACITY`].
fn reuse<T>(mut buffer: Vec<T>, item_bytes: usize) -> Vec<T> {
    buffer.clear();
    match buffer.capacity() * item_bytes > KEEP_CAPACITY {
        true => Vec::new(),
        false => buffer,
    }
}

/// The spilled file, emptied for reuse.
fn rewind(writer: BufWriter<File>) -> std::io::Result<File> {
    // Whatever is still buffered belongs to the journal being dropped.
    let (mut file, _) = writer.into_parts();
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

fn spilled_or_memory(earlier: Option<std::io::Error>) -> Records {
    let file = match earlier {
        Some(e) => Err(e),
        None => scratch_file(),
    };
    match file {
        Ok(file) => Records::Spilled(BufWriter::with_capacity(1 << 20, file)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot spill the rollback journal; it stays in memory");
            Records::default()
        }
    }
}

fn write_record(out: &mut impl Write, command: &[u8], entry: EntryContext) -> std::io::Result<()> {
    let mut head = [0u8; RECORD_HEAD];
    head[0..8].copy_from_slice(&entry.index.to_le_bytes());
    head[8..16].copy_from_slice(&entry.term.to_le_bytes());
    head[16..24].copy_from_slice(&entry.unix_ms.to_le_bytes());
    head[24..28].copy_from_slice(&entry.position.to_le_bytes());
    head[28..36].copy_from_slice(&(command.len() as u64).to_le_bytes());
    out.write_all(&head)?;
    out.write_all(command)
}

/// Reads the next record's command into `command` and returns its entry.
fn read_record(input: &mut impl Read, command: &mut Vec<u8>) -> std::io::Result<EntryContext> {
    let mut head = [0u8; RECORD_HEAD];
    input.read_exact(&mut head)?;
    let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or_default());
    let entry = EntryContext {
        index: word(0),
        term: word(8),
        unix_ms: word(16),
        position: u32::from_le_bytes(head[24..28].try_into().unwrap_or_default()),
    };
    let len = usize::try_from(word(28))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "record too long"))?;
    command.clear();
    command.resize(len, 0);
    input.read_exact(command)?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> EntryContext {
        EntryContext {
            index,
            term: 3,
            unix_ms: 1_700_000_000_000 + index,
            position: index as u32 % 7,
        }
    }

    fn replayed(journal: &mut Journal) -> Vec<(usize, Vec<u8>, EntryContext)> {
        let mut seen = Vec::new();
        journal
            .replay(|i, command, entry| {
                seen.push((i, command.to_vec(), entry));
                Ok(())
            })
            .unwrap();
        seen
    }

    #[test]
    fn both_kinds_replay_what_was_recorded_in_order() {
        for spill in [false, true] {
            let mut journal = Journal::default();
            journal.clear(spill);
            assert_eq!(journal.is_spilled(), spill);
            let commands: Vec<Vec<u8>> = (0..300u64).map(|i| vec![i as u8; i as usize]).collect();
            for (i, c) in commands.iter().enumerate() {
                journal.push(c, entry(i as u64)).unwrap();
            }
            let expected: Vec<_> = commands
                .iter()
                .enumerate()
                .map(|(i, c)| (i, c.clone(), entry(i as u64)))
                .collect();
            assert_eq!(replayed(&mut journal), expected, "spill {spill}");
            // A replay leaves the journal as it was: more commands go after the last one.
            journal.push(b"after", entry(1000)).unwrap();
            let again = replayed(&mut journal);
            assert_eq!(again.len(), 301);
            assert_eq!(again[300].1, b"after");
            journal.clear(spill);
            assert_eq!((journal.commands, journal.bytes()), (0, 0));
            assert!(replayed(&mut journal).is_empty());
        }
    }

    #[test]
    fn a_replay_stops_at_the_first_error() {
        let mut journal = Journal::default();
        journal.clear(true);
        for i in 0..5 {
            journal.push(&[i], entry(i as u64)).unwrap();
        }
        let mut calls = 0;
        let result = journal.replay(|i, _, _| {
            calls += 1;
            match i {
                2 => Err("no".to_string()),
                _ => Ok(()),
            }
        });
        assert_eq!((result, calls), (Err("no".to_string()), 3));
    }
}
