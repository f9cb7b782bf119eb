//! The in-process transport of the sink's loop ([`crate::pipeline`]): `tickstream run`'s sink,
//! over `tickstream_streams::InMemoryBroker`, as the reader group `<application_id>-sink` of
//! the raw, derived and dead-letter topics, every partition.
//!
//! * Every record read is handed to a [`RecordObserver`] first (`run`'s JSON Lines files and
//!   live view), then — raw and derived records — batched and written to MongoDB when there
//!   is one; the positions are committed (releasing the records from the transport) only after
//!   the observer flushed them and MongoDB acknowledged them.
//! * The dead-letter topic's records are observed only (MongoDB has no collection for them)
//!   and committed once flushed.
//! * The sink's own dead letters (unmappable records, documents MongoDB refused) go to the
//!   observer's dead-letter output — `run`'s dead-letter file — and not to the dead-letter
//!   topic: this sink is that topic's only reader, so a letter produced there would wait for
//!   room that only this very loop, busy producing it, could make.
//! * The input ends when every followed topic was closed by its producer and read to its end:
//!   the loop then writes and commits the rest and returns (drain semantics). A shutdown
//!   request does not cut the reads short — the producers upstream stop and close their topics
//!   — it only bounds MongoDB's retries by the shutdown grace.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tickstream_model::Topology;
use tickstream_streams::{
    Health, InMemoryBroker, MemoryError, OwnedRecord, Record, Shutdown, StoredRecord,
};

use crate::availability::Availability;
use crate::batch::{Batch, DeadLetter, PartitionKey};
use crate::document::DocumentMapper;
use crate::input::{Polled, SinkInput};
use crate::kafka::SinkConfig;
use crate::metrics::SinkMetrics;
use crate::pipeline::SinkLoop;
use crate::writer::{MongoWriter, SinkError};

/// Records taken from one partition per poll, at most.
const POLL_MAX: usize = 1_000;
/// The longest an idle poll waits for new records before the loop turns again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Where the settings name the brokers: the in-process transport has none.
const TRANSPORT: &str = "the in-process transport";

/// What sees every record the in-process sink reads (`tickstream run`: the JSON Lines files
/// and the live view).
pub trait RecordObserver: Send {
    /// A record of `topic` as read, before anything else is done with it.
    fn on_record(&mut self, topic: &str, record: &StoredRecord) -> std::io::Result<()>;

    /// One of the sink's own dead letters: the record unchanged, the reason headers after its
    /// own (`tickstream_streams::dlq_headers`).
    fn on_dead_letter(&mut self, letter: &StoredRecord) -> std::io::Result<()>;

    /// Makes everything handed over so far durable; called before any of it is committed.
    fn flush(&mut self) -> std::io::Result<()>;
}

/// `tickstream run`'s sink: the sink's loop over the in-process transport.
pub struct InProcessSink<O> {
    sink: SinkLoop<InProcessInput<O>>,
}

impl<O: RecordObserver> InProcessSink<O> {
    /// Subscribes the sink's group to its topics, which must exist: do it before anything is
    /// produced to them, so the transport keeps every record for the sink. Idempotent.
    pub fn subscribe(broker: &InMemoryBroker, topology: &Topology) -> Result<(), MemoryError> {
        let config = SinkConfig::from_topology(topology, TRANSPORT);
        for topic in config.topics.iter().chain([&config.dead_letter_topic]) {
            broker.subscribe(&config.group_id, topic)?;
        }
        Ok(())
    }

