//! The producer side of an instance: delivery reports (which changelog offsets were written,
//! whether anything failed) and sending with backpressure instead of failing on a full queue.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};

use crate::client_log::ClientLog;
use crate::processor::Collector;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock already failed the run; the data is still consistent
    // enough to report and shut down.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the producer's delivery reports said since the last commit.
#[derive(Default)]
pub(crate) struct DeliveryLog {
    /// Highest changelog offset written, per partition.
    pub(crate) changelog_end: HashMap<i32, i64>,
    pub(crate) first_error: Option<KafkaError>,
}

pub(crate) struct DeliveryContext {
    changelog: String,
    pub(crate) log: Mutex<DeliveryLog>,
    client_log: ClientLog,
}

impl DeliveryContext {
    pub(crate) fn new(changelog: String) -> Self {
        Self {
            changelog,
            log: Mutex::new(DeliveryLog::default()),
            client_log: ClientLog::new("producer"),
        }
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.client_log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client_log.error(&error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut log = lock(&self.log);
        match result {
            Ok(message) if message.topic() == self.changelog => {
                let end = log
                    .changelog_end
                    .entry(message.partition())
                    .or_insert(message.offset());
                *end = (*end).max(message.offset());
            }
            Ok(_) => {}
            Err((error, _)) => {
                log.first_error.get_or_insert_with(|| error.clone());
            }
        }
    }
}

/// Adds `n` to `topic`'s count. Per-record path: allocates the topic name only the first time.
pub(crate) fn count(counts: &mut HashMap<String, u64>, topic: &str, n: u64) {
    match counts.get_mut(topic) {
        Some(total) => *total += n,
        None => {
            counts.insert(topic.to_owned(), n);
        }
    }
}

pub(crate) type StreamsProducer = BaseProducer<DeliveryContext>;

/// Sends, waiting for room when librdkafka's queue is full rather than failing.
pub(crate) fn send_with_backpressure(
    producer: &StreamsProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                producer.poll(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// The collector processors emit through: straight into the producer (librdkafka copies the
/// bytes), remembering the first failure so the commit fails instead of losing a record.
pub(crate) struct ProducerCollector<'a> {
    pub(crate) producer: &'a StreamsProducer,
    pub(crate) failure: &'a mut Option<KafkaError>,
    pub(crate) produced: &'a mut HashMap<String, u64>,
}

impl Collector for ProducerCollector<'_> {
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(timestamp) = timestamp {
            record = record.timestamp(timestamp);
        }
        match send_with_backpressure(self.producer, record) {
            Ok(()) => count(self.produced, topic, 1),
            Err(error) => {
                self.failure.get_or_insert(error);
            }
        }
    }
}
