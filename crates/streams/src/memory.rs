//! The in-process transport: topics, partitions, offsets and keys in memory, with the same
//! contract the Kafka transport gives a processor — a task per partition number, per-key
//! order, outputs and state changes visible together at each commit or not at all.
//!
//! It runs the very [`StreamTask`]s the Kafka transport runs, so a processor tested here
//! behaves the same on Kafka, and the all-in-one embedded mode needs no broker. It is not a
//! broker: nothing survives the process, and a single [`InMemoryStreams`] owns every
//! partition of its inputs (no group, no rebalancing).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::dlq_headers;
use crate::processor::{Collector, Processor, Record, TaskId};
use crate::store::{KeyValueStore, StateDir, StoreError};
use crate::task::{Outcome, StreamTask};

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Topics {
    partitions: HashMap<String, Vec<Vec<StoredRecord>>>,
}

/// Topics in memory, shared by producers and [`InMemoryStreams`] instances of one process.
#[derive(Default)]
pub struct InMemoryBroker {
    topics: Mutex<Topics>,
    /// Signalled on every append, so idle readers wake up instead of polling.
    appended: Condvar,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("topic {0:?} does not exist: create it first (InMemoryBroker::create_topic)")]
    UnknownTopic(String),
    #[error("topic {topic:?} has {partitions} partitions, not {asked}")]
    UnknownPartition {
        topic: String,
        partitions: usize,
        asked: i32,
    },
}

impl InMemoryBroker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn topics(&self) -> MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates `name` with `partitions` partitions; an existing topic is left as it is.
    pub fn create_topic(&self, name: &str, partitions: usize) {
        self.topics()
            .partitions
            .entry(name.to_owned())
            .or_insert_with(|| vec![Vec::new(); partitions.max(1)]);
    }

    pub fn partition_count(&self, topic: &str) -> Result<usize, MemoryError> {
        self.topics()
            .partitions
            .get(topic)
            .map(Vec::len)
            .ok_or_else(|| MemoryError::UnknownTopic(topic.to_owned()))
    }

    /// The partition a key goes to: the same key always lands in the same partition.
    fn partition_for(key: Option<&[u8]>, partitions: usize, fallback: usize) -> usize {
        match key {
            Some(key) => {
                let mut hasher = DefaultHasher::new();
                key.hash(&mut hasher);
                (hasher.finish() % partitions as u64) as usize
            }
            None => fallback % partitions,
        }
    }

    /// Appends records to `topic` atomically (all visible together); returns each one's
    /// `(partition, offset)`.
    pub fn produce(
        &self,
        topic: &str,
        records: Vec<StoredRecord>,
    ) -> Result<Vec<(i32, i64)>, MemoryError> {
        let mut topics = self.topics();
        let partitions = topics
            .partitions
            .get_mut(topic)
            .ok_or_else(|| MemoryError::UnknownTopic(topic.to_owned()))?;
        let count = partitions.len();
        let mut positions = Vec::with_capacity(records.len());
        for (i, record) in records.into_iter().enumerate() {
            let partition = Self::partition_for(record.key.as_deref(), count, i);
            let log = &mut partitions[partition];
            positions.push((partition as i32, log.len() as i64));
            log.push(record);
        }
        drop(topics);
        self.appended.notify_all();
        Ok(positions)
    }

    /// Up to `max` records of `topic`/`partition` from `offset` on.
    pub fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max: usize,
    ) -> Result<Vec<StoredRecord>, MemoryError> {
        let topics = self.topics();
        let partitions = topics
            .partitions
            .get(topic)
            .ok_or_else(|| MemoryError::UnknownTopic(topic.to_owned()))?;
        let log = usize::try_from(partition)
            .ok()
            .and_then(|p| partitions.get(p))
            .ok_or_else(|| MemoryError::UnknownPartition {
                topic: topic.to_owned(),
                partitions: partitions.len(),
                asked: partition,
            })?;
        let start = usize::try_from(offset).unwrap_or(0).min(log.len());
        Ok(log[start..(start + max).min(log.len())].to_vec())
    }

    /// Waits until something is appended anywhere, or `timeout` passes.
    pub fn wait_for_append(&self, timeout: Duration) {
        let topics = self.topics();
        let _ = self.appended.wait_timeout(topics, timeout);
    }
}

