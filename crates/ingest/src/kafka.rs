//! The Kafka side of ingest: raw ticks onto the topology's raw topic(s), key = symbol, value =
//! the tick in the topology's `raw_format`, with an idempotent producer and `acks=all`.
//!
//! Retries are librdkafka's: with idempotence it resends on its own, in order and without
//! duplicates, until `message.timeout.ms` (the retry budget) runs out. A record that still
//! fails is not dropped quietly: the delivery report is kept and the next
//! [`KafkaTickSink::send_batch`] or [`KafkaTickSink::flush`] returns it as an error, which stops
//! the process with that message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::IntCounter;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tickstream_model::{RawTick, RecordFormat, Topology};

use crate::metrics::IngestMetrics;

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
    #[error("enqueueing a tick for {topic} failed: {source}")]
    Enqueue { topic: String, source: KafkaError },
    #[error("{in_flight} tick(s) were still unacknowledged after {timeout:?} of flushing")]
    FlushTimeout { in_flight: i32, timeout: Duration },
}

/// What the producer's background thread reports back.
struct DeliveryState {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<SinkError>>,
    /// Produced counters of the topology's symbols, by key bytes: no label lookup per record.
    produced: HashMap<Vec<u8>, IntCounter>,
    metrics: IngestMetrics,
}

/// The producer's context: counts delivery reports.
pub struct DeliveryCounter(Arc<DeliveryState>);

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let state = &self.0;
        match result {
            Ok(message) => {
                state.delivered.fetch_add(1, Ordering::Relaxed);
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
    topology: Topology,
    format: RecordFormat,
    brokers: String,
    buffer: Vec<u8>,
}

impl KafkaTickSink {
    /// librdkafka's retry budget per record: with idempotence, retries go on until this.
    pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

    /// A producer for `topology`'s raw topics on `brokers`; `extra_settings` (security
    /// settings from the environment) are applied last.
    pub fn new(
        topology: &Topology,
        brokers: &str,
        extra_settings: &[(String, String)],
        metrics: &IngestMetrics,
    ) -> Result<Self, SinkError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                Self::MESSAGE_TIMEOUT.as_millis().to_string(),
            )
            // Throughput: ~80-byte records in batches of up to 1 MB, 5 ms to fill them, lz4
            // (cheap on CPU; JSON ticks compress ~3x).
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("batch.num.messages", "100000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576");
        for (key, value) in extra_settings {
            config.set(key, value);
        }
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
        });
        let producer = config
            .create_with_context(DeliveryCounter(Arc::clone(&state)))
            .map_err(SinkError::Config)?;
        Ok(Self {
            producer,
            state,
            topology: topology.clone(),
            format: topology.topics.raw_format,
            brokers: brokers.to_owned(),
            buffer: Vec::with_capacity(128),
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

    /// Enqueues every tick (waiting while librdkafka's queue is full); fails on the first
    /// delivery failure reported so far.
    pub async fn send_batch(&mut self, ticks: &[RawTick]) -> Result<(), SinkError> {
        self.check_failures()?;
        for tick in ticks {
            let symbol = tick.symbol.as_str();
            let topic = self
                .topology
                .raw_topic_for(symbol)
                .ok_or_else(|| SinkError::NoTopic {
                    symbol: symbol.to_owned(),
                })?;
            self.buffer.clear();
            tick.encode_into(self.format, &mut self.buffer);
            let mut record = BaseRecord::to(topic).key(symbol).payload(&self.buffer);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // Back-pressure: the background thread is draining the queue.
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        self.check_failures()?;
                    }
                    Err((source, _)) => {
                        return Err(SinkError::Enqueue {
                            topic: topic.to_owned(),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for every enqueued tick to be acknowledged.
    pub async fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        self.check_failures()?;
        let in_flight = self.producer.in_flight_count();
        if in_flight > 0 {
            return Err(SinkError::FlushTimeout { in_flight, timeout });
        }
        Ok(())
    }

    /// Ticks Kafka acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.state.delivered.load(Ordering::Relaxed)
    }

    /// Ticks that failed for good so far.
    pub fn failed(&self) -> u64 {
        self.state.failed.load(Ordering::Relaxed)
    }

    fn check_failures(&self) -> Result<(), SinkError> {
        if self.state.failed.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let first = self
            .state
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
}
