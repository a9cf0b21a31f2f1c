//! What a `raftwasm:fsm@0.2.0` guest learns about the call it is in (its `context` import):
//! the log entry a command is applied for, a time and random bytes derived from that entry
//! (so every node computes the same ones), and a log whose lines the caller collects.
//!
//! Random bytes are SHA-256 in counter mode over a seed made of the entry's index, term, time
//! and the command's position in it: nothing a node has alone goes in, so every node, and a
//! replay after a failed call, draws the same bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex, MutexGuard};

/// Most random bytes one `random-bytes` call returns.
pub const MAX_RANDOM_BYTES: u32 = 4096;
/// A guest log line is cut to this many bytes.
pub const MAX_LOG_LINE_BYTES: usize = 1024;
/// Lines one call may log; later ones are dropped (and counted in one last line).
pub const MAX_LOG_LINES_PER_CALL: usize = 64;
/// Changes one call may announce (`emit`).
pub const MAX_EVENTS_PER_CALL: usize = 4096;
/// Bytes of keys and payloads one call may announce.
pub const MAX_EVENT_BYTES_PER_CALL: usize = 32 << 20;

/// A change a guest announced while applying a command (`emit`), before the host numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEvent {
    pub key: String,
    pub payload: Vec<u8>,
}

/// The log entry a call runs for, as every node sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryContext {
    /// Log index of the entry (in a query: the last applied index).
    pub index: u64,
    /// Term of the leader that proposed it.
    pub term: u64,
    /// The entry's time, ms since the Unix epoch (in a query: the read's time).
    pub unix_ms: u64,
    /// Position of the command within its entry (entries batch commands).
    pub position: u32,
}

/// Severity of a guest's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// One line a guest logged, with the entry (or read) it logged it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
    /// The entry's index (in a query: the applied index).
    pub index: u64,
    /// The entry's (or read's) time, ms since the Unix epoch.
    pub unix_ms: u64,
    /// True when logged by a query (which runs on one node only).
    pub query: bool,
}

/// The seed of an entry's random bytes: nothing a node has alone goes in.
pub(super) fn entry_seed(e: &EntryContext) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"raftwasm random 1")
        .chain_update(e.index.to_le_bytes())
        .chain_update(e.term.to_le_bytes())
        .chain_update(e.unix_ms.to_le_bytes())
        .chain_update(e.position.to_le_bytes())
        .finalize()
        .into()
}

/// What the current call may see: its time, and the random stream of its entry.
#[derive(Debug, Default)]
struct Now {
    mode: Mode,
    entry: EntryContext,
    /// The call's random seed, made when the guest first draws (most calls never do).
    seed: Option<[u8; 32]>,
    /// 32-byte blocks drawn from `seed` so far in this call.
    drawn: u64,
}

/// The call state the store's context shares with WASI's clocks and random generators
/// ([`super::wasi`]; wasmtime-wasi owns them, so they cannot borrow it).
#[derive(Debug, Clone, Default)]
pub(super) struct Shared(Arc<Mutex<Now>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Now> {
        // Holders never panic while holding it; a poisoned lock still holds valid data.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a call in `mode` for `entry` (default outside apply and query).
    pub(super) fn begin(&self, mode: Mode, entry: EntryContext) {
        let mut now = self.lock();
        now.mode = mode;
        now.entry = entry;
        now.seed = None;
        now.drawn = 0;
    }

    /// Fills `out` from the call's random stream: SHA-256 of a seed and a block counter. The
    /// stream is not the one `random-bytes` draws from, and exists in every mode (WASI cannot
    /// refuse), fixed by what the call runs for; a replay draws what the first run drew.
    pub(super) fn fill(&self, out: &mut [u8]) {
        let mut now = self.lock();
        let tag = match now.mode {
            Mode::Idle => 0u8,
            Mode::Apply | Mode::Replay => 1,
            Mode::Query => 2,
        };
        let entry = now.entry;
        let seed = *now.seed.get_or_insert_with(|| {
            Sha256::new()
                .chain_update(b"raftwasm wasi random 1")
                .chain_update([tag])
                .chain_update(entry_seed(&entry))
                .finalize()
                .into()
        });
        for chunk in out.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(seed)
                .chain_update(now.drawn.to_le_bytes())
                .finalize();
            now.drawn += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }

    pub(super) fn unix_ms(&self) -> u64 {
        self.lock().entry.unix_ms
    }
}

/// Which call the store is in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Mode {
    /// Instantiation, `snapshot` or `restore`: not tied to an entry.
    #[default]
    Idle,
    /// Applying a committed command.
    Apply,
    /// Applying a command again to rebuild the state after a failed call: its lines were
    /// logged the first time.
    Replay,
    /// Answering a read on this node.
    Query,
}

/// The context of the call a store is in.
#[derive(Debug, Default)]
pub(super) struct CallContext {
    /// What WASI's clocks and random generators read (see [`super::wasi`]).
    wasi: Shared,
    mode: Mode,
    entry: EntryContext,
    /// Random blocks (32 bytes each) drawn so far in this call.
    drawn: u64,
    logs: Vec<LogLine>,
    dropped: usize,
    events: Vec<GuestEvent>,
    event_bytes: usize,
}

impl CallContext {
    /// Starts a call in `mode` for `entry`.
    pub(super) fn begin(&mut self, mode: Mode, entry: EntryContext) {
        self.mode = mode;
        self.entry = match mode {
            Mode::Idle => EntryContext::default(),
            _ => entry,
        };
        self.drawn = 0;
        self.dropped = 0;
        self.events.clear();
        self.event_bytes = 0;
        self.wasi.begin(mode, self.entry);
    }

