//! The record collector (Kafka Streams' `RecordCollectorImpl`): every record an instance
//! produces goes through here — processor outputs, records forwarded to the repartition topic,
//! dead letters and changelog writes — onto the one (transactional) producer.
//!
//! Responsibilities, and only these:
//! - **send**: hand the record to librdkafka, waiting for room when its queue is full (never a
//!   lost record; the bytes are copied, nothing is allocated per record);
//! - **the first send error of the batch**: a refused send does not stop the processor in the
//!   middle of a record; it is kept (the first one only) and fails the next commit, which then
//!   aborts and redoes the batch — as `RecordCollectorImpl` keeps its `sendException` and
//!   throws it at the next `send`/`flush`;
//! - **flush**: wait for every delivery report of the batch, and return the first delivery
//!   error or the changelog offsets written (the stores' checkpoints);
//! - **produced counts** per topic, reported to the metrics when the batch commits and
//!   forgotten when it aborts (it will be produced again).
//!
//! Transactions themselves (begin, send offsets, commit, abort) are the commit path's
//! (`commit.rs`): it reaches the producer through [`RecordCollector::producer`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer};

use super::commit::OPERATION_TIMEOUT;
use super::dead_letter::{DeadLetter, DeadLetterWriter};
use super::produce::{DeliveryLog, StreamsProducer, count, lock, send_polling};
use crate::processor::Collector;
use crate::store::Change;

/// How long [`RecordCollector::flush`] sleeps when no delivery report has come: about what a
/// commit may wait beyond its last acknowledgement.
const FLUSH_STEP: Duration = Duration::from_micros(200);

pub(crate) struct RecordCollector {
    producer: StreamsProducer,
    changelog: String,
    /// Writes refused records to the dead-letter topic, in the open transaction.
    dead_letters: DeadLetterWriter,
    /// The first send error of this batch: the batch cannot commit.
    send_error: Option<KafkaError>,
    /// Records produced since the last commit, per topic.
    produced: HashMap<String, u64>,
}

impl RecordCollector {
    pub(crate) fn new(
        producer: StreamsProducer,
        changelog: String,
        dead_letters: DeadLetterWriter,
    ) -> Self {
        Self {
            producer,
            changelog,
            dead_letters,
            send_error: None,
            produced: HashMap::new(),
        }
    }

    /// Takes `producer` in place of a fenced one. The old one's delivery reports go with it;
    /// the caller discards the rest of the batch ([`Self::discard_batch`]) and redoes it.
    pub(crate) fn replace_producer(&mut self, producer: StreamsProducer) {
        self.producer = producer;
    }

    /// The producer, for the commit path's transaction calls.
    pub(crate) fn producer(&self) -> &StreamsProducer {
        &self.producer
    }

    /// Sends `record`: counted when librdkafka took it, else its error is kept (the first of
    /// the batch). Returns whether it was taken.
    fn send_record(&mut self, topic: &str, record: BaseRecord<'_, [u8], [u8]>) -> bool {
        match send_polling(&self.producer, record) {
            Ok(()) => {
                count(&mut self.produced, topic, 1);
                true
            }
            Err(error) => {
                self.send_error.get_or_insert(error);
                false
            }
        }
    }

