//! A streams application over the in-process transport: the same tasks as on Kafka, handled
//! the same way ([`Tasks`]: process through them, `prepare_commit` → make the batch durable →
//! `post_commit`), one per partition number, reading as the reader group `application_id` and
//! committing state, outputs and input offsets together every commit interval — by the same
//! loop as on Kafka (`crate::stream_loop`), over this transport:
//!
//! - **poll → process**: every task's inputs are polled once (up to `BATCH` records per
//!   partition) and what came is processed, its outputs held back in `PendingOutputs`; with
//!   nothing there, the poll waits for the broker to change ([`InMemoryBroker::wait_for_change`],
//!   at most `IDLE_WAIT`, so a stop request is seen);
//! - **end of input**: once every input partition is closed and read to its end;
//! - **commit**: state, then the outputs (waiting for room downstream: back-pressure), then
//!   the input positions, which releases the inputs. Nothing is aborted here: a failure is an
//!   error of the whole run (its state dir is the run's own).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{InMemoryBroker, MemoryError, StoredRecord};
use crate::config::StreamsConfig;
use crate::dlq_headers;
use crate::metrics::Health;
use crate::processor::{Collector, Processor, Record, TaskId};
use crate::shutdown::Shutdown;
use crate::store::{KeyValueStore, StateDir};
use crate::stream_loop::{Polled, StreamLoop, StreamsTransport};
use crate::task::{Outcome, Tasks};

/// Outputs of the records processed since the last commit, held back until it.
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

/// What ends an in-process application, however it ends: its outputs are closed (their
/// readers see the end) and it leaves its group (producers upstream stop waiting for it).
struct CloseAndLeave {
    broker: Arc<InMemoryBroker>,
    outputs: Vec<String>,
    group: String,
}

impl Drop for CloseAndLeave {
    fn drop(&mut self) {
        for topic in &self.outputs {
            self.broker.close(topic);
        }
        self.broker.leave(&self.group);
    }
}

/// Records polled per partition per turn.
const BATCH: usize = 1024;
/// The longest an idle loop sleeps before looking at its stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// A streams application over an [`InMemoryBroker`]: every partition of `source_topics`, one
/// task per partition number. Repartitioning does not apply: in-process producers key every
/// record, so a key's records already share a partition.
pub struct InMemoryStreams<P: Processor> {
    broker: Arc<InMemoryBroker>,
    /// Its `application_id` is the reader group, as on Kafka; `output_topics` and the
    /// dead-letter topic are closed when this application finishes, so their readers see the
    /// end of their input; the loop takes the commit interval and max uncommitted records.
    config: StreamsConfig,
    /// The loop's heartbeat: nobody serves it in process, but the loop is the same.
    health: Arc<Health>,
    tasks: Tasks<P>,
    pending: PendingOutputs,
    /// `(topic, partition)`s read to the end of their closed topic.
    ended: BTreeSet<(String, i32)>,
}

impl<P: Processor> InMemoryStreams<P> {
    /// Tasks for every partition of `config.source_topics` (created with `config.partitions`,
    /// else 1, when missing), stores in `state` (sled) or in memory when `state` is `None`.
    /// Subscribes to the sources now, so nothing produced from here on is released unread, and
    /// creates the output and dead-letter topics so their readers can subscribe before it runs.
    pub fn new(
        broker: Arc<InMemoryBroker>,
        config: &StreamsConfig,
        state: Option<&StateDir>,
        factory: impl Fn(TaskId) -> P,
    ) -> Result<Self, MemoryError> {
        let wanted = config
            .partitions
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(1);
        let mut partitions = 1;
        for topic in &config.source_topics {
            broker.create_topic(topic, wanted);
            broker.subscribe(&config.application_id, topic)?;
            partitions = partitions.max(broker.partition_count(topic)?);
        }
        for topic in config
            .output_topics
            .iter()
            .chain([&config.dead_letter_topic])
        {
            broker.create_topic(topic, partitions);
        }
        let mut tasks = Tasks::default();
        for partition in 0..partitions as i32 {
            let id = TaskId(partition);
            let store = match state {
                Some(state) => {
                    KeyValueStore::persistent(state.task_tree(&config.store_name, partition)?)
                }
                None => KeyValueStore::in_memory(&config.store_name),
            };
            tasks.create(id, factory(id), store);
        }
        Ok(Self {
            broker,
            config: config.clone(),
            health: Arc::default(),
            tasks,
            pending: PendingOutputs::default(),
            ended: BTreeSet::new(),
        })
    }

