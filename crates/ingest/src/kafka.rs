//! The Kafka side of ingest: raw ticks onto the topology's raw topic(s), key = symbol, value =
//! the tick in the topology's `raw_format`, with an idempotent producer and `acks=all`.
//!
//! Retries are librdkafka's: with idempotence it resends on its own, in order and without
//! duplicates, until `message.timeout.ms` runs out. That budget is set beyond
//! `processing.give_up_after`, so a broker outage never expires a buffered tick while ingest
//! still waits for the broker: ingest is not ready meanwhile and gives up on its own, naming
//! the broker (see `broker_watch`). A record that still fails is not dropped quietly: the
//! delivery report is kept and the next [`KafkaTickSink::send_batch`] or
//! [`KafkaTickSink::flush`] returns it as an error, which stops the process with that message.
//!
//! Records go to the partition Kafka's Java client (and kafka-python) would choose for their
//! key (`partitioner = murmur2_random`), so enrich can tell that a tick already sits in its
//! symbol's partition and needs no repartitioning.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tickstream_model::{RawTick, Topology};
use tickstream_streams::{
    ClientLog, KafkaSettings, SendError, client_config, kafka_millis, send_with_backpressure,
};

use crate::broker_watch::BrokerWatch;
use crate::metrics::IngestMetrics;
use crate::transport::{RawRecords, TickTransport, TransportWatch};

/// Why the Kafka side stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid Kafka producer settings: {0}; check TICKSTREAM_KAFKA_CONFIG_* variables")]
    Config(#[source] KafkaError),
    #[error(
        "the Kafka broker(s) at {brokers} did not answer within {timeout:?} ({source}); start the \
         broker or fix --brokers / TICKSTREAM_KAFKA_BROKERS"
    )]
    Unreachable {
        brokers: String,
        timeout: Duration,
        source: KafkaError,
    },
    #[error(
        "no raw topic for symbol {symbol} in the topology; add it to `symbols` and [topics].raw"
    )]
    NoTopic { symbol: String },
    #[error(
        "Kafka did not accept a tick for {key} on {topic} within the retry budget \
         (message.timeout.ms): {error}; nothing is dropped silently, so ingest stops — check \
         the broker and the topic"
    )]
    Delivery {
        topic: String,
        key: String,
        error: String,
    },
    #[error(
        "the in-process transport refused ticks for {topic}: {source}; the stage reading it \
         stopped first (see its error)"
    )]
    InProcess {
        topic: String,
        source: tickstream_streams::MemoryError,
    },
    #[error("enqueueing a tick for {topic} failed: {source}")]
    Enqueue { topic: String, source: KafkaError },
    #[error("{in_flight} tick(s) were still unacknowledged after {timeout:?} of flushing")]
    FlushTimeout { in_flight: i32, timeout: Duration },
    #[error(
        "Kafka at {brokers} unreachable for {secs} s ({cause}); giving up after \
         processing.give_up_after = {limit:?}: {in_flight} tick(s) not acknowledged are lost; \
         start the broker or fix --brokers / TICKSTREAM_KAFKA_BROKERS"
    )]
    GaveUp {
        brokers: String,
        secs: u64,
        limit: Duration,
        cause: String,
        in_flight: i32,
    },
}

/// What the producer's background thread reports back.
pub(crate) struct DeliveryState {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<SinkError>>,
    /// Produced counters of the topology's symbols, by key bytes: no label lookup per record.
    produced: HashMap<Vec<u8>, IntCounter>,
    metrics: IngestMetrics,
    /// Nanoseconds after `epoch` of the last acknowledged tick; 0 before the first.
    last_delivery_ns: AtomicU64,
    epoch: Instant,
    pub(crate) log: ClientLog,
}

impl DeliveryState {
    /// When Kafka last acknowledged a tick.
    pub(crate) fn last_delivery(&self) -> Option<Instant> {
        match self.last_delivery_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.epoch + Duration::from_nanos(ns)),
        }
    }
}

/// The producer's context: counts delivery reports, logs librdkafka's reports at honest
/// levels (`tickstream_streams::ClientLog`).
pub struct DeliveryCounter(Arc<DeliveryState>);

