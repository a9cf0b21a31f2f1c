//! Prometheus metrics (`GET /metrics`): one registry per node, rendered in the Prometheus text
//! format by the `prometheus` crate.
//!
//! Each concern owns its families and records into them where the work happens: [`raft`]
//! (term, leader, indexes and per-member replication, set from the node's view when scraped,
//! plus counters of elections and leader changes kept by a watcher), [`requests`] (every HTTP
//! route and gRPC method by outcome, forwarding, the batch sizes of the write batcher and the
//! read index), [`storage`] (fsync latency, bytes appended, segments), [`guest`] (call
//! latency, fuel, memory, failures, the active module) and [`watch`] (open watches, changes
//! sent, watches ended by the node). Handles are cheap clones of shared
//! atomics; a node makes one [`Metrics`] at start and hands it to each part.

pub mod guest;
pub mod raft;
pub mod requests;
pub mod storage;
pub mod watch;

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};
use std::sync::Arc;

/// Every metric prefix.
const NAMESPACE: &str = "raftwasm";

/// Latency buckets in seconds, 50 µs to 10 s: fsyncs and guest calls sit at the low end,
/// requests that wait for an election at the high end.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// A node's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    raft: raft::RaftMetricsSet,
    requests: requests::RequestMetrics,
    storage: storage::StorageMetrics,
    guest: guest::GuestMetrics,
    watch: watch::WatchMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every family registered. Fails only on a family the `prometheus`
    /// crate refuses (a bad or repeated name: a programming error the unit test rules out).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let inner = Inner {
            raft: raft::RaftMetricsSet::new(&registry)?,
            requests: requests::RequestMetrics::new(&registry)?,
            storage: storage::StorageMetrics::new(&registry)?,
            guest: guest::GuestMetrics::new(&registry)?,
            watch: watch::WatchMetrics::new(&registry)?,
            registry,
        };
        Ok(Metrics {
            inner: Arc::new(inner),
        })
    }

    pub fn raft(&self) -> &raft::RaftMetricsSet {
        &self.inner.raft
    }

    pub fn requests(&self) -> &requests::RequestMetrics {
        &self.inner.requests
    }

    pub fn storage(&self) -> &storage::StorageMetrics {
        &self.inner.storage
    }

    pub fn guest(&self) -> &guest::GuestMetrics {
        &self.inner.guest
    }

    pub fn watch(&self) -> &watch::WatchMetrics {
        &self.inner.watch
    }

    /// Every family in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.inner.registry.gather();
        // Encoding into memory fails only on a family the registry itself refused to hold.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "metrics: a family could not be encoded");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers `metric` in `registry` and returns it.
pub(crate) fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> prometheus::Result<M> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers a counter named `short` under [`NAMESPACE`] in `registry`.
pub(crate) fn counter(
    registry: &Registry,
    short: &str,
    help: &str,
) -> prometheus::Result<prometheus::IntCounter> {
    register(
        registry,
        prometheus::IntCounter::with_opts(prometheus::Opts::new(name(short), help)),
    )
}

/// A metric name under [`NAMESPACE`].
pub(crate) fn name(short: &str) -> String {
    format!("{NAMESPACE}_{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_registers_and_renders() {
        let m = Metrics::new().unwrap();
        m.storage().fsync(std::time::Duration::from_micros(120));
        let text = m.render();
        assert!(
            text.contains("raftwasm_wal_fsync_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE raftwasm_raft_term gauge"), "{text}");
    }
}
