//! The sink's Kafka clients: their settings (from the topology and `TICKSTREAM_KAFKA_CONFIG_*`),
//! the consumer's context (assignment, failed commits, librdkafka's reports) and the probe
//! that tells `/readyz` whether the brokers answer and the subscribed topics exist.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use tickstream_model::Topology;
use tickstream_streams::{
    ClientLog, FETCH_QUEUE_BACKOFF, Rebootstrapper, client_config, kafka_millis,
};
use tracing::info;

use crate::availability::Availability;
use crate::batch::PartitionKey;
use crate::document::DocumentMapper;
use crate::pipeline::LoopSettings;

/// How often the brokers are asked for the subscribed topics: how soon `/readyz` notices an
/// outage (plus [`KAFKA_PROBE_TIMEOUT`]) or its end.
const KAFKA_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a metadata request may take before the brokers count as unreachable.
const KAFKA_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// librdkafka's metadata refresh (default 5 min): how soon a subscribed topic created after
/// the sink started is seen, assigned and read.
const TOPIC_METADATA_REFRESH: Duration = Duration::from_secs(2);
/// librdkafka's longest wait between reconnects (default 10 s): a broker that is back is
/// reconnected to within this.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Dead letters outlive an outage: librdkafka keeps retrying them this much longer than the
/// sink waits before giving up, so one is never dropped while the sink still runs.
const DELIVERY_MARGIN: Duration = Duration::from_secs(60);

/// How the sink consumes and batches.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub brokers: String,
    /// Consumer group and DLQ `tickstream.application` header: `<application_id>-sink`.
    pub group_id: String,
    pub topics: Vec<String>,
    pub dead_letter_topic: String,
    /// `compression.type` of the dead letters (the topology's `topics.compression.derived`).
    pub dead_letter_compression: String,
    /// Write a batch once it holds this many records…
    pub batch_size: usize,
    /// …or this long after its first record arrived.
    pub batch_interval: Duration,
    /// Backoff while MongoDB is unreachable: from `initial`, doubling up to `max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// On SIGTERM with MongoDB down, give up on the in-flight batch (uncommitted, so it is
    /// re-read on restart) after this long.
    pub shutdown_grace: Duration,
    /// A Kafka or MongoDB outage longer than this stops the sink with an error
    /// (`processing.give_up_after`).
    pub give_up_after: Duration,
    /// Extra librdkafka settings (security), applied to the consumer and the DLQ producer.
    pub kafka_settings: tickstream_streams::KafkaSettings,
}

impl SinkConfig {
    /// What the sink's loop needs of these settings, whatever its transport.
    pub(crate) fn loop_settings(&self) -> LoopSettings {
        LoopSettings {
            application: self.group_id.clone(),
            batch_size: self.batch_size,
            batch_interval: self.batch_interval,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            shutdown_grace: self.shutdown_grace,
        }
    }

    pub fn from_topology(topology: &Topology, brokers: &str) -> Self {
        let mapper = DocumentMapper::new(topology);
        Self {
            brokers: brokers.to_owned(),
            group_id: format!("{}-sink", topology.application_id),
            topics: mapper.topics(),
            dead_letter_topic: topology.topics.dead_letter.clone(),
            dead_letter_compression: topology.topics.compression.derived.as_str().to_owned(),
            batch_size: topology.mongodb.batch_size.max(1),
            batch_interval: topology.mongodb.batch_interval,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            give_up_after: topology.processing.give_up_after,
            kafka_settings: tickstream_streams::KafkaSettings::default(),
        }
    }
}

/// Tracks the assignment for the processing loop (rebalance callbacks run inside `recv`),
/// notes asynchronous commits that failed, and logs librdkafka's reports at honest levels.
pub(super) struct SinkContext {
    pub(super) assigned: Mutex<HashSet<PartitionKey>>,
    pub(super) revision: AtomicU64,
    /// A commit failed: the loop commits everything written again once Kafka answers.
    pub(super) commit_failed: AtomicBool,
    pub(super) log: ClientLog,
}

impl SinkContext {
    pub(super) fn new() -> Self {
        Self {
            assigned: Mutex::new(HashSet::new()),
            revision: AtomicU64::new(0),
            commit_failed: AtomicBool::new(false),
            log: ClientLog::new("sink consumer"),
        }
    }
}

tickstream_streams::forward_client_log!(SinkContext, log);

impl ConsumerContext for SinkContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            self.commit_failed.store(true, Ordering::Release);
            self.log.error(
                &error,
                "offset commit failed; the offsets are committed again once Kafka answers",
            );
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
        match rebalance {
            Rebalance::Assign(list) => {
                for e in list.elements() {
                    assigned.insert((e.topic().to_owned(), e.partition()));
                }
            }
            Rebalance::Revoke(list) => {
                for e in list.elements() {
                    assigned.remove(&(e.topic().to_owned(), e.partition()));
                }
            }
            Rebalance::Error(error) => self.log.error(error, "rebalance failed"),
        }
        info!(partitions = assigned.len(), "sink assignment changed");
        self.revision.fetch_add(1, Ordering::Release);
    }
}