tickstream_streams::forward_client_log!(DeliveryCounter, 0.log);

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let state = &self.0;
        match result {
            Ok(message) => {
                state.delivered.fetch_add(1, Ordering::Relaxed);
                let ns = state.epoch.elapsed().as_nanos().max(1);
                state
                    .last_delivery_ns
                    .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
                let key = message.key().unwrap_or_default();
                match state.produced.get(key) {
                    Some(counter) => counter.inc(),
                    None => state
                        .metrics
                        .produced_counter(&String::from_utf8_lossy(key))
                        .inc(),
                }
            }
            Err((error, message)) => {
                state.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = state
                    .first_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if first.is_none() {
                    *first = Some(SinkError::Delivery {
                        topic: message.topic().to_owned(),
                        key: String::from_utf8_lossy(message.key().unwrap_or_default())
                            .into_owned(),
                        error: error.to_string(),
                    });
                }
            }
        }
    }
}

/// Raw ticks onto Kafka.
pub struct KafkaTickSink {
    producer: ThreadedProducer<DeliveryCounter>,
    state: Arc<DeliveryState>,
    records: RawRecords,
    brokers: String,
    give_up_after: Duration,
    /// The topic the broker watch asks metadata for.
    probe_topic: Option<String>,
}

impl KafkaTickSink {
    /// How much longer than `processing.give_up_after` librdkafka keeps retrying a tick
    /// (`message.timeout.ms`): ingest gives up first, naming the broker, instead of a tick
    /// expiring while ingest still waits.
    pub const DELIVERY_MARGIN: Duration = Duration::from_secs(60);
    /// librdkafka's longest wait between reconnects (default 10 s): a broker that is back is
    /// reconnected to, and the buffered ticks flow, within this.
    pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

    /// librdkafka's retry budget per record (`message.timeout.ms`) for `give_up_after`.
    pub fn message_timeout(give_up_after: Duration) -> Duration {
        // librdkafka takes at most i32::MAX ms (~24 days).
        (give_up_after + Self::DELIVERY_MARGIN).min(Duration::from_millis(i32::MAX as u64))
    }

    /// The producer's librdkafka settings: ours, then `extra_settings`, which win.
    pub(crate) fn producer_config(
        topology: &Topology,
        brokers: &str,
        extra_settings: &[(String, String)],
    ) -> ClientConfig {
        let give_up_after = topology.processing.give_up_after;
        client_config(
            brokers,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                (
                    "message.timeout.ms",
                    &kafka_millis(Self::message_timeout(give_up_after)),
                ),
                (
                    "reconnect.backoff.max.ms",
                    &kafka_millis(Self::RECONNECT_BACKOFF_MAX),
                ),
                // Kafka's default partitioner for keyed records (murmur2 of the key), as the
                // Java client and kafka-python place them; librdkafka's default is CRC32.
                ("partitioner", "murmur2_random"),
                // Throughput: ~80-byte records in batches of up to 1 MB, 5 ms to fill them.
                ("linger.ms", "5"),
                ("batch.size", "1000000"),
                ("batch.num.messages", "100000"),
                ("compression.type", topology.topics.compression.raw.as_str()),
                // What an outage buffers: a million ticks or 1 GiB; beyond, the source waits.
                ("queue.buffering.max.messages", "1000000"),
                ("queue.buffering.max.kbytes", "1048576"),
            ],
            extra_settings,
        )
    }

    /// A producer for `topology`'s raw topics on `brokers`; `settings` (security
    /// settings from the environment) are applied last.
    pub fn new(
        topology: &Topology,
        brokers: &str,
        settings: &KafkaSettings,
        metrics: &IngestMetrics,
    ) -> Result<Self, SinkError> {
        let give_up_after = topology.processing.give_up_after;
        let config = Self::producer_config(topology, brokers, settings);
        let produced = topology
            .symbols
            .iter()
            .map(|s| {
                (
                    s.as_str().as_bytes().to_vec(),
                    metrics.produced_counter(s.as_str()),
                )
            })
            .collect();
        let state = Arc::new(DeliveryState {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            produced,
            metrics: metrics.clone(),
            last_delivery_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            log: ClientLog::new("ingest producer"),
        });
        let producer = config
            .create_with_context(DeliveryCounter(Arc::clone(&state)))
            .map_err(SinkError::Config)?;
        Ok(Self {
            producer,
            state,
            records: RawRecords::new(topology),
            brokers: brokers.to_owned(),
            give_up_after,
            probe_topic: topology
                .raw_topics()
                .first()
                .map(|topic| (*topic).to_owned()),
        })
    }

    /// Asks the cluster for metadata within `timeout`: an unreachable broker is a start-up
    /// error, and success is what readiness waits for.
    pub async fn check_connected(&self, timeout: Duration) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, timeout).map(|_| ())
        });
        let result = match metadata.await {
            Ok(result) => result,
            Err(_) => Err(KafkaError::Canceled),
        };
        result.map_err(|source| SinkError::Unreachable {
            brokers: self.brokers.clone(),
            timeout,
            source,
        })
    }

    /// How long an outage is ridden out (`processing.give_up_after`).
    pub fn give_up_after(&self) -> Duration {
        self.give_up_after
    }

    /// Ticks that failed for good so far.
    pub fn failed(&self) -> u64 {
        self.state.failed.load(Ordering::Relaxed)
    }

    fn check_failures(&self) -> Result<(), SinkError> {
        check_failures(&self.state)
    }
}

