//! Snapshots by work done: openraft builds one every `--snapshot-every` log entries, but an entry
//! is a batch of anything from one to thousands of commands, so under load the log behind a
//! snapshot (what a restart replays, command by command through the guest) grew to hundreds of
//! thousands of commands. This asks for a snapshot once `--snapshot-every-commands` commands were
//! applied since the last one, as etcd's `--snapshot-count` counts requests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;

/// Counts the commands applied since the last snapshot and says when one is wanted.
#[derive(Debug, Default)]
pub struct SnapshotTrigger {
    /// Commands between snapshots; 0: never asks.
    every: AtomicU64,
    since: AtomicU64,
    /// Asked since the last snapshot, so one build is asked for once.
    asked: AtomicBool,
    wanted: Notify,
}

impl SnapshotTrigger {
    /// Asks for a snapshot every `every` commands (0: never).
    pub fn set_every(&self, every: u64) {
        self.every.store(every, Ordering::Relaxed);
    }

    /// `n` more commands were applied.
    pub(super) fn applied(&self, n: u64) {
        let every = self.every.load(Ordering::Relaxed);
        let since = self.since.fetch_add(n, Ordering::Relaxed) + n;
        if every > 0 && since >= every && !self.asked.swap(true, Ordering::Relaxed) {
            self.wanted.notify_one();
        }
    }

    /// A snapshot now holds everything applied (built or restored).
    pub(super) fn taken(&self) {
        self.since.store(0, Ordering::Relaxed);
        self.asked.store(false, Ordering::Relaxed);
    }

    /// Commands applied since the last snapshot.
    pub fn since(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }

    /// Returns once a snapshot is wanted.
    pub async fn wanted(&self) {
        self.wanted.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn asks_once_per_snapshot_after_enough_commands() {
        let t = SnapshotTrigger::default();
        t.applied(1_000);
        t.set_every(100);
        t.taken();
        t.applied(60);
        let asked = tokio::time::timeout(std::time::Duration::from_millis(20), t.wanted());
        assert!(asked.await.is_err(), "60 of 100: not yet");
        t.applied(60);
        t.applied(60);
        // One permit for both crossings: a second wait would block.
        t.wanted().await;
        let again = tokio::time::timeout(std::time::Duration::from_millis(20), t.wanted());
        assert!(again.await.is_err(), "asked once until a snapshot is taken");
        t.taken();
        assert_eq!(t.since(), 0);
        t.applied(100);
        t.wanted().await;
    }
}