    /// The sink of `topology`'s topics on `broker` (subscribing, see [`Self::subscribe`]),
    /// writing to MongoDB through `writer` when given, every record shown to `observer`.
    pub fn new(
        broker: Arc<InMemoryBroker>,
        topology: &Topology,
        writer: Option<MongoWriter>,
        observer: O,
    ) -> Result<Self, SinkError> {
        Self::subscribe(&broker, topology)?;
        // The same batching, backoff, grace and give-up rule as `tickstream sink`'s.
        let config = SinkConfig::from_topology(topology, TRANSPORT);
        let mut partitions = Vec::new();
        let mapped = config.topics.iter().map(|t| (t, true));
        for (topic, is_mapped) in mapped.chain([(&config.dead_letter_topic, false)]) {
            for partition in 0..broker.partition_count(topic)? {
                partitions.push(Followed {
                    topic: topic.as_str().into(),
                    partition: partition as i32,
                    mapped: is_mapped,
                    ended: false,
                });
            }
        }
        let metrics = Arc::new(SinkMetrics::new(&topology.application_id));
        let address = writer.as_ref().map_or("no MongoDB", MongoWriter::address);
        let availability = Arc::new(Availability::new(
            Arc::new(Health::default()),
            Arc::clone(&metrics),
            config.give_up_after,
            address,
            TRANSPORT,
        ));
        let settings = config.loop_settings();
        let input = InProcessInput {
            broker,
            group: config.group_id,
            partitions,
            next: 0,
            observer,
        };
        Ok(Self {
            sink: SinkLoop {
                input,
                settings,
                mapper: DocumentMapper::new(topology),
                writer,
                metrics,
                availability,
            },
        })
    }

    /// The sink's metrics (documents written, dead letters, `mongodb_up`, commits).
    pub fn metrics(&self) -> Arc<SinkMetrics> {
        Arc::clone(&self.sink.metrics)
    }

    /// Reads until every followed topic ended, writing and committing as it goes (see the
    /// module docs); leaves the group at the end, also on error, so that producers never wait
    /// for a sink that is gone.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), SinkError> {
        self.sink.run(shutdown).await
    }
}

/// One partition the sink follows.
struct Followed {
    topic: Arc<str>,
    partition: i32,
    /// Raw or derived: written to MongoDB. The dead-letter topic is observed only.
    mapped: bool,
    /// Read to the end of its closed topic.
    ended: bool,
}

struct InProcessInput<O> {
    broker: Arc<InMemoryBroker>,
    group: String,
    partitions: Vec<Followed>,
    /// Where the next poll starts, so that a full batch does not always favour the first.
    next: usize,
    observer: O,
}

impl<O: RecordObserver> InProcessInput<O> {
    /// One pass over the partitions, from `next` on, until `batch` holds `batch_size`: every
    /// record observed, the raw and derived ones batched; the dead-letter topic's committed
    /// once flushed. How many records were taken.
    fn take_available(
        &mut self,
        batch: &mut Batch,
        mapper: Option<&DocumentMapper>,
        batch_size: usize,
    ) -> Result<usize, SinkError> {
        let mut taken = 0;
        let mut observed_only = Vec::new();
        let count = self.partitions.len();
        for step in 0..count {
            let room = batch_size.saturating_sub(batch.records).min(POLL_MAX);
            if room == 0 {
                break;
            }
            let followed = &mut self.partitions[(self.next + step) % count];
            if followed.ended {
                continue;
            }
            let (topic, partition) = (&*followed.topic, followed.partition);
            let fetched = self.broker.poll(&self.group, topic, partition, room)?;
            followed.ended = fetched.end_of_partition;
            for (i, stored) in fetched.records.iter().enumerate() {
                self.observer
                    .on_record(topic, stored)
                    .map_err(SinkError::Output)?;
                if followed.mapped {
                    let offset = fetched.first_offset + i as i64;
                    let record = Record::from_stored(topic, partition, offset, stored);
                    batch.push(mapper, &record, OwnedRecord::headers_of(stored));
                }
            }
            if !followed.mapped && !fetched.records.is_empty() {
                observed_only.push((
                    Arc::clone(&followed.topic),
                    partition,
                    fetched.next_offset(),
                ));
            }
            taken += fetched.records.len();
        }
        self.next = (self.next + 1) % count.max(1);
        self.observer.flush().map_err(SinkError::Output)?;
        for (topic, partition, next_offset) in observed_only {
            self.broker
                .commit(&self.group, &topic, partition, next_offset)?;
        }
        Ok(taken)
    }
}

impl<O: RecordObserver> SinkInput for InProcessInput<O> {
    fn start(&mut self, availability: &Arc<Availability>) -> Result<(), SinkError> {
        availability.transport_always_up();
        Ok(())
    }

