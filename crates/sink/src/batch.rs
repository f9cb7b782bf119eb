//! One batch of consumed records: the documents to write, where each came from (for the
//! dead-letter topic if MongoDB refuses it), the records refused before writing, and the
//! offsets to commit once the batch is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::OwnedHeaders;
use tickstream_streams::{OwnedRecord, Record, dlq_headers};
use tracing::info;

use crate::document::{DocumentMapper, SinkDocument};
use crate::pipeline::MONGODB_REJECTED;

/// A (topic, partition).
pub(crate) type PartitionKey = (String, i32);

/// A record kept for the dead-letter topic: the original bytes and headers, and why. Each
/// transport turns it into what it sends with [`DeadLetter::reason`].
pub(crate) struct DeadLetter {
    pub(crate) record: OwnedRecord,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl DeadLetter {
    /// The reason headers that follow the record's own (`tickstream_streams::dlq_headers`);
    /// `application` is the sink's group, `<application_id>-sink`.
    pub(crate) fn reason(&self, application: &str) -> [(&'static str, String); 6] {
        dlq_headers::headers(
            &self.code,
            &self.message,
            &self.record.topic,
            self.record.partition,
            self.record.offset,
            application,
        )
    }
}

impl DeadLetter {
    /// The dead letter for `record` (where a buffered document came from), which MongoDB
    /// refused with `message`.
    pub(crate) fn refused(record: &OwnedRecord, message: &str) -> Self {
        Self {
            record: record.clone(),
            code: MONGODB_REJECTED.to_owned(),
            message: message.to_owned(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) documents: Vec<SinkDocument>,
    /// Where each document came from: the record, for the dead letter if MongoDB refuses it.
    pub(crate) origins: Vec<OwnedRecord>,
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// Next offset to commit per partition.
    pub(crate) offsets: HashMap<PartitionKey, i64>,
    pub(crate) records: usize,
    pub(crate) started: Option<Instant>,
    /// Topic names shared by the origins: no allocation per record.
    topics: Vec<Arc<str>>,
}

impl Batch {
    /// Adds `record` (with its own `headers`, kept for the dead-letter topic), mapped to its
    /// document; without a `mapper` (no MongoDB to write) only its position is kept.
    pub(crate) fn push(
        &mut self,
        mapper: Option<&DocumentMapper>,
        record: &Record<'_>,
        headers: Option<OwnedHeaders>,
    ) {
        self.started.get_or_insert_with(Instant::now);
        self.records += 1;
        let next = record.offset + 1;
        match self
            .offsets
            .iter_mut()
            .find(|((topic, partition), _)| topic == record.topic && *partition == record.partition)
        {
            Some((_, offset)) => *offset = next,
            None => {
                self.offsets
                    .insert((record.topic.to_owned(), record.partition), next);
            }
        }
        let Some(mapper) = mapper else {
            return;
        };
        let origin = OwnedRecord::copy(record, self.intern(record.topic), headers);
        match mapper.map(record) {
            Ok(document) => {
                self.documents.push(document);
                self.origins.push(origin);
            }
            Err(error) => self.dead_letters.push(DeadLetter {
                record: origin,
                code: error.code.to_owned(),
                message: error.message,
            }),
        }
    }

    /// Drops what came from partitions no longer assigned (their new owner re-reads it).
    pub(crate) fn retain_assigned(&mut self, assigned: &HashSet<PartitionKey>) {
        let keep = |topic: &str, partition: i32| assigned.contains(&(topic.to_owned(), partition));
        let before = self.records;
        let mut kept_documents = Vec::with_capacity(self.documents.len());
        let mut kept_origins = Vec::with_capacity(self.origins.len());
        for (document, origin) in self.documents.drain(..).zip(self.origins.drain(..)) {
            if keep(&origin.topic, origin.partition) {
                kept_documents.push(document);
                kept_origins.push(origin);
            }
        }
        self.documents = kept_documents;
        self.origins = kept_origins;
        self.dead_letters
            .retain(|d| keep(&d.record.topic, d.record.partition));
        self.offsets
            .retain(|(topic, partition), _| keep(topic, *partition));
        // (Only Kafka revokes, and a Kafka sink always maps: every record is one or the other.)
        self.records = self.documents.len() + self.dead_letters.len();
        if self.records < before {
            info!(
                dropped = before - self.records,
                "dropped buffered records of revoked partitions; their new owner re-reads them"
            );
        }
    }

    fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(known) = self.topics.iter().find(|t| ***t == *topic) {
            return Arc::clone(known);
        }
        let topic: Arc<str> = topic.into();
        self.topics.push(Arc::clone(&topic));
        topic
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use tickstream_model::Topology;

    use super::*;

    fn topology() -> Topology {
        Topology::from_str(
            r#"
            symbols = ["BTCUSDT"]
            [topics]
            raw = "raw"
            "#,
        )
        .expect("valid topology")
    }

    fn push(batch: &mut Batch, mapper: &DocumentMapper, partition: i32, offset: i64, value: &[u8]) {
        batch.push(
            Some(mapper),
            &Record {
                topic: "raw",
                partition,
                offset,
                timestamp: Some(1),
                key: None,
                value: Some(value),
            },
            None,
        );
    }

    #[test]
    fn batch_tracks_next_offsets_and_dead_letters() {
        let mapper = DocumentMapper::new(&topology());
        let mut batch = Batch::default();
        let tick = br#"{"symbol":"BTCUSDT","price":1.5}"#;
        push(&mut batch, &mapper, 0, 5, tick);
        push(&mut batch, &mapper, 0, 6, b"garbage");
        push(&mut batch, &mapper, 1, 9, tick);
        assert_eq!(batch.records, 3);
        assert_eq!(batch.documents.len(), 2);
        assert_eq!(batch.dead_letters[0].code, "not_json");
        assert_eq!(
            batch.dead_letters[0].record.value.as_deref(),
            Some(&b"garbage"[..])
        );
        assert_eq!(
            batch.offsets[&("raw".to_owned(), 0)],
            7,
            "the next offset to read"
        );
        assert_eq!(batch.offsets[&("raw".to_owned(), 1)], 10);
    }

    #[test]
    fn revoked_partitions_leave_the_batch_uncommitted() {
        let mapper = DocumentMapper::new(&topology());
        let mut batch = Batch::default();
        let tick = br#"{"symbol":"BTCUSDT","price":1.5}"#;
        push(&mut batch, &mapper, 0, 5, tick);
        push(&mut batch, &mapper, 1, 9, tick);
        push(&mut batch, &mapper, 1, 10, b"garbage");
        batch.retain_assigned(&HashSet::from([("raw".to_owned(), 0)]));
        assert_eq!(batch.records, 1);
        assert_eq!(batch.origins.len(), 1);
        assert_eq!(batch.origins[0].partition, 0);
        assert!(batch.dead_letters.is_empty());
        assert_eq!(batch.offsets.len(), 1, "nothing committed for partition 1");
    }
}