/// Outputs of a batch, held back until it commits.
#[derive(Default)]
struct PendingOutputs {
    by_topic: BTreeMap<String, Vec<StoredRecord>>,
}

impl Collector for PendingOutputs {
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        self.by_topic
            .entry(topic.to_owned())
            .or_default()
            .push(StoredRecord {
                key: key.map(<[u8]>::to_vec),
                value: value.to_vec(),
                timestamp,
                headers: Vec::new(),
            });
    }
}

/// Records read per partition per turn.
const BATCH: usize = 1024;

/// A streams application over an [`InMemoryBroker`]: every partition of `source_topics`, one
/// task per partition number, commit after each turn.
pub struct InMemoryStreams<P: Processor> {
    broker: Arc<InMemoryBroker>,
    application_id: String,
    source_topics: Vec<String>,
    dead_letter_topic: String,
    tasks: BTreeMap<TaskId, StreamTask<P>>,
    /// Next offset per (topic, partition): what has been committed.
    offsets: HashMap<(String, i32), i64>,
}

impl<P: Processor> InMemoryStreams<P> {
    /// Tasks for every partition of the (co-partitioned) `source_topics`, with stores in
    /// `state` (sled) or in memory when `state` is `None`.
    pub fn new(
        broker: Arc<InMemoryBroker>,
        application_id: &str,
        source_topics: &[&str],
        store_name: &str,
        state: Option<&StateDir>,
        factory: impl Fn(TaskId) -> P,
    ) -> Result<Self, StoreError> {
        let partitions = source_topics
            .iter()
            .filter_map(|t| broker.partition_count(t).ok())
            .max()
            .unwrap_or(1);
        let dead_letter_topic = format!("{application_id}.dlq");
        broker.create_topic(&dead_letter_topic, partitions);
        let mut tasks = BTreeMap::new();
        for partition in 0..partitions as i32 {
            let id = TaskId(partition);
            let store = match state {
                Some(state) => KeyValueStore::persistent(state.task_tree(store_name, partition)?),
                None => KeyValueStore::in_memory(store_name),
            };
            tasks.insert(id, StreamTask::new(id, factory(id), store));
        }
        Ok(Self {
            broker,
            application_id: application_id.to_owned(),
            source_topics: source_topics.iter().map(|t| (*t).to_owned()).collect(),
            dead_letter_topic,
            tasks,
            offsets: HashMap::new(),
        })
    }

