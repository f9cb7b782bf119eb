//! Prometheus metrics and the health/readiness state a runtime instance exposes.
//!
//! Every metric is registered in the instance's own [`Registry`] (not the process-global one),
//! so several runtimes in one process (tests, the embedded all-in-one mode) never collide.
//! Names are stable: dashboards and alerts depend on them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tickstream_model::clock::now_ms;

pub struct StreamsMetrics {
    registry: MetricsRegistry,
    pub records_consumed: IntCounterVec,
    pub records_produced: IntCounterVec,
    pub dead_letter_records: IntCounterVec,
    pub process_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub commits: IntCounter,
    pub transaction_aborts: IntCounter,
    pub producer_resets: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub restore_records: IntCounterVec,
    pub restore_remaining: IntGaugeVec,
    pub state_store_bytes: IntGauge,
    pub assigned_partitions: IntGauge,
    pub repartitioned_records: IntCounter,
    pub enforced_processing: IntCounter,
    pub buffered_records: IntGauge,
}

/// A Prometheus registry for one processor instance that remembers what it exports.
///
/// Every processor (the runtime, enrich's analytics gauges, ingest, sink) registers its metrics
/// here: names get the `tickstream_` prefix and an `application` label, and [`Self::names`]
/// lists them so dashboards and alert rules can be checked against what really exists.
pub struct MetricsRegistry {
    registry: Registry,
    names: Mutex<Vec<String>>,
}

impl MetricsRegistry {
    pub const PREFIX: &'static str = "tickstream";

    pub fn new(application_id: &str) -> Self {
        let registry = Registry::new_custom(
            Some(Self::PREFIX.to_owned()),
            Some([("application".to_owned(), application_id.to_owned())].into()),
        )
        .expect("a valid prefix and label");
        Self {
            registry,
            names: Mutex::new(Vec::new()),
        }
    }

    /// Registers `metric` and hands it back.
    ///
    /// # Panics
    /// On a name registered twice: metric names are literals in the code, so that is a bug.
    pub fn register<M: Collector + Clone + 'static>(&self, metric: M) -> M {
        let names: Vec<String> = metric
            .desc()
            .iter()
            .map(|d| format!("{}_{}", Self::PREFIX, d.fq_name))
            .collect();
        self.registry
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(names);
        metric
    }

    /// The exported metric family names (`tickstream_records_consumed_total`, …); histograms
    /// also export `_bucket`, `_sum` and `_count` series under theirs.
    pub fn names(&self) -> Vec<String> {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut text)
            .map(|()| text)
            .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
    }
}

impl StreamsMetrics {
    /// The runtime's metrics, labelled with the application, in a new registry.
    pub fn new(application_id: &str) -> Self {
        let registry = MetricsRegistry::new(application_id);
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registry
                .register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            registry
                .register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            registry.register(
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        Self {
            records_consumed: counter_vec(
                "records_consumed_total",
                "Input records consumed, per topic.",
                &["topic"],
            ),
            records_produced: counter_vec(
                "records_produced_total",
                "Records produced, per topic (changelog and DLQ included).",
                &["topic"],
            ),
            dead_letter_records: counter_vec(
                "dead_letter_records_total",
                "Input records routed to the dead-letter topic, per source topic and reason code.",
                &["topic", "reason"],
            ),
            process_seconds: histogram(
                "process_duration_seconds",
                "Time to process one record (the processor plus routing its outputs to the producer).",
                prometheus::exponential_buckets(0.000_05, 4.0, 10).expect("valid buckets"),
            ),
            commit_seconds: histogram(
                "commit_duration_seconds",
                "Time of one commit (changelog flush, offsets, transaction commit, state apply).",
                prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets"),
            ),
            commits: registry.register(
                IntCounter::new("commits_total", "Successful commits.").expect("valid metric"),
            ),
            transaction_aborts: registry.register(
                IntCounter::new(
                    "transaction_aborts_total",
                    "Commits that failed and were rolled back.",
                )
                .expect("valid metric"),
            ),
            producer_resets: registry.register(
                IntCounter::new(
                    "producer_resets_total",
                    "Fenced transactional producers replaced by a new one (batch redone).",
                )
                .expect("valid metric"),
            ),
            consumer_lag: gauge_vec(
                "consumer_lag_records",
                "Records between the consumer position and the end of each input partition.",
                &["topic", "partition"],
            ),
            restore_records: counter_vec(
                "restore_records_total",
                "Changelog records replayed into local state.",
                &["store"],
            ),
            restore_remaining: gauge_vec(
                "restore_remaining_records",
                "Changelog records still to replay for a task being restored (0 when done).",
                &["store", "partition"],
            ),
            state_store_bytes: registry.register(
                IntGauge::new("state_store_bytes", "Bytes of local state on disk (sled).")
                    .expect("valid metric"),
            ),
            assigned_partitions: registry.register(
                IntGauge::new(
                    "assigned_partitions",
                    "Input partitions assigned to this instance.",
                )
                .expect("valid metric"),
            ),
            repartitioned_records: registry.register(
                IntCounter::new(
                    "repartitioned_records_total",
                    "Source records forwarded to the repartition topic, re-keyed by state key.",
                )
                .expect("valid metric"),
            ),
            enforced_processing: registry.register(
                IntCounter::new(
                    "enforced_processing_total",
                    "Source records taken out of timestamp order after max_task_idle, because \
                     another assigned partition lagged with nothing fetched.",
                )
                .expect("valid metric"),
            ),
            buffered_records: registry.register(
                IntGauge::new(
                    "buffered_records",
                    "Source records fetched and waiting their turn in timestamp order.",
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }

    /// The instance's registry: processors register their own metrics beside the runtime's.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}

/// Liveness and readiness, shared between the processing loop and the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Epoch milliseconds of the processing loop's last turn.
    heartbeat_ms: AtomicI64,
}

/// A loop that has not turned for this long is reported unhealthy.
const STALL_MS: i64 = 60_000;

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn heartbeat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Alive: the processing loop turned within the last minute (or has not started yet).
    pub fn is_alive(&self) -> bool {
        let last = self.heartbeat_ms.load(Ordering::Relaxed);
        last == 0 || now_ms() - last < STALL_MS
    }
}
