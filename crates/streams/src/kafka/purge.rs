//! Purging the repartition topic of what was processed, as Kafka Streams does
//! (`repartition.purge.interval.ms`).
//!
//! The topic keeps its records with no time limit (`retention.ms = -1`): a forwarded record
//! carries its original timestamp, and a replay of last month's ticks would otherwise be
//! deleted by time-based retention before the instance read it back. Instead, every
//! [`PURGE_INTERVAL`] after a commit, the records before each owned partition's committed
//! position are deleted (`DeleteRecords`), which bounds the topic to what is in flight.

use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::{Offset, error::KafkaError};
use tracing::debug;

use super::{StreamsError, client_config};
use crate::client_log::LoggingContext;
use crate::config::StreamsConfig;

/// Kafka Streams' default `repartition.purge.interval.ms`.
pub(crate) const PURGE_INTERVAL: Duration = Duration::from_secs(30);

pub(crate) struct RepartitionPurge {
    admin: AdminClient<LoggingContext>,
    topic: String,
    last: Instant,
}

impl RepartitionPurge {
    pub(crate) fn new(config: &StreamsConfig) -> Result<Self, StreamsError> {
        let admin = client_config(config)
            .create_with_context(LoggingContext::new("repartition purge"))
            .map_err(|e| StreamsError::kafka("creating an admin client", e))?;
        Ok(Self {
            admin,
            topic: config.repartition_topic(),
            last: Instant::now(),
        })
    }

    /// After a commit: deletes what every `(partition, committed position)` of the repartition
    /// topic has behind it, if the interval has passed. Best effort: a failure is retried at
    /// the next interval (the records are only kept longer).
    pub(crate) fn after_commit<'a>(
        &mut self,
        positions: impl Iterator<Item = (i32, &'a str, i64)>,
    ) {
        if self.last.elapsed() < PURGE_INTERVAL {
            return;
        }
        self.last = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for (partition, topic, position) in positions {
            if topic == self.topic {
                let _ = offsets.add_partition_offset(topic, partition, Offset::Offset(position));
            }
        }
        if offsets.count() == 0 {
            return;
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
        let result: Result<TopicPartitionList, KafkaError> =
            futures::executor::block_on(self.admin.delete_records(&offsets, &options));
        match result {
            Ok(_) => debug!(partitions = offsets.count(), "repartition topic purged"),
            Err(error) => debug!(%error, "purging the repartition topic failed; retried later"),
        }
    }
}
