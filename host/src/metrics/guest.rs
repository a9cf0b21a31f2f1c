//! Guest metrics: how long calls into the state machine take, the fuel they burn, its memory,
//! the ways calls fail, and which module is active.

use super::{counter, name, register, LATENCY_BUCKETS};
use prometheus::IntGaugeVec;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use prometheus::{Opts, Registry};
use std::sync::Mutex;
use std::time::Duration;

/// Fuel buckets: a guest-kv put burns about 15,000; the default budget is 100,000,000.
const FUEL_BUCKETS: &[f64] = &[
    1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8, 3e8, 1e9,
];

/// Which guest call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A committed command.
    Apply,
    /// A read.
    Query,
}

impl Call {
    fn label(self) -> &'static str {
        match self {
            Call::Apply => "apply",
            Call::Query => "query",
        }
    }
}

/// How a guest call failed, when it did not return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Trap,
    OutOfFuel,
    MemoryCap,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::Trap => "trap",
            Failure::OutOfFuel => "out_of_fuel",
            Failure::MemoryCap => "memory_cap",
        }
    }
}

/// The guest's families.
pub struct GuestMetrics {
    /// Duration and fuel histograms of apply and of query, their labels resolved once: every
    /// applied command records into them.
    apply: (Histogram, Histogram),
    query: (Histogram, Histogram),
    /// Duration of the guest's `snapshot` calls: applies wait that long.
    snapshot: Histogram,
    memory: IntGauge,
    failures: IntCounterVec,
    module: IntGaugeVec,
    /// The hash labelled 1 in `module` now.
    active: Mutex<Option<String>>,
    upgrades: IntCounter,
    inline: IntCounter,
}

impl std::fmt::Debug for GuestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMetrics").finish_non_exhaustive()
    }
}

/// The failures counter, every kind from zero, so a first failure is a rise a rate() sees.
fn failures(registry: &Registry) -> prometheus::Result<IntCounterVec> {
    let failures = register(
        registry,
        IntCounterVec::new(
            Opts::new(
                name("guest_failures_total"),
                "Guest calls that did not return, by kind (trap, out_of_fuel, memory_cap); \
                 each fails the same way on every node.",
            ),
            &["kind"],
        ),
    )?;
    for failure in [Failure::Trap, Failure::OutOfFuel, Failure::MemoryCap] {
        failures.with_label_values(&[failure.label()]);
    }
    Ok(failures)
}

impl GuestMetrics {
    pub(super) fn new(registry: &Registry) -> prometheus::Result<Self> {
        let failures = failures(registry)?;
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    name("guest_call_duration_seconds"),
                    "Time one call into the guest took, by call (apply, query, snapshot); \
                     applies wait while a snapshot call holds the guest.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["call"],
            ),
        )?;
        let fuel: HistogramVec = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    name("guest_fuel_per_call"),
                    "Fuel one call into the guest burned, by call (apply, query).",
                )
                .buckets(FUEL_BUCKETS.to_vec()),
                &["call"],
            ),
        )?;
        let handles = |call: Call| {
            let label = [call.label()];
            (
                duration.with_label_values(&label),
                fuel.with_label_values(&label),
            )
        };
        Ok(GuestMetrics {
            apply: handles(Call::Apply),
            query: handles(Call::Query),
            snapshot: duration.with_label_values(&["snapshot"]),
            memory: register(
                registry,
                IntGauge::with_opts(Opts::new(
                    name("guest_memory_bytes"),
                    "Linear memory the guest instance holds.",
                )),
            )?,
            failures,
            module: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        name("guest_module_info"),
                        "1 for the guest module this node runs, labelled by its SHA-256.",
                    ),
                    &["hash"],
                ),
            )?,
            active: Mutex::new(None),
            upgrades: counter(
                registry,
                "guest_upgrades_total",
                "Module upgrades this node applied from the log.",
            )?,
            inline: counter(
                registry,
                "guest_inline_applies_total",
                "Committed entries applied on the async worker that received them (a brief call \
                 into a guest that cannot block), not handed to the blocking pool.",
            )?,
        })
    }

    /// A call returned (with the guest's answer or its own error) after `took`, burning `fuel`.
    pub fn call(&self, call: Call, took: Duration, fuel: u64) {
        let (duration, fuel_used) = match call {
            Call::Apply => &self.apply,
            Call::Query => &self.query,
        };
        duration.observe(took.as_secs_f64());
        fuel_used.observe(fuel as f64);
    }

    /// A `snapshot` call returned the guest's state after `took`.
    pub fn snapshot_took(&self, took: Duration) {
        self.snapshot.observe(took.as_secs_f64());
    }

    /// Calls so far: commands applied, queries answered, and the time applies took.
    pub fn totals(&self) -> (u64, u64, Duration) {
        let applies = &self.apply.0;
        (
            applies.get_sample_count(),
            self.query.0.get_sample_count(),
            Duration::from_secs_f64(applies.get_sample_sum()),
        )
    }

    /// A call did not return.
    pub fn failed(&self, failure: Failure) {
        self.failures.with_label_values(&[failure.label()]).inc();
    }

    /// The guest's linear memory is now `bytes`.
    pub fn memory(&self, bytes: u64) {
        self.memory.set(bytes as i64);
    }

    /// The node now runs the module with this hash (at start, after an upgrade or a snapshot).
    pub fn module(&self, hash: &str) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.as_deref() == Some(hash) {
            return;
        }
        if let Some(old) = active.take() {
            let _ = self.module.remove_label_values(&[&old]);
        }
        self.module.with_label_values(&[hash]).set(1);
        *active = Some(hash.to_string());
    }

    /// An upgrade was applied.
    pub fn upgraded(&self) {
        self.upgrades.inc();
    }

    /// An entry was applied on an async worker.
    pub fn inline_apply(&self) {
        self.inline.inc();
    }
}
