//! Request metrics: every HTTP route and gRPC method by outcome, requests forwarded to the
//! leader, and how many commands (reads) share one log entry (one read-index confirmation).

use super::{name, register, LATENCY_BUCKETS};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::Arc;
use std::time::Duration;

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Http,
    Grpc,
}

impl Api {
    fn label(self) -> &'static str {
        match self {
            Api::Http => "http",
            Api::Grpc => "grpc",
        }
    }
}

/// Batch-size buckets: 1 to the batcher's cap of 1,024 commands.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The request families. A clone (one per request on the gRPC path) shares them.
#[derive(Clone)]
pub struct RequestMetrics(Arc<Families>);

struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    forwarded: IntCounterVec,
    write_batch: Histogram,
    read_batch: Histogram,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl RequestMetrics {
    pub(super) fn new(registry: &Registry) -> prometheus::Result<Self> {
        let labels = &["api", "operation", "code"];
        Ok(RequestMetrics(Arc::new(Families {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        name("requests_total"),
                        "Requests answered, by API (http, grpc), operation (route or method) \
                         and outcome (HTTP status or gRPC code).",
                    ),
                    labels,
                ),
            )?,
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        name("request_duration_seconds"),
                        "Time from a request's arrival to its answer, by API, operation and \
                         outcome.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                ),
            )?,
            forwarded: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        name("forwarded_requests_total"),
                        "Requests this node sent on to the leader, by operation.",
                    ),
                    &["operation"],
                ),
            )?,
            write_batch: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        name("write_batch_commands"),
                        "Commands proposed together in one log entry by the write batcher.",
                    )
                    .buckets(BATCH_BUCKETS.to_vec()),
                ),
            )?,
            read_batch: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        name("read_index_batch_reads"),
                        "Linearizable reads that shared one leadership confirmation.",
                    )
                    .buckets(BATCH_BUCKETS.to_vec()),
                ),
            )?,
        })))
    }

    /// A request for `operation` on `api` was answered with `code` after `took`.
    pub fn answered(&self, api: Api, operation: &str, code: &str, took: Duration) {
        let labels = [api.label(), operation, code];
        self.0.requests.with_label_values(&labels).inc();
        self.0
            .duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    /// This node forwarded a request for `operation` to the leader.
    pub fn forwarded(&self, operation: &str) {
        self.0.forwarded.with_label_values(&[operation]).inc();
    }

    /// The batcher proposed `commands` commands in one entry.
    pub fn write_batch(&self, commands: usize) {
        self.0.write_batch.observe(commands as f64);
    }

    /// `reads` reads shared one read-index confirmation.
    pub fn read_batch(&self, reads: usize) {
        self.0.read_batch.observe(reads as f64);
    }
}
