//! A consumed Kafka message — or a record of the in-process transport — as the [`Record`]
//! processors (and the sink) read, and as the [`OwnedRecord`] a buffer or a dead letter keeps:
//! the one place that says which fields a record carries.

use std::sync::Arc;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::memory::StoredRecord;
use crate::processor::Record;

impl<'a> Record<'a> {
    /// The record `message` carries, borrowing its topic, key and value. Headers stay on the
    /// message (the dead-letter path takes them from there).
    pub fn from_message<M: Message>(message: &'a M) -> Self {
        Record {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key(),
            value: message.payload(),
        }
    }

    /// The record `stored` at `topic`/`partition`/`offset` of the in-process transport (its
    /// position is the poll's, see [`crate::Fetched::first_offset`]). Headers stay on `stored`.
    pub fn from_stored(
        topic: &'a str,
        partition: i32,
        offset: i64,
        stored: &'a StoredRecord,
    ) -> Self {
        Record {
            topic,
            partition,
            offset,
            timestamp: stored.timestamp,
            key: stored.key.as_deref(),
            value: Some(&stored.value),
        }
    }
}

/// A record copied out of the transport, headers included: what the partition group buffers
/// and what the sink keeps for a dead letter once the message itself is gone.
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    /// Shared by the records of one topic: no allocation per record.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The record's own headers (a dead letter keeps them). `None` costs nothing for the
    /// (usual) records without any.
    pub headers: Option<OwnedHeaders>,
}

impl OwnedRecord {
    /// Copies `record` (whose topic is `topic`) with its `headers`.
    pub fn copy(record: &Record<'_>, topic: Arc<str>, headers: Option<OwnedHeaders>) -> Self {
        Self {
            topic,
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The in-process transport's headers (text) as a Kafka record carries them; `None` for
    /// none, which costs nothing.
    pub fn headers_of(stored: &StoredRecord) -> Option<OwnedHeaders> {
        if stored.headers.is_empty() {
            return None;
        }
        let owned = OwnedHeaders::new_with_capacity(stored.headers.len());
        Some(stored.headers.iter().fold(owned, |owned, (key, value)| {
            owned.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        }))
    }

    /// This record as the in-process transport stores it: headers as text, a missing value
    /// as an empty one.
    pub fn to_stored(&self) -> StoredRecord {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        StoredRecord {
            key: self.key.clone(),
            value: self.value.clone().unwrap_or_default(),
            timestamp: self.timestamp,
            headers: self
                .headers
                .iter()
                .flat_map(|headers| headers.iter())
                .map(|h| (h.key.to_owned(), h.value.map(text).unwrap_or_default()))
                .collect(),
        }
    }

    /// The record, borrowed from this copy.
    pub fn record(&self) -> Record<'_> {
        Record {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    #[test]
    fn a_record_carries_the_messages_coordinates_time_key_and_value() {
        let message = OwnedMessage::new(
            Some(b"v".to_vec()),
            Some(b"k".to_vec()),
            "prices.raw".to_owned(),
            Timestamp::CreateTime(1_700_000_000_123),
            3,
            41,
            None,
        );
        let record = Record::from_message(&message);
        assert_eq!(
            (record.topic, record.partition, record.offset),
            ("prices.raw", 3, 41)
        );
        assert_eq!(record.timestamp, Some(1_700_000_000_123));
        assert_eq!(record.key, Some(&b"k"[..]));
        assert_eq!(record.value, Some(&b"v"[..]));
        let untimed =
            OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        assert_eq!(Record::from_message(&untimed).timestamp, None);

        let owned = OwnedRecord::copy(&record, "prices.raw".into(), None);
        let again = owned.record();
        assert_eq!(
            (again.topic, again.partition, again.offset, again.timestamp),
            ("prices.raw", 3, 41, Some(1_700_000_000_123))
        );
        assert_eq!((again.key, again.value), (Some(&b"k"[..]), Some(&b"v"[..])));
    }
}
