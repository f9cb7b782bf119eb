//! The sink's Prometheus metrics. Names are stable: dashboards depend on them.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use tickstream_streams::MetricsRegistry;

/// Every metric the sink exports, in its own registry (prefix `tickstream_`, label
/// `application`).
pub struct SinkMetrics {
    registry: MetricsRegistry,
    /// `tickstream_sink_documents_written_total{collection}`: documents MongoDB stored.
    pub documents_written: IntCounterVec,
    /// `tickstream_sink_duplicates_total{collection}`: documents already stored (a replay).
    pub duplicates: IntCounterVec,
    /// `tickstream_sink_dead_letter_records_total{reason}`: records sent to the dead-letter topic.
    pub dead_letter_records: IntCounterVec,
    /// `tickstream_sink_batch_duration_seconds`: one bulk write, retries included.
    pub batch_duration: Histogram,
    /// `tickstream_sink_mongodb_up`: 1 after a successful write or ping, 0 after a failure.
    pub mongodb_up: IntGauge,
    /// `tickstream_sink_consumer_lag_records{topic,partition}`.
    pub consumer_lag: IntGaugeVec,
    /// `tickstream_sink_commits_total`: offset commits after acknowledged writes.
    pub commits: IntCounter,
}

impl SinkMetrics {
    pub fn new(application_id: &str) -> Self {
        let registry = MetricsRegistry::new(application_id);
        let counter_vec = |name: &str, help: &str, label: &str| {
            registry.register(
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
            )
        };
        Self {
            documents_written: counter_vec(
                "sink_documents_written_total",
                "Documents MongoDB acknowledged, per collection.",
                "collection",
            ),
            duplicates: counter_vec(
                "sink_duplicates_total",
                "Documents already in MongoDB (same _id: a replay), per collection.",
                "collection",
            ),
            dead_letter_records: counter_vec(
                "sink_dead_letter_records_total",
                "Records sent to the dead-letter topic, per reason code.",
                "reason",
            ),
            batch_duration: registry.register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "sink_batch_duration_seconds",
                        "Time to write one batch to MongoDB, retries included.",
                    )
                    .buckets(
                        prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets"),
                    ),
                )
                .expect("valid metric"),
            ),
            mongodb_up: registry.register(
                IntGauge::new(
                    "sink_mongodb_up",
                    "1 while MongoDB acknowledges writes, 0 while it does not.",
                )
                .expect("valid metric"),
            ),
            consumer_lag: registry.register(
                IntGaugeVec::new(
                    Opts::new(
                        "sink_consumer_lag_records",
                        "Records between the last written offset and the end of each partition.",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid metric"),
            ),
            commits: registry.register(
                IntCounter::new(
                    "sink_commits_total",
                    "Offset commits, each after MongoDB acknowledged a batch.",
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }

    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_exactly_the_documented_names() {
        let metrics = SinkMetrics::new("app");
        metrics
            .documents_written
            .with_label_values(&["prices"])
            .inc();
        let mut names = metrics.registry().names();
        names.sort();
        assert_eq!(
            names,
            [
                "tickstream_sink_batch_duration_seconds",
                "tickstream_sink_commits_total",
                "tickstream_sink_consumer_lag_records",
                "tickstream_sink_dead_letter_records_total",
                "tickstream_sink_documents_written_total",
                "tickstream_sink_duplicates_total",
                "tickstream_sink_mongodb_up",
            ]
        );
        let text = metrics.registry().render();
        let line = text
            .lines()
            .find(|l| l.starts_with("tickstream_sink_documents_written_total{"))
            .unwrap_or_else(|| panic!("no documents_written series in\n{text}"));
        assert!(
            line.contains("application=\"app\"")
                && line.contains("collection=\"prices\"")
                && line.ends_with(" 1"),
            "{line}"
        );
    }
}