    /// Where rejected records go: the configuration's `dead_letter_topic`.
    pub fn dead_letter_topic(&self) -> &str {
        &self.config.dead_letter_topic
    }

    /// Processes what is available (up to a batch per partition) and commits it: outputs and
    /// dead letters become visible, state changes are applied and the inputs released, together.
    /// Returns how many input records were processed.
    pub fn run_once(&mut self) -> Result<usize, MemoryError> {
        let processed = self.process_available()?;
        self.commit()?;
        Ok(processed)
    }

    /// Runs until every input is closed and processed, or `stop` is set; commits what was
    /// processed either way, then closes the output and dead-letter topics (so downstream
    /// readers see their end) and leaves the group — also after an error, so that neither
    /// producers upstream nor readers downstream wait for it.
    pub fn run(&mut self, stop: &Shutdown) -> Result<(), MemoryError> {
        // On drop, so that a panic in a processor ends the readers downstream too.
        let _finish = CloseAndLeave {
            broker: Arc::clone(&self.broker),
            outputs: self
                .config
                .output_topics
                .iter()
                .chain([&self.config.dead_letter_topic])
                .cloned()
                .collect(),
            group: self.config.application_id.clone(),
        };
        let health = Arc::clone(&self.health);
        StreamLoop::new(&self.config, stop, &health)
            .run(self)
            .map(drop)
    }

    fn inputs_ended(&self) -> bool {
        self.ended.len() == self.tasks.len() * self.config.source_topics.len()
    }

    /// Polls every task's inputs once and processes what came; outputs wait in `pending`.
    fn process_available(&mut self) -> Result<usize, MemoryError> {
        let mut processed = 0;
        for task in self.tasks.iter_mut() {
            let partition = task.id().0;
            for topic in &self.config.source_topics {
                if self.ended.contains(&(topic.clone(), partition)) {
                    continue;
                }
                let fetched =
                    self.broker
                        .poll(&self.config.application_id, topic, partition, BATCH)?;
                if fetched.end_of_partition {
                    self.ended.insert((topic.clone(), partition));
                }
                for (i, stored) in fetched.records.iter().enumerate() {
                    let offset = fetched.first_offset + i as i64;
                    let record = Record::from_stored(topic, partition, offset, stored);
                    if let Outcome::Rejected(rejection) =
                        task.process(&record, &mut self.pending)?
                    {
                        let headers = dlq_headers::for_rejection(
                            &record,
                            &rejection,
                            &self.config.application_id,
                        );
                        self.pending
                            .by_topic
                            .entry(self.config.dead_letter_topic.clone())
                            .or_default()
                            .push(stored.dead_letter(headers));
                    }
                }
                processed += fetched.records.len();
            }
        }
        Ok(processed)
    }

    /// State first (it only ever holds what the outputs reflect), then outputs (waiting for
    /// room downstream: back-pressure), then input positions, which releases the inputs.
    fn commit(&mut self) -> Result<(), MemoryError> {
        let staged = self.tasks.prepare_commit();
        // No changelog here: sled's checkpoint stays unset (the state dir is the only copy).
        self.tasks.post_commit(&staged, &HashMap::new())?;
        for (topic, records) in std::mem::take(&mut self.pending.by_topic) {
            self.broker.create_topic(&topic, self.tasks.len());
            self.broker.produce(&topic, records)?;
        }
        for (topic, partition, position) in self.tasks.positions() {
            self.broker
                .commit(&self.config.application_id, topic, partition, position)?;
        }
        Ok(())
    }
}

impl<P: Processor> StreamsTransport for InMemoryStreams<P> {
    type Error = MemoryError;

    fn poll(&mut self, max_wait: Duration) -> Result<Polled, MemoryError> {
        // Looked at before polling, so a record produced after the poll is not waited past.
        let seen = self.broker.generation();
        let records = self.process_available()?;
        let ended = self.inputs_ended();
        if records == 0 && !ended {
            self.broker.wait_for_change(seen, max_wait.min(IDLE_WAIT));
        }
        Ok(Polled { records, ended })
    }

    fn punctuate(&mut self, now_ms: i64) -> Result<(), MemoryError> {
        self.tasks
            .punctuate_wall_clock(now_ms, &mut self.pending)
            .map_err(Into::into)
    }

    fn end_of_input(&mut self) -> Result<(), MemoryError> {
        self.tasks
            .end_of_input(&mut self.pending)
            .map_err(Into::into)
    }

    fn commit(&mut self) -> Result<(), MemoryError> {
        InMemoryStreams::commit(self)
    }
}
