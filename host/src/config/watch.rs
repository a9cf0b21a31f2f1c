//! Watch settings: how much of the change feed a node keeps, and how long it waits on a
//! watcher that does not read.

use super::{invalid, ConfigError};
use std::time::Duration;

/// Revisions whose changes a node keeps by default: ten times the log entries kept behind a
/// snapshot by default, so a watcher can resume well after a snapshot.
pub const DEFAULT_WATCH_HISTORY_ENTRIES: u64 = 10_000;
/// Bytes of memory the feed keeps by default (keys, payloads and each change's bookkeeping):
/// about 25,000 of guest-kv's puts of 256-byte values, which carry the value and the previous
/// one. The feed lives in memory, so this is most of what a loaded node holds beyond its state.
pub const DEFAULT_WATCH_HISTORY_BYTES: usize = 16 << 20;
/// How long a watcher may leave its stream full before it is cut off, by default.
pub const DEFAULT_WATCH_SLOW_CUTOFF: Duration = Duration::from_secs(10);

/// The change feed and its watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// Revisions kept behind the applied index (`--watch-history`).
    pub history_entries: u64,
    /// Bytes of memory kept (`--watch-history-bytes`); past it the oldest revisions go first.
    pub history_bytes: usize,
    /// A watcher whose stream stays full this long is cut off (`--watch-slow-cutoff-ms`).
    pub slow_cutoff: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            history_entries: DEFAULT_WATCH_HISTORY_ENTRIES,
            history_bytes: DEFAULT_WATCH_HISTORY_BYTES,
            slow_cutoff: DEFAULT_WATCH_SLOW_CUTOFF,
        }
    }
}

impl WatchConfig {
    /// `keep_logs`: the log entries kept behind a snapshot; the feed keeps at least as many.
    pub fn validate(&self, keep_logs: u64) -> Result<(), ConfigError> {
        if self.history_entries < keep_logs.max(1) {
            return Err(invalid(format!(
                "--watch-history {} must be at least --snapshot-keep-logs {keep_logs} (and 1)",
                self.history_entries
            )));
        }
        if self.history_bytes < 1 << 20 {
            return Err(invalid("--watch-history-bytes must be at least 1 MiB"));
        }
        if self.slow_cutoff.is_zero() {
            return Err(invalid("--watch-slow-cutoff-ms must be at least 1"));
        }
        Ok(())
    }
}
