//! The in-process transport: topics, partitions, offsets and keys in memory, with the contract
//! the Kafka transport gives a processor — produce, then per **reader group** poll and commit —
//! so the same processing loops can run on either.
//!
//! Its contract, before its API:
//!
//! * **Bounded.** A record is kept until every group subscribed to its topic has committed past
//!   it, then released. Each topic holds at most [`TopicCapacity`] of retained records (a
//!   produce that finds the topic at its cap waits for readers to commit: back-pressure on the
//!   producer, never growth). A topic nobody subscribed to keeps its records up to the cap, so
//!   subscribe the readers before producing.
//! * **Per-key order.** A keyed record goes to the partition Kafka's default partitioner gives
//!   its key ([`crate::partitioner`]); a batch is appended atomically.
//! * **End of stream.** A producer [`InMemoryBroker::close`]s its topic when it will produce
//!   nothing more (a replay file ended, the pipeline stops); a group that has read everything of
//!   a closed topic's partition is told so ([`Fetched::end_of_partition`]), which is how each
//!   stage learns that its input is complete. Kafka has no such end; a live source never closes.
//! * **Not a broker**: nothing survives the process; a group that leaves
//!   ([`InMemoryBroker::leave`]) stops holding records back.
//!
//! [`InMemoryStreams`] runs the very stream tasks the Kafka transport runs over it.

mod record;
mod streams;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::partitioner::partition_for;

pub use record::{Fetched, MemoryError, StoredRecord, TopicCapacity, TopicUsage};
pub use streams::InMemoryStreams;

/// One partition's retained records: offsets `base..base + records.len()`.
#[derive(Default)]
struct PartitionLog {
    base: i64,
    records: VecDeque<StoredRecord>,
}

impl PartitionLog {
    fn end(&self) -> i64 {
        self.base + self.records.len() as i64
    }
}

/// A group's place in one partition.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Next offset to hand out by `poll`.
    position: i64,
    /// Everything below it is processed: released once every group is past it.
    committed: i64,
}

struct TopicLog {
    partitions: Vec<PartitionLog>,
    groups: BTreeMap<String, Vec<Cursor>>,
    usage: TopicUsage,
    closed: bool,
    /// Its last reader group left: what it holds is dropped and nothing more is taken (a
    /// producer would otherwise wait for room for ever).
    abandoned: bool,
}

/// `group`'s cursor on partition `index` of `topic` (checked by [`TopicLog::partition`]); the
/// groups map is passed alone so the caller may read the partition's records meanwhile.
fn cursor<'a>(
    groups: &'a mut BTreeMap<String, Vec<Cursor>>,
    group: &str,
    topic: &str,
    index: usize,
) -> Result<&'a mut Cursor, MemoryError> {
    groups
        .get_mut(group)
        .map(|cursors| &mut cursors[index])
        .ok_or_else(|| MemoryError::NotSubscribed {
            group: group.to_owned(),
            topic: topic.to_owned(),
        })
}

impl TopicLog {
    fn partition(&self, topic: &str, partition: i32) -> Result<usize, MemoryError> {
        usize::try_from(partition)
            .ok()
            .filter(|p| *p < self.partitions.len())
            .ok_or_else(|| MemoryError::UnknownPartition {
                topic: topic.to_owned(),
                partitions: self.partitions.len(),
                asked: partition,
            })
    }

    /// Drops the records of `partition` every group has committed; whether any went.
    fn release(&mut self, partition: usize) -> bool {
        let Some(oldest) = self.groups.values().map(|c| c[partition].committed).min() else {
            return false;
        };
        let log = &mut self.partitions[partition];
        let mut released = false;
        while log.base < oldest {
            let Some(record) = log.records.pop_front() else {
                break;
            };
            log.base += 1;
            self.usage.records -= 1;
            self.usage.bytes -= record.size();
            released = true;
        }
        released
    }
}

#[derive(Default)]
struct Topics {
    by_name: HashMap<String, TopicLog>,
    /// Bumped on every append and close, so a reader can wait for "anything new since".
    generation: u64,
}

impl Topics {
    fn get(&mut self, topic: &str) -> Result<&mut TopicLog, MemoryError> {
        self.by_name
            .get_mut(topic)
            .ok_or_else(|| MemoryError::UnknownTopic(topic.to_owned()))
    }
}

/// Topics in memory, shared by the producers and reader groups of one process.
pub struct InMemoryBroker {
    topics: Mutex<Topics>,
    capacity: TopicCapacity,
    /// Signalled on appends, releases and closes: wakes idle readers and blocked producers.
    changed: Condvar,
    /// The same for producers waiting asynchronously.
    room: tokio::sync::Notify,
    /// Signalled on appends and closes: wakes readers waiting asynchronously.
    arrived: tokio::sync::Notify,
}