/// The first delivery failure reported so far, if any.
fn check_failures(state: &DeliveryState) -> Result<(), SinkError> {
    if state.failed.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let first = state
        .first_failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    Err(first.unwrap_or_else(|| SinkError::Delivery {
        topic: "?".to_owned(),
        key: "?".to_owned(),
        error: "a delivery failed (reported before)".to_owned(),
    }))
}

impl TransportWatch for BrokerWatch {
    fn check(&mut self) -> Result<bool, SinkError> {
        BrokerWatch::check(self)
    }
}

impl TickTransport for KafkaTickSink {
    type Watch = BrokerWatch;

    /// Watches the broker for the ingest loop: readiness and giving up (see `broker_watch`).
    fn watch(&self) -> BrokerWatch {
        BrokerWatch::new(
            self.producer.clone(),
            Arc::clone(&self.state),
            self.brokers.clone(),
            self.probe_topic.clone(),
            self.give_up_after,
        )
    }

    /// Enqueues every tick (waiting while librdkafka's queue is full); fails on the first
    /// delivery failure reported so far.
    // rdkafka hands a refused record back in its `Err`: that is the large variant.
    #[allow(clippy::result_large_err)]
    async fn send_batch(&mut self, ticks: &[RawTick]) -> Result<(), SinkError> {
        self.check_failures()?;
        for tick in ticks {
            let (placed, value) = self.records.encode(tick)?;
            let record = BaseRecord::to(placed.topic).key(placed.key).payload(value);
            let (producer, state) = (&self.producer, &self.state);
            send_with_backpressure(
                record,
                |record| producer.send(record),
                // Back-pressure: the background thread is draining the queue.
                || async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    check_failures(state)
                },
            )
            .await
            .map_err(|error| match error {
                SendError::Kafka(source) => SinkError::Enqueue {
                    topic: placed.topic.to_owned(),
                    source,
                },
                SendError::Waiting(failure) => failure,
            })?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for every enqueued tick to be acknowledged.
    async fn flush(&mut self, timeout: Duration) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        self.check_failures()?;
        let in_flight = self.producer.in_flight_count();
        if in_flight > 0 {
            return Err(SinkError::FlushTimeout { in_flight, timeout });
        }
        Ok(())
    }

    fn delivered(&self) -> u64 {
        self.state.delivered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_settings_follow_the_topology() {
        let topology = Topology::from_str(
            r#"
            symbols = ["BTCUSDT"]
            [topics]
            compression = { raw = "zstd", derived = "lz4" }
            [processing]
            give_up_after = "90s"
            "#,
        )
        .expect("valid topology");
        let config = KafkaTickSink::producer_config(&topology, "b:9092", &[]);
        assert_eq!(
            config.get("compression.type"),
            Some("zstd"),
            "the raw family's codec"
        );
        assert_eq!(config.get("partitioner"), Some("murmur2_random"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        let timeout: u64 = config
            .get("message.timeout.ms")
            .and_then(|v| v.parse().ok())
            .expect("a message timeout");
        assert!(
            timeout > 90_000,
            "a buffered tick outlives the outage ingest rides out: {timeout} ms"
        );
        let default = KafkaTickSink::producer_config(&Topology::default(), "b:9092", &[]);
        assert_eq!(default.get("compression.type"), Some("none"));
        let extra = [("compression.type".to_owned(), "gzip".to_owned())];
        let overridden = KafkaTickSink::producer_config(&topology, "b:9092", &extra);
        assert_eq!(
            overridden.get("compression.type"),
            Some("gzip"),
            "the environment wins"
        );
    }
}
