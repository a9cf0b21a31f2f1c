//! The [`Context`] of a call: what the host tells the guest about the entry being applied (or
//! the read being served), with time and randomness replicated through the log.

use crate::__private::bindings::raftwasm::fsm::context as host;
use crate::Error;
use std::cell::Cell;

/// Severity of a [`Context::log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The call a guest is in. In `apply` every answer is the same on every node: it comes from
/// the log entry. In `query` the entry is the last one applied and the time the read's.
#[derive(Debug)]
pub struct Context {
    /// Asked of the host once, on first use.
    entry: Cell<Option<host::Entry>>,
    querying: bool,
}

impl Context {
    pub(crate) fn applying() -> Self {
        Context {
            entry: Cell::new(None),
            querying: false,
        }
    }

    pub(crate) fn querying() -> Self {
        Context {
            entry: Cell::new(None),
            querying: true,
        }
    }

    fn entry(&self) -> host::Entry {
        if let Some(entry) = self.entry.get() {
            return entry;
        }
        let entry = host::current_entry();
        self.entry.set(Some(entry));
        entry
    }

    /// The entry's Raft log index (in a query: the last index this node applied).
    pub fn index(&self) -> u64 {
        self.entry().index
    }

    /// The term of the leader that proposed the entry.
    pub fn term(&self) -> u64 {
        self.entry().term
    }

    /// The entry's time, ms since the Unix epoch: stamped by the leader that proposed it, never
    /// earlier than the previous entry's. In a query: the node's clock, never earlier than the
    /// last applied entry's time.
    pub fn unix_ms(&self) -> u64 {
        self.entry().unix_ms
    }

    /// True in `query`.
    pub fn is_query(&self) -> bool {
        self.querying
    }

    /// `len` random bytes (at most 4096), the same on every node for this command and different
    /// for every command; not secret. Refused in `query`.
    pub fn random_bytes(&self, len: u32) -> Result<Vec<u8>, Error> {
        host::random_bytes(len).map_err(Error::Internal)
    }

    /// A random `u64`, as [`Context::random_bytes`].
    pub fn random_u64(&self) -> Result<u64, Error> {
        let bytes = self.random_bytes(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes);
        Ok(u64::from_le_bytes(word))
    }

    /// A line in the node's log and its guest log (`GET /v1/guest/log`), cut to 1 KiB.
    pub fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }

    /// [`Context::log`] at info.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// [`Context::log`] at warn.
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Announces a change this command makes to watchers of `key` (by exact key or prefix),
    /// with `payload` as what they receive. Call it once the change is certain: the changes of
    /// a command that returns an error are dropped. Only in `apply`; at most 4096 changes and
    /// 32 MiB per command.
    pub fn emit(&self, key: &str, payload: &[u8]) -> Result<(), Error> {
        host::emit(key, payload).map_err(Error::Internal)
    }
}