pub(super) type SinkConsumer = StreamConsumer<SinkContext>;

pub(super) fn consumer_config(config: &SinkConfig) -> ClientConfig {
    client_config(
        &config.brokers,
        &[
            ("group.id", &config.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
            ("fetch.queue.backoff.ms", &kafka_millis(FETCH_QUEUE_BACKOFF)),
            // A crashed sink's partitions move on (or come back to it) within 10 s.
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "3000"),
            (
                "topic.metadata.refresh.interval.ms",
                &kafka_millis(TOPIC_METADATA_REFRESH),
            ),
            (
                "reconnect.backoff.max.ms",
                &kafka_millis(RECONNECT_BACKOFF_MAX),
            ),
        ],
        &config.kafka_settings,
    )
}

pub(super) fn dead_letter_config(config: &SinkConfig) -> ClientConfig {
    client_config(
        &config.brokers,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.type", &config.dead_letter_compression),
            (
                "message.timeout.ms",
                &kafka_millis(config.give_up_after + DELIVERY_MARGIN),
            ),
            (
                "reconnect.backoff.max.ms",
                &kafka_millis(RECONNECT_BACKOFF_MAX),
            ),
        ],
        &config.kafka_settings,
    )
}

/// Every second: do the brokers answer, and do the subscribed topics exist? Updates
/// `availability` (hence `/readyz`) until aborted, or until Kafka has been unreachable for
/// `give_up_after` (the processing loop then stops the sink).
pub(super) async fn watch_kafka(
    consumer: Arc<SinkConsumer>,
    topics: Vec<String>,
    brokers: String,
    availability: Arc<Availability>,
) {
    let mut rebootstrapper = Rebootstrapper::default();
    loop {
        let probe = {
            let consumer = Arc::clone(&consumer);
            let topics = topics.clone();
            tokio::task::spawn_blocking(move || probe_topics(&consumer, &topics)).await
        };
        let outcome = match probe {
            Ok(Ok(missing)) => {
                rebootstrapper.answered();
                availability.kafka_up(missing);
                Ok(())
            }
            Ok(Err(cause)) => {
                // A consumer left without brokers would never find them again by itself.
                rebootstrapper.failed(consumer.client(), &brokers);
                availability.kafka_down(&cause)
            }
            Err(error) => availability.kafka_down(&format!("the metadata probe failed: {error}")),
        };
        if outcome.is_err() {
            return;
        }
        tokio::time::sleep(KAFKA_PROBE_INTERVAL).await;
    }
}

/// The subscribed topics that do not exist, or why the brokers did not answer. One metadata
/// request per topic: a full cluster listing can be large. Asked through the consumer, which
/// never auto-creates a topic (`allow.auto.create.topics` is false for consumers).
fn probe_topics(consumer: &SinkConsumer, topics: &[String]) -> Result<Vec<String>, String> {
    let mut missing = Vec::new();
    for topic in topics {
        match consumer.fetch_metadata(Some(topic), KAFKA_PROBE_TIMEOUT) {
            Ok(metadata) => {
                let exists = metadata.topics().iter().any(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                });
                if !exists {
                    missing.push(topic.clone());
                }
            }
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
            )) => missing.push(topic.clone()),
            Err(error) => {
                return Err(match consumer.context().log.last_problem() {
                    Some(problem) => format!("{error}; last report: {problem}"),
                    None => error.to_string(),
                });
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_settings_follow_the_topology() {
        // Dead letters carry derived events' codec; the outage bound is 45 s.
        let toml = [
            r#"symbols = ["BTCUSDT"]"#,
            "[topics]",
            r#"compression = { raw = "none", derived = "zstd" }"#,
            "[processing]",
            r#"give_up_after = "45s""#,
        ]
        .join("\n");
        let topology = Topology::from_str(&toml).expect("valid topology");
        let config = SinkConfig::from_topology(&topology, "b:9092");
        let producer = dead_letter_config(&config);
        assert_eq!(
            producer.get("compression.type"),
            Some("zstd"),
            "derived family"
        );
        let timeout: u64 = producer
            .get("message.timeout.ms")
            .and_then(|v| v.parse().ok())
            .expect("a message timeout");
        assert!(timeout > 45_000, "{timeout} ms");
        let consumer = consumer_config(&config);
        let refresh: u64 = consumer
            .get("topic.metadata.refresh.interval.ms")
            .and_then(|v| v.parse().ok())
            .expect("a refresh interval");
        assert!(
            refresh <= 5_000,
            "a topic created later is read within seconds, not librdkafka's 5 min: {refresh} ms"
        );
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
    }
}
