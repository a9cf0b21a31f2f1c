//! Storage metrics: the write-ahead log's fsyncs, the bytes it appends, its segment files.

use super::{name, register, LATENCY_BUCKETS};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};
use std::time::Duration;

/// The log's families.
#[derive(Clone)]
pub struct StorageMetrics {
    fsync: Histogram,
    appended: IntCounter,
    segments: IntGauge,
    reused: IntCounter,
    log_bytes: IntGauge,
    inline: IntCounter,
}

impl std::fmt::Debug for StorageMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageMetrics").finish_non_exhaustive()
    }
}

impl StorageMetrics {
    pub(super) fn new(registry: &Registry) -> prometheus::Result<Self> {
        Ok(StorageMetrics {
            fsync: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        name("wal_fsync_duration_seconds"),
                        "Time one fdatasync of the log took (one per batch of records).",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                ),
            )?,
            appended: register(
                registry,
                IntCounter::with_opts(Opts::new(
                    name("wal_appended_bytes_total"),
                    "Bytes of records written to the log.",
                )),
            )?,
            segments: register(
                registry,
                IntGauge::with_opts(Opts::new(
                    name("wal_segments"),
                    "Segment files the log holds now.",
                )),
            )?,
            reused: register(
                registry,
                IntCounter::with_opts(Opts::new(
                    name("wal_segments_reused_total"),
                    "New segments made from the file of a deleted one instead of a new file.",
                )),
            )?,
            log_bytes: register(
                registry,
                IntGauge::with_opts(Opts::new(
                    name("wal_disk_bytes"),
                    "Bytes the log's segment files take on disk (they are preallocated).",
                )),
            )?,
            inline: register(
                registry,
                IntCounter::with_opts(Opts::new(
                    name("wal_inline_writes_total"),
                    "Appends a follower wrote and synced on the thread that received them \
                     (its log was idle), not handed to the log's writer thread.",
                )),
            )?,
        })
    }

    /// One `fdatasync` took `took`.
    pub fn fsync(&self, took: Duration) {
        self.fsync.observe(took.as_secs_f64());
    }

    /// `bytes` more were written to the log.
    pub fn appended(&self, bytes: usize) {
        self.appended.inc_by(bytes as u64);
    }

    /// The log now holds `count` segment files taking `bytes` on disk.
    pub fn segments(&self, count: usize, bytes: u64) {
        self.segments.set(count as i64);
        self.log_bytes.set(bytes as i64);
    }

    /// An append was written on the receiving thread.
    pub fn inline_write(&self) {
        self.inline.inc();
    }

    /// A new segment reused a deleted one's file.
    pub fn reused(&self) {
        self.reused.inc();
    }
}