    /// Where rejected records go: `<application_id>.dlq`.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// Processes what is available (up to a batch per partition) and commits it: outputs and
    /// dead letters become visible and state changes are applied together. Returns how many
    /// input records were processed.
    pub fn run_once(&mut self) -> Result<usize, StoreError> {
        let mut outputs = PendingOutputs::default();
        let mut processed = 0;
        for task in self.tasks.values_mut() {
            let partition = task.id().0;
            for topic in &self.source_topics {
                let offset = self
                    .offsets
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or(0);
                let Ok(records) = self.broker.read(topic, partition, offset, BATCH) else {
                    continue;
                };
                for (i, stored) in records.iter().enumerate() {
                    let record = Record {
                        topic,
                        partition,
                        offset: offset + i as i64,
                        timestamp: stored.timestamp,
                        key: stored.key.as_deref(),
                        value: Some(&stored.value),
                    };
                    if let Outcome::Rejected(rejection) = task.process(&record, &mut outputs)? {
                        outputs
                            .by_topic
                            .entry(self.dead_letter_topic.clone())
                            .or_default()
                            .push(StoredRecord {
                                key: stored.key.clone(),
                                value: stored.value.clone(),
                                timestamp: stored.timestamp,
                                headers: dlq_headers::for_rejection(
                                    &record,
                                    &rejection,
                                    &self.application_id,
                                )
                                .map(|(name, value)| (name.to_owned(), value))
                                .to_vec(),
                            });
                    }
                }
                processed += records.len();
            }
        }
        // Commit: state first (it only ever holds what the outputs reflect), then outputs,
        // then positions.
        for task in self.tasks.values_mut() {
            let changes = task.store().dirty_changes();
            task.store_mut().commit(&changes, None)?;
            task.committed();
            for (topic, position) in task.positions() {
                self.offsets.insert((topic.clone(), task.id().0), *position);
            }
        }
        for (topic, records) in outputs.by_topic {
            self.broker.create_topic(&topic, self.tasks.len());
            // The topic was just created if missing, so producing cannot fail.
            let _ = self.broker.produce(&topic, records);
        }
        Ok(processed)
    }

    /// Runs until `shutdown` is set, sleeping on the broker while there is nothing to do.
    pub fn run(&mut self, shutdown: &AtomicBool) -> Result<(), StoreError> {
        while !shutdown.load(Ordering::Relaxed) {
            if self.run_once()? == 0 {
                self.broker.wait_for_append(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::CountingProcessor;

    fn record(key: Option<&str>, value: &str) -> StoredRecord {
        StoredRecord {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.into(),
            timestamp: Some(1),
            headers: vec![],
        }
    }

    #[test]
    fn the_same_processor_runs_per_partition_with_per_key_order_and_dead_letters() {
        let broker = InMemoryBroker::new();
        broker.create_topic("words", 3);
        let keys = ["a", "b", "c", "d", "e"];
        let inputs: Vec<_> = (0..50).map(|i| record(Some(keys[i % 5]), "x")).collect();
        broker.produce("words", inputs).expect("topic exists");
        broker
            .produce("words", vec![record(None, "keyless")])
            .expect("topic exists");

        let mut streams = InMemoryStreams::new(
            Arc::clone(&broker),
            "app",
            &["words"],
            "counts",
            None,
            |_| CountingProcessor::new("counts"),
        )
        .expect("in-memory stores");
        assert_eq!(streams.run_once().expect("run"), 51);
        assert_eq!(
            streams.run_once().expect("run"),
            0,
            "committed records are not read again"
        );

        let mut last_count: HashMap<Vec<u8>, u64> = HashMap::new();
        for partition in 0..3 {
            for out in broker
                .read("counts", partition, 0, usize::MAX)
                .expect("counts")
            {
                let text = String::from_utf8_lossy(&out.value).into_owned();
                let count: u64 = text
                    .rsplit_once('@')
                    .and_then(|(_, count)| count.parse().ok())
                    .expect("value@count");
                let previous = last_count
                    .insert(out.key.clone().expect("keyed"), count)
                    .unwrap_or(0);
                assert_eq!(
                    count,
                    previous + 1,
                    "counts per key arrive in order, each once"
                );
            }
        }
        assert!(last_count.values().all(|&c| c == 10), "{last_count:?}");

        let dead: Vec<_> = (0..3)
            .flat_map(|p| broker.read("app.dlq", p, 0, 10).expect("dlq"))
            .collect();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].value, b"keyless");
        assert!(
            dead[0]
                .headers
                .contains(&(dlq_headers::ERROR_CODE.to_owned(), "missing_key".to_owned()))
        );
    }

    #[test]
    fn reading_an_unknown_topic_says_how_to_fix_it() {
        let broker = InMemoryBroker::new();
        let error = broker.read("nope", 0, 0, 1).expect_err("no such topic");
        assert!(error.to_string().contains("create it first"), "{error}");
    }
}