    async fn poll(
        &mut self,
        batch: &mut Batch,
        mapper: Option<&DocumentMapper>,
        batch_size: usize,
    ) -> Result<Polled, SinkError> {
        let seen = self.broker.generation();
        let taken = self.take_available(batch, mapper, batch_size)?;
        if self.partitions.iter().all(|p| p.ended) {
            return Ok(Polled::Ended);
        }
        if taken == 0 {
            // Bounded, so that the loop turns (heartbeat, batch deadlines) at least every
            // IDLE_WAIT.
            let _ = tokio::time::timeout(IDLE_WAIT, self.broker.changed_since(seen)).await;
        }
        Ok(Polled::More)
    }

    fn drains_on_stop(&self) -> bool {
        true
    }

    fn assignment_changed(&mut self) -> Option<HashSet<PartitionKey>> {
        None
    }

    fn is_assigned(&self, _partition: &PartitionKey) -> bool {
        true
    }

    fn commit(&self, offsets: &HashMap<PartitionKey, i64>, _last: bool) -> Result<bool, SinkError> {
        for ((topic, partition), next_offset) in offsets {
            self.broker
                .commit(&self.group, topic, *partition, *next_offset)?;
        }
        Ok(true)
    }

    fn take_commit_failed(&self) -> bool {
        false
    }

    async fn dead_letter(
        &mut self,
        letter: &DeadLetter,
        application: &str,
    ) -> Result<(), SinkError> {
        let stored = stored_letter(letter, application);
        self.observer
            .on_dead_letter(&stored)
            .and_then(|()| self.observer.flush())
            .map_err(SinkError::Output)
    }

    fn close(self, _availability: &Availability) {
        self.broker.leave(&self.group);
    }
}

/// `letter` as the in-process transport stores it: the record unchanged, its own headers, then
/// the reason.
fn stored_letter(letter: &DeadLetter, application: &str) -> StoredRecord {
    letter
        .record
        .to_stored()
        .dead_letter(letter.reason(application))
}

#[cfg(test)]
mod tests {
    use tickstream_streams::dlq_headers;

    use super::*;
    use crate::batch::DeadLetter;
    use crate::pipeline::MONGODB_REJECTED;

    #[test]
    fn a_refused_record_is_dead_lettered_unchanged_with_the_reason_after_its_own_headers() {
        let original = StoredRecord {
            key: Some(b"BTCUSDT".to_vec()),
            value: b"{\"symbol\":\"BTCUSDT\"}".to_vec(),
            timestamp: Some(7),
            headers: vec![("trace".to_owned(), "abc".to_owned())],
        };
        let origin = OwnedRecord {
            topic: "prices.raw".into(),
            partition: 2,
            offset: 41,
            timestamp: original.timestamp,
            key: original.key.clone(),
            value: Some(original.value.clone()),
            headers: OwnedRecord::headers_of(&original),
        };
        let letter = DeadLetter::refused(&origin, "document too large");
        let stored = stored_letter(&letter, "app-sink");
        assert_eq!(stored.value, original.value);
        assert_eq!(stored.key, original.key);
        assert_eq!(stored.timestamp, Some(7));
        assert_eq!(stored.headers[0], ("trace".to_owned(), "abc".to_owned()));
        let reason: Vec<(String, String)> = [
            (dlq_headers::ERROR_CODE, MONGODB_REJECTED),
            (dlq_headers::ERROR_MESSAGE, "document too large"),
            (dlq_headers::SOURCE_TOPIC, "prices.raw"),
            (dlq_headers::SOURCE_PARTITION, "2"),
            (dlq_headers::SOURCE_OFFSET, "41"),
            (dlq_headers::APPLICATION, "app-sink"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        assert_eq!(
            stored.headers[1..],
            reason,
            "the reason, after the record's own"
        );
        let headerless = StoredRecord {
            headers: Vec::new(),
            ..original.clone()
        };
        assert!(
            OwnedRecord::headers_of(&headerless).is_none(),
            "no headers cost nothing"
        );
    }
}