    /// Sends a record re-keyed to `partition` of `topic` (the repartition topic), with the
    /// original value, timestamp and headers. Returns whether it was taken.
    pub(crate) fn send_to_partition(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp: Option<i64>,
        headers: Option<OwnedHeaders>,
    ) -> bool {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(timestamp) = timestamp {
            record = record.timestamp(timestamp);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        self.send_record(topic, record)
    }

    /// Sends a refused record to the dead-letter topic (see `dead_letter.rs`).
    pub(crate) fn send_dead_letter(&mut self, letter: DeadLetter<'_>) {
        match self.dead_letters.enqueue(&self.producer, letter) {
            Ok(()) => count(&mut self.produced, self.dead_letters.topic(), 1),
            Err(error) => {
                self.send_error.get_or_insert(error);
            }
        }
    }

    /// Writes a task's state changes to its changelog partition. Unlike the other sends this
    /// is part of the commit itself: an error fails it at once.
    // rdkafka hands a refused record back in its `Err`: that is the large variant.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send_changelog(
        &mut self,
        partition: i32,
        changes: &[Change],
    ) -> Result<(), KafkaError> {
        for (key, value) in changes {
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.changelog)
                .partition(partition)
                .key(key);
            if let Some(value) = value {
                record = record.payload(value);
            }
            send_polling(&self.producer, record)?;
        }
        count(&mut self.produced, &self.changelog, changes.len() as u64);
        Ok(())
    }

    /// Whether a send of this batch failed (the batch must then be committed to be aborted).
    pub(crate) fn has_send_error(&self) -> bool {
        self.send_error.is_some()
    }

    /// The first send error of this batch, if any; the batch cannot commit.
    pub(crate) fn take_send_error(&mut self) -> Option<KafkaError> {
        self.send_error.take()
    }

    /// Waits until every record of the batch is acknowledged: the first delivery error, or
    /// the highest changelog offset written per partition.
    ///
    /// Not `Producer::flush`: since rust-rdkafka 0.37 (fede1024/rust-rdkafka#748, #777) it
    /// serves delivery reports with `poll(100 ms)`, and that `poll` runs to its timeout
    /// however soon the last report comes — every commit waited a whole 100 ms more than its
    /// records took (issue 16: half of enrich's time at 10 symbols). A shorter `poll` does not
    /// help: under a millisecond it spins. So: `rd_kafka_flush` without waiting (librdkafka
    /// sends what it holds now), then serve the reports as they come, one event per
    /// `poll(0)`, and sleep [`FLUSH_STEP`] when none has come, until nothing is outstanding.
    pub(crate) fn flush(&mut self) -> Result<HashMap<i32, i64>, KafkaError> {
        let deadline = Instant::now() + OPERATION_TIMEOUT;
        match self.producer.flush(Duration::ZERO) {
            Ok(()) | Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
            Err(error) => return Err(error),
        }
        loop {
            // Messages not yet acknowledged plus reports and events not yet served.
            let outstanding = self.producer.in_flight_count();
            if outstanding == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            self.producer.poll(Duration::ZERO);
            if self.producer.in_flight_count() == outstanding {
                std::thread::sleep(FLUSH_STEP);
            }
        }
        let log = std::mem::take(&mut *lock(&self.producer.context().log));
        match log.first_error {
            Some(error) => Err(error),
            None => Ok(log.changelog_end),
        }
    }

    /// Serves delivery reports without waiting (now and then on the record path, so the
    /// reports do not pile up until the commit's flush).
    pub(crate) fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// The batch committed: its produced counts, per topic.
    pub(crate) fn take_produced(&mut self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.produced.drain()
    }

    /// The batch aborted: forget its delivery reports, send error and counts (it is redone).
    pub(crate) fn discard_batch(&mut self) {
        *lock(&self.producer.context().log) = DeliveryLog::default();
        self.send_error = None;
        self.produced.clear();
    }
}

/// What processors emit through: straight to the producer (librdkafka copies the bytes).
impl Collector for RecordCollector {
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(timestamp) = timestamp {
            record = record.timestamp(timestamp);
        }
        self.send_record(topic, record);
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;
    use crate::kafka::produce::DeliveryContext;

    /// A collector whose producer refuses values over 1,000 bytes at once (no broker needed).
    fn collector() -> RecordCollector {
        let producer: StreamsProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.max.bytes", "1000")
            .set("message.timeout.ms", "100")
            .create_with_context(DeliveryContext::new("app-changelog".into()))
            .expect("creating a producer needs no broker");
        RecordCollector::new(
            producer,
            "app-changelog".into(),
            DeadLetterWriter::new("app.dlq"),
        )
    }

    fn produced(collector: &mut RecordCollector) -> Vec<(String, u64)> {
        let mut counts: Vec<_> = collector.take_produced().collect();
        counts.sort();
        counts
    }

    #[test]
    fn a_refused_send_is_kept_for_the_commit_and_only_taken_sends_are_counted() {
        let mut collector = collector();
        collector.send("out", Some(b"k"), b"small", None);
        assert!(!collector.has_send_error());
        let oversized = vec![b'x'; 2_000];
        collector.send("out", Some(b"k"), &oversized, None);
        collector.send("out", Some(b"k"), b"small again", None);
        assert!(
            collector.has_send_error(),
            "a later success does not hide it"
        );
        let error = collector.take_send_error().expect("the first send error");
        assert_eq!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge)
        );
        assert!(collector.take_send_error().is_none(), "taken once");
        assert_eq!(produced(&mut collector), [("out".to_owned(), 2)]);

        collector.send("out", Some(b"k"), &oversized, None);
        collector.send("out", Some(b"k"), b"small", None);
        collector.discard_batch();
        assert!(
            !collector.has_send_error(),
            "an aborted batch leaves nothing behind"
        );
        assert!(produced(&mut collector).is_empty());
    }
}
