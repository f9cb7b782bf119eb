//! A consumed Kafka message as the [`Record`] processors (and the sink) read: the one place
//! that says which of the message's fields a record carries.

use rdkafka::message::Message;

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
    }
}
