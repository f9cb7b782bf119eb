//! What the in-process transport stores and answers: records, capacities, polls, errors.

use crate::store::StoreError;

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, String)>,
}

impl StoredRecord {
    /// This record as a dead letter: key, value and timestamp unchanged, its own headers
    /// first, then the `reason` headers ([`crate::dlq_headers`]), as on Kafka.
    pub fn dead_letter(
        &self,
        reason: impl IntoIterator<Item = (&'static str, String)>,
    ) -> StoredRecord {
        let mut letter = self.clone();
        letter.headers.extend(
            reason
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        );
        letter
    }

    /// What the record costs the transport's byte cap: key, value and headers.
    pub(super) fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// How much one topic may retain (records some subscribed group has not committed yet) before
/// producers wait. A produce is admitted while the topic is below both limits, so a topic holds
/// at most the cap plus one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicCapacity {
    pub records: usize,
    pub bytes: usize,
}

impl TopicCapacity {
    /// 4,096 records or 4 MiB per topic: 0.2 s of 20,000 ticks/s, four of the in-process
    /// enrich's polls, about 1.5 MB of heap when full. Small on purpose: a consumer that stalls
    /// (a loaded machine) lets every topic fill to its cap, and what it then held stays
    /// resident (the allocator keeps freed memory); at 16,384 records that step was 10-15 MB,
    /// over a quarter of `run`'s whole footprint (`BENCHMARKS.md`, `run_memory`).
    pub const DEFAULT: Self = Self {
        records: 4_096,
        bytes: 4 << 20,
    };
}

impl Default for TopicCapacity {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a topic retains now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicUsage {
    pub records: usize,
    pub bytes: usize,
}

/// Records one poll returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The offset of `records[0]`: the group's position before the poll.
    pub first_offset: i64,
    pub records: Vec<StoredRecord>,
    /// The topic is closed and the group has now read all of this partition: nothing more
    /// will ever come.
    pub end_of_partition: bool,
}

impl Fetched {
    /// The group's position after this poll: what to commit once the records are processed.
    pub fn next_offset(&self) -> i64 {
        self.first_offset + self.records.len() as i64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("topic {0:?} does not exist: create it first (InMemoryBroker::create_topic)")]
    UnknownTopic(String),
    #[error("topic {topic:?} has {partitions} partitions, not {asked}")]
    UnknownPartition {
        topic: String,
        partitions: usize,
        asked: i32,
    },
    #[error("group {group:?} does not read topic {topic:?}: subscribe it first")]
    NotSubscribed { group: String, topic: String },
    #[error("topic {0:?} is closed (its producer said it ended): nothing more can be produced")]
    Closed(String),
    #[error(
        "topic {0:?} has no reader left (its last reader stopped, see its error): nothing \
         produced to it would be read"
    )]
    Abandoned(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
