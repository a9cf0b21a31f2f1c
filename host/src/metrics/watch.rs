//! Watch metrics: the watches open on this node, the changes queued for them, and the watches
//! the node ended itself (a watcher that stopped reading, or one whose position left the
//! retained history).

use super::{name, register};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Why the node ended a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its stream stayed full for the slow-watcher cut-off.
    TooSlow,
    /// It asked for, or fell behind to, changes no longer kept.
    Compacted,
}

impl Ended {
    fn label(self) -> &'static str {
        match self {
            Ended::TooSlow => "too_slow",
            Ended::Compacted => "compacted",
        }
    }
}

/// The watch families. Cheap to clone.
#[derive(Clone)]
pub struct WatchMetrics {
    open: IntGauge,
    sent: IntCounter,
    ended: IntCounterVec,
}

impl std::fmt::Debug for WatchMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchMetrics").finish_non_exhaustive()
    }
}

/// Counts one open watch until dropped.
pub struct OpenWatch(IntGauge);

impl std::fmt::Debug for OpenWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenWatch")
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl WatchMetrics {
    pub(super) fn new(registry: &Registry) -> prometheus::Result<Self> {
        let ended = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    name("watches_ended_total"),
                    "Watches this node ended, by reason (too_slow, compacted).",
                ),
                &["reason"],
            ),
        )?;
        for reason in [Ended::TooSlow, Ended::Compacted] {
            ended.with_label_values(&[reason.label()]);
        }
        Ok(WatchMetrics {
            open: register(
                registry,
                IntGauge::with_opts(Opts::new(
                    name("watches_open"),
                    "Watches (gRPC WatchKeys, HTTP /v1/watch) open on this node.",
                )),
            )?,
            sent: register(
                registry,
                IntCounter::with_opts(Opts::new(
                    name("watch_changes_sent_total"),
                    "Changes handed to watchers' streams, summed over watchers.",
                )),
            )?,
            ended,
        })
    }

    /// A watch opened; it counts as open until the guard drops.
    pub fn opened(&self) -> OpenWatch {
        self.open.inc();
        OpenWatch(self.open.clone())
    }

    /// `changes` were handed to one watcher's stream.
    pub fn sent(&self, changes: usize) {
        self.sent.inc_by(changes as u64);
    }

    /// The node ended a watch.
    pub fn ended(&self, why: Ended) {
        self.ended.with_label_values(&[why.label()]).inc();
    }
}