impl InMemoryBroker {
    /// A broker with [`TopicCapacity::DEFAULT`].
    pub fn new() -> Arc<Self> {
        Self::with_capacity(TopicCapacity::DEFAULT)
    }

    pub fn with_capacity(capacity: TopicCapacity) -> Arc<Self> {
        Arc::new(Self {
            topics: Mutex::default(),
            capacity,
            changed: Condvar::new(),
            room: tokio::sync::Notify::new(),
            arrived: tokio::sync::Notify::new(),
        })
    }

    fn topics(&self) -> MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed.notify_all();
        self.room.notify_waiters();
        self.arrived.notify_waiters();
    }

    /// Creates `name` with `partitions` partitions; an existing topic is left as it is.
    pub fn create_topic(&self, name: &str, partitions: usize) {
        self.topics()
            .by_name
            .entry(name.to_owned())
            .or_insert_with(|| TopicLog {
                partitions: (0..partitions.max(1))
                    .map(|_| PartitionLog::default())
                    .collect(),
                groups: BTreeMap::new(),
                usage: TopicUsage::default(),
                closed: false,
                abandoned: false,
            });
    }

    pub fn partition_count(&self, topic: &str) -> Result<usize, MemoryError> {
        Ok(self.topics().get(topic)?.partitions.len())
    }

    /// What `topic` retains now (bounded by the capacity plus one batch).
    pub fn usage(&self, topic: &str) -> Result<TopicUsage, MemoryError> {
        Ok(self.topics().get(topic)?.usage)
    }

    /// Makes `group` a reader of `topic`, from the earliest retained record of each partition;
    /// from now on `topic` keeps every record until `group` commits past it. Subscribing twice
    /// changes nothing.
    pub fn subscribe(&self, group: &str, topic: &str) -> Result<(), MemoryError> {
        let mut topics = self.topics();
        let log = topics.get(topic)?;
        let cursors = log
            .partitions
            .iter()
            .map(|p| Cursor {
                position: p.base,
                committed: p.base,
            })
            .collect();
        log.groups.entry(group.to_owned()).or_insert(cursors);
        Ok(())
    }

    /// `group` stops reading every topic: what it held back is released.
    pub fn leave(&self, group: &str) {
        let mut topics = self.topics();
        for log in topics.by_name.values_mut() {
            if log.groups.remove(group).is_some() {
                if log.groups.is_empty() {
                    log.abandoned = true;
                    for partition in &mut log.partitions {
                        partition.base = partition.end();
                        partition.records.clear();
                    }
                    log.usage = TopicUsage::default();
                }
                for partition in 0..log.partitions.len() {
                    log.release(partition);
                }
            }
        }
        drop(topics);
        self.notify();
    }

    /// Appends `records` if `topic` has room (taking them out of `records`); `None`: full.
    fn try_append(
        &self,
        topic: &str,
        records: &mut Vec<StoredRecord>,
    ) -> Result<Option<Vec<(i32, i64)>>, MemoryError> {
        let mut topics = self.topics();
        let log = topics.get(topic)?;
        if log.closed {
            return Err(MemoryError::Closed(topic.to_owned()));
        }
        if log.abandoned {
            return Err(MemoryError::Abandoned(topic.to_owned()));
        }
        if log.usage.records >= self.capacity.records || log.usage.bytes >= self.capacity.bytes {
            return Ok(None);
        }
        let count = log.partitions.len();
        let mut positions = Vec::with_capacity(records.len());
        for (i, record) in std::mem::take(records).into_iter().enumerate() {
            let partition = match record.key.as_deref() {
                Some(key) => partition_for(key, count as i32) as usize,
                None => i % count,
            };
            log.usage.records += 1;
            log.usage.bytes += record.size();
            let partition_log = &mut log.partitions[partition];
            positions.push((partition as i32, partition_log.end()));
            partition_log.records.push_back(record);
        }
        topics.generation += 1;
        drop(topics);
        self.changed.notify_all();
        self.arrived.notify_waiters();
        Ok(Some(positions))
    }

    /// Appends records to `topic` atomically (all visible together), waiting while the topic
    /// is at its capacity; returns each one's `(partition, offset)`.
    pub fn produce(
        &self,
        topic: &str,
        mut records: Vec<StoredRecord>,
    ) -> Result<Vec<(i32, i64)>, MemoryError> {
        loop {
            if let Some(positions) = self.try_append(topic, &mut records)? {
                return Ok(positions);
            }
            let topics = self.topics();
            let full = topics.by_name.get(topic).is_some_and(|log| {
                !log.closed
                    && (log.usage.records >= self.capacity.records
                        || log.usage.bytes >= self.capacity.bytes)
            });
            if full {
                // Bounded so that a missed wake-up costs a moment, not a hang.
                let _ = self
                    .changed
                    .wait_timeout(topics, Duration::from_millis(100));
            }
        }
    }

    /// [`Self::produce`] for async producers: waits for room without blocking a thread.
    pub async fn produce_async(
        &self,
        topic: &str,
        mut records: Vec<StoredRecord>,
    ) -> Result<Vec<(i32, i64)>, MemoryError> {
        loop {
            // Registered before looking, so a release in between is not missed.
            let mut room = std::pin::pin!(self.room.notified());
            room.as_mut().enable();
            if let Some(positions) = self.try_append(topic, &mut records)? {
                return Ok(positions);
            }
            room.await;
        }
    }

    /// Says `topic` will get no more records: readers that read it all see the end.
    pub fn close(&self, topic: &str) {
        let mut topics = self.topics();
        if let Some(log) = topics.by_name.get_mut(topic) {
            log.closed = true;
        }
        topics.generation += 1;
        drop(topics);
        self.notify();
    }

    /// Up to `max` records of `topic`/`partition` from `group`'s position on; the position
    /// moves past them (they still count as unprocessed until [`Self::commit`]).
    pub fn poll(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        max: usize,
    ) -> Result<Fetched, MemoryError> {
        let mut topics = self.topics();
        let log = topics.get(topic)?;
        let index = log.partition(topic, partition)?;
        let closed = log.closed;
        let cursor = cursor(&mut log.groups, group, topic, index)?;
        let partition_log = &log.partitions[index];
        let first_offset = cursor.position.max(partition_log.base);
        let start = (first_offset - partition_log.base) as usize;
        let end = start.saturating_add(max).min(partition_log.records.len());
        let records: Vec<StoredRecord> = partition_log.records.range(start..end).cloned().collect();
        cursor.position = first_offset + records.len() as i64;
        Ok(Fetched {
            first_offset,
            end_of_partition: closed && cursor.position == partition_log.end(),
            records,
        })
    }

    /// `group` has processed `topic`/`partition` below `next_offset`: records every group has
    /// committed are released, and producers waiting for room go on.
    pub fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        next_offset: i64,
    ) -> Result<(), MemoryError> {
        let mut topics = self.topics();
        let log = topics.get(topic)?;
        let index = log.partition(topic, partition)?;
        let end = log.partitions[index].end();
        let cursor = cursor(&mut log.groups, group, topic, index)?;
        cursor.committed = cursor.committed.max(next_offset.min(end));
        let released = log.release(index);
        drop(topics);
        if released {
            self.notify();
        }
        Ok(())
    }

    /// Up to `max` retained records of `topic`/`partition` from `offset` on, outside any group
    /// (inspection and tests): released records are gone, so it starts at the earliest retained.
    pub fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max: usize,
    ) -> Result<Vec<StoredRecord>, MemoryError> {
        let mut topics = self.topics();
        let log = topics.get(topic)?;
        let partition_log = &log.partitions[log.partition(topic, partition)?];
        let start = (offset.max(partition_log.base) - partition_log.base) as usize;
        let start = start.min(partition_log.records.len());
        let end = start.saturating_add(max).min(partition_log.records.len());
        Ok(partition_log.records.range(start..end).cloned().collect())
    }

    /// A token for [`Self::wait_for_change`]: "what I have looked at".
    pub fn generation(&self) -> u64 {
        self.topics().generation
    }

    /// [`Self::wait_for_change`] for async readers, without blocking a thread: completes once
    /// something was appended or closed after `seen` (bound it with `tokio::time::timeout`).
    pub async fn changed_since(&self, seen: u64) {
        loop {
            // Registered before looking, so an append in between is not missed.
            let mut arrived = std::pin::pin!(self.arrived.notified());
            arrived.as_mut().enable();
            if self.generation() != seen {
                return;
            }
            arrived.await;
        }
    }

    /// Waits until something was appended or closed after `seen` ([`Self::generation`]), or
    /// `timeout` passes.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) {
        let topics = self.topics();
        let _ = self
            .changed
            .wait_timeout_while(topics, timeout, |t| t.generation == seen);
    }
}

#[cfg(test)]
mod tests;