    /// The state WASI shares with this context.
    pub(super) fn shared(&self) -> &Shared {
        &self.wasi
    }

    pub(super) fn entry(&self) -> EntryContext {
        self.entry
    }

    pub(super) fn random_bytes(&mut self, len: u32) -> Result<Vec<u8>, String> {
        match self.mode {
            Mode::Apply | Mode::Replay => {}
            Mode::Query => {
                return Err(
                    "random-bytes is refused in query: a read runs on one node, \
                            and its bytes would not be replicated"
                        .into(),
                )
            }
            Mode::Idle => {
                return Err("random-bytes is only available while applying a command".into())
            }
        }
        if len > MAX_RANDOM_BYTES {
            return Err(format!(
                "random-bytes returns at most {MAX_RANDOM_BYTES} bytes per call, not {len}"
            ));
        }
        let seed = self.seed();
        let mut out = Vec::with_capacity(len as usize);
        while out.len() < len as usize {
            let block = Sha256::new()
                .chain_update(seed)
                .chain_update(self.drawn.to_le_bytes())
                .finalize();
            self.drawn += 1;
            let take = (len as usize - out.len()).min(block.len());
            out.extend_from_slice(&block[..take]);
        }
        Ok(out)
    }

    fn seed(&self) -> [u8; 32] {
        entry_seed(&self.entry)
    }

    pub(super) fn emit(&mut self, key: String, payload: Vec<u8>) -> Result<(), String> {
        match self.mode {
            Mode::Apply => {}
            // The replayed command's changes were announced when it first ran.
            Mode::Replay => return Ok(()),
            Mode::Query => return Err("emit is refused in query: a read changes nothing".into()),
            Mode::Idle => return Err("emit is only available while applying a command".into()),
        }
        let bytes = self.event_bytes + key.len() + payload.len();
        if self.events.len() >= MAX_EVENTS_PER_CALL || bytes > MAX_EVENT_BYTES_PER_CALL {
            return Err(format!(
                "a command announces at most {MAX_EVENTS_PER_CALL} changes and \
                 {MAX_EVENT_BYTES_PER_CALL} bytes"
            ));
        }
        self.event_bytes = bytes;
        self.events.push(GuestEvent { key, payload });
        Ok(())
    }

    /// The changes the current call announced (taken once it returned).
    pub(super) fn take_events(&mut self) -> Vec<GuestEvent> {
        self.event_bytes = 0;
        std::mem::take(&mut self.events)
    }

    pub(super) fn log(&mut self, level: Level, message: String) {
        if self.mode == Mode::Replay {
            return;
        }
        if self.logs.len() >= MAX_LOG_LINES_PER_CALL {
            self.dropped += 1;
            return;
        }
        let message = super::bounded(message, MAX_LOG_LINE_BYTES);
        self.push(level, message);
    }

    fn push(&mut self, level: Level, message: String) {
        self.logs.push(LogLine {
            level,
            message,
            index: self.entry.index,
            unix_ms: self.entry.unix_ms,
            query: self.mode == Mode::Query,
        });
    }

    /// Keeps `lines` taken from another store (one replaced after a failed call) for the next
    /// take.
    pub(super) fn put_back(&mut self, mut lines: Vec<LogLine>) {
        lines.append(&mut self.logs);
        self.logs = lines;
    }

    /// The lines logged since the last take.
    pub(super) fn take_logs(&mut self) -> Vec<LogLine> {
        if self.dropped > 0 {
            let dropped = std::mem::take(&mut self.dropped);
            self.push(
                Level::Warn,
                format!("{dropped} more lines dropped (at most {MAX_LOG_LINES_PER_CALL} per call)"),
            );
        }
        std::mem::take(&mut self.logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applying(entry: EntryContext) -> CallContext {
        let mut c = CallContext::default();
        c.begin(Mode::Apply, entry);
        c
    }

    #[test]
    fn random_bytes_follow_the_entry_and_continue_within_a_call() {
        let e = EntryContext {
            index: 7,
            term: 2,
            unix_ms: 1_000,
            position: 0,
        };
        let mut a = applying(e);
        let mut b = applying(e);
        let (a1, a2) = (a.random_bytes(40).unwrap(), a.random_bytes(8).unwrap());
        assert_eq!(a1, b.random_bytes(40).unwrap());
        assert_eq!(a2, b.random_bytes(8).unwrap());
        assert_ne!(a1[..8], a2[..]);
        let other = applying(EntryContext { position: 1, ..e }).random_bytes(40);
        assert_ne!(a1, other.unwrap());
        assert!(a.random_bytes(MAX_RANDOM_BYTES + 1).is_err());
    }

    #[test]
    fn queries_get_no_random_and_replays_log_nothing() {
        let mut c = CallContext::default();
        c.begin(Mode::Query, EntryContext::default());
        assert!(c.random_bytes(1).unwrap_err().contains("query"));
        c.begin(Mode::Replay, EntryContext::default());
        c.log(Level::Info, "again".into());
        assert!(c.take_logs().is_empty());
    }

    #[test]
    fn a_chatty_call_is_cut_off() {
        let mut c = applying(EntryContext::default());
        for i in 0..MAX_LOG_LINES_PER_CALL + 5 {
            c.log(Level::Debug, format!("line {i}"));
        }
        let lines = c.take_logs();
        assert_eq!(lines.len(), MAX_LOG_LINES_PER_CALL + 1);
        assert!(lines
            .last()
            .unwrap()
            .message
            .starts_with("5 more lines dropped"));
    }
}
