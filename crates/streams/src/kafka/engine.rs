//! The engine of one instance: its tasks, its (transactional) producer, and the commit path.
//!
//! The engine lives inside the consumer's context, behind a mutex, because Kafka hands
//! partition revocations and assignments to a callback that runs inside `consumer.poll`: a
//! revocation must commit and close the revoked tasks right there, before another instance
//! may take them over. The processing loop never holds the lock while it polls.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, info_span, warn};

use super::StreamsError;
use super::produce::{
    DeliveryLog, ProducerCollector, StreamsProducer, count, lock, send_with_backpressure,
};
use super::restore::{RestoreContext, restore_task};
use crate::config::{ProcessingGuarantee, StreamsConfig};
use crate::dlq_headers;
use crate::metrics::{Health, StreamsMetrics};
use crate::processor::{Processor, Record, Rejection, TaskId};
use crate::store::{Change, KeyValueStore, StateDir};
use crate::task::{Outcome, StreamTask};

/// Creates the processor of a task; called on every assignment of that task.
pub type ProcessorFactory<P> = Box<dyn Fn(TaskId) -> P + Send + Sync>;

/// How long one Kafka operation of the commit path may take before the commit counts as failed.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A commit that did not go through: abort and rewind (`Abortable`) or stop (`Fatal`).
enum CommitFailure {
    Abortable(KafkaError),
    Fatal(KafkaError),
}

fn classify(error: KafkaError) -> CommitFailure {
    let fatal = match &error {
        KafkaError::Transaction(rd) => rd.is_fatal(),
        _ => false,
    };
    if fatal {
        CommitFailure::Fatal(error)
    } else {
        CommitFailure::Abortable(error)
    }
}

pub(crate) struct Engine<P: Processor> {
    pub(crate) config: StreamsConfig,
    changelog: String,
    factory: ProcessorFactory<P>,
    state: StateDir,
    producer: StreamsProducer,
    restore_consumer: BaseConsumer<RestoreContext>,
    tasks: BTreeMap<TaskId, StreamTask<P>>,
    metrics: Arc<StreamsMetrics>,
    health: Arc<Health>,
    /// Records processed since the last commit.
    uncommitted: usize,
    last_commit: Instant,
    /// The first send failure of this batch: the batch cannot commit.
    send_failure: Option<KafkaError>,
    /// An error raised inside a rebalance callback, for the loop to return.
    pub(crate) fatal: Option<StreamsError>,
    consumed: HashMap<String, u64>,
    produced: HashMap<String, u64>,
}

impl<P: Processor> Engine<P> {
    pub(crate) fn new(
        config: StreamsConfig,
        factory: ProcessorFactory<P>,
        state: StateDir,
        producer: StreamsProducer,
        restore_consumer: BaseConsumer<RestoreContext>,
        metrics: Arc<StreamsMetrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            changelog: config.changelog_topic(),
            config,
            factory,
            state,
            producer,
            restore_consumer,
            tasks: BTreeMap::new(),
            metrics,
            health,
            uncommitted: 0,
            last_commit: Instant::now(),
            send_failure: None,
            fatal: None,
            consumed: HashMap::new(),
            produced: HashMap::new(),
        }
    }

    fn exactly_once(&self) -> bool {
        self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnce
    }

    /// Creates the task for `partition`, restoring its state from the changelog first.
    fn create_task(&mut self, partition: i32) -> Result<(), StreamsError> {
        let id = TaskId(partition);
        if self.tasks.contains_key(&id) {
            return Ok(());
        }
        // Everything logged while the task is set up (restoration included) carries its id.
        let _span =
            info_span!("task", application = %self.config.application_id, task = %id).entered();
        let tree = self.state.task_tree(&self.config.store_name, partition)?;
        restore_task(
            &self.restore_consumer,
            &tree,
            &self.changelog,
            partition,
            &self.metrics,
        )?;
        let task = StreamTask::new(id, (self.factory)(id), KeyValueStore::persistent(tree));
        self.tasks.insert(id, task);
        Ok(())
    }

    /// Runs one consumed record through its task; a rejection goes to the dead-letter topic.
    pub(crate) fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), StreamsError> {
        let id = TaskId(message.partition());
        if !self.tasks.contains_key(&id) {
            // Assignment normally creates tasks; this covers a record racing the callback.
            self.create_task(id.0)?;
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return Ok(());
        };
        let record = Record {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key(),
            value: message.payload(),
        };
        let mut collector = ProducerCollector {
            producer: &self.producer,
            failure: &mut self.send_failure,
            produced: &mut self.produced,
        };
        let outcome = task.process(&record, &mut collector)?;
        if let Outcome::Rejected(rejection) = outcome {
            self.send_dead_letter(&record, &rejection);
        }
        count(&mut self.consumed, record.topic, 1);
        self.uncommitted += 1;
        if self.uncommitted.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO); // serve delivery reports as we go
        }
        Ok(())
    }

    fn send_dead_letter(&mut self, record: &Record<'_>, rejection: &Rejection) {
        let mut headers = OwnedHeaders::new();
        for (key, value) in
            dlq_headers::for_rejection(record, rejection, &self.config.application_id)
        {
            headers = headers.insert(Header {
                key,
                value: Some(&value),
            });
        }
        let mut dead =
            BaseRecord::<[u8], [u8]>::to(&self.config.dead_letter_topic).headers(headers);
        if let Some(key) = record.key {
            dead = dead.key(key);
        }
        if let Some(value) = record.value {
            dead = dead.payload(value);
        }
        if let Err(error) = send_with_backpressure(&self.producer, dead) {
            self.send_failure.get_or_insert(error);
        }
        self.metrics
            .dead_letter_records
            .with_label_values(&[record.topic, rejection.code.as_ref()])
            .inc();
        count(&mut self.produced, &self.config.dead_letter_topic, 1);
    }

    pub(crate) fn punctuate_wall_clock(&mut self, now_ms: i64) -> Result<(), StreamsError> {
        for task in self.tasks.values_mut() {
            let mut collector = ProducerCollector {
                producer: &self.producer,
                failure: &mut self.send_failure,
                produced: &mut self.produced,
            };
            task.punctuate_wall_clock(now_ms, &mut collector)?;
        }
        Ok(())
    }

    pub(crate) fn commit_due(&self) -> bool {
        self.uncommitted >= self.config.max_uncommitted_records
            || (self.last_commit.elapsed() >= self.config.commit_interval)
    }

    /// The commit path. Exactly-once:
    ///
    /// 1. every task's dirty state goes to its changelog partition (inside the transaction);
    /// 2. the producer is flushed, so every output, dead-letter and changelog record of the
    ///    batch is acknowledged (and we learn the changelog offsets);
    /// 3. the input positions join the transaction with the group's metadata (fencing zombies
    ///    of an older generation), and the transaction commits;
    /// 4. only then is local state applied to sled with its changelog checkpoint, and a new
    ///    transaction begins.
    ///
    /// If any step fails the transaction is aborted, local state rolls back to the last commit
    /// and the consumer rewinds to the last committed positions: the batch is redone, and
    /// `read_committed` readers never see the aborted attempt. At-least-once runs the same
    /// steps with a plain offset commit in 3 (outputs may then repeat after a failure).
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamsError> {
        self.last_commit = Instant::now();
        if !self
            .tasks
            .values()
            .any(StreamTask::has_uncommitted_progress)
            && self.send_failure.is_none()
        {
            return Ok(());
        }
        let started = Instant::now();
        let staged: Vec<_> = self
            .tasks
            .values()
            .map(|t| (t.id(), t.store().dirty_changes()))
            .collect();
        match self.write_and_commit(consumer, &staged) {
            Ok(changelog_end) => {
                for (id, changes) in &staged {
                    let Some(task) = self.tasks.get_mut(id) else {
                        continue;
                    };
                    let checkpoint = changelog_end.get(&id.0).map(|last| last + 1);
                    task.store_mut().commit(changes, checkpoint)?;
                    task.committed();
                }
                self.metrics.commits.inc();
                self.flush_counters();
                if self.exactly_once() {
                    self.producer
                        .begin_transaction()
                        .map_err(|e| StreamsError::kafka("beginning a transaction", e))?;
                }
            }
            Err(CommitFailure::Abortable(error)) => {
                warn!(%error, "commit failed; aborting and reprocessing from the last committed positions");
                self.abort_and_rewind(consumer)?;
            }
            Err(CommitFailure::Fatal(error)) => {
                return Err(StreamsError::kafka(
                    "committing (fatal: another instance with this transactional id took over, or the producer is fenced)",
                    error,
                ));
            }
        }
        self.uncommitted = 0;
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        // The interval runs from the end of a commit: a slow commit must not make the next one
        // due after a single record.
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Steps 1–3 of [`Self::commit`]; returns the last changelog offset written per partition.
    fn write_and_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        staged: &[(TaskId, Vec<Change>)],
    ) -> Result<HashMap<i32, i64>, CommitFailure> {
        if let Some(error) = self.send_failure.take() {
            return Err(CommitFailure::Abortable(error));
        }
        for (id, changes) in staged {
            for (key, value) in changes {
                let mut record = BaseRecord::<[u8], [u8]>::to(&self.changelog)
                    .partition(id.0)
                    .key(key);
                if let Some(value) = value {
                    record = record.payload(value);
                }
                send_with_backpressure(&self.producer, record).map_err(classify)?;
            }
            count(&mut self.produced, &self.changelog, changes.len() as u64);
        }
        self.producer.flush(OPERATION_TIMEOUT).map_err(classify)?;
        let log = std::mem::take(&mut *lock(&self.producer.context().log));
        if let Some(error) = log.first_error {
            return Err(CommitFailure::Abortable(error));
        }
        let mut offsets = TopicPartitionList::new();
        for task in self.tasks.values() {
            for (topic, position) in task.positions() {
                offsets
                    .add_partition_offset(topic, task.id().0, Offset::Offset(*position))
                    .map_err(CommitFailure::Abortable)?;
            }
        }
        if self.exactly_once() {
            let metadata = consumer
                .group_metadata()
                // Not a group member right now (left or kicked out): abort; the group decides anew.
                .ok_or(CommitFailure::Abortable(KafkaError::Rebalance(
                    RDKafkaErrorCode::State,
                )))?;
            self.producer
                .send_offsets_to_transaction(&offsets, &metadata, OPERATION_TIMEOUT)
                .map_err(classify)?;
            self.producer
                .commit_transaction(OPERATION_TIMEOUT)
                .map_err(classify)?;
        } else if offsets.count() > 0 {
            consumer
                .commit(&offsets, CommitMode::Sync)
                .map_err(CommitFailure::Abortable)?;
        }
        Ok(log.changelog_end)
    }

    fn abort_and_rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamsError> {
        self.metrics.transaction_aborts.inc();
        if self.exactly_once() {
            self.producer
                .abort_transaction(OPERATION_TIMEOUT)
                .map_err(|e| StreamsError::kafka("aborting a failed transaction", e))?;
        }
        *lock(&self.producer.context().log) = DeliveryLog::default();
        self.send_failure = None;
        // The batch will be consumed and produced again: count it then.
        self.consumed.clear();
        self.produced.clear();
        let mut rewind = TopicPartitionList::new();
        for task in self.tasks.values_mut() {
            for (topic, offset) in task.rollback() {
                rewind
                    .add_partition_offset(&topic, task.id().0, Offset::Offset(offset))
                    .map_err(|e| StreamsError::kafka("rewinding after an abort", e))?;
            }
        }
        if rewind.count() > 0 {
            // A partition revoked meanwhile cannot be sought; its new owner starts from the
            // committed offset anyway.
            if let Err(error) = consumer.seek_partitions(rewind, OPERATION_TIMEOUT) {
                warn!(%error, "rewinding the consumer after an abort failed for some partitions");
            }
        }
        if self.exactly_once() {
            self.producer
                .begin_transaction()
                .map_err(|e| StreamsError::kafka("beginning a transaction", e))?;
        }
        Ok(())
    }

    fn flush_counters(&mut self) {
        for (topic, count) in self.consumed.drain() {
            self.metrics
                .records_consumed
                .with_label_values(&[topic.as_str()])
                .inc_by(count);
        }
        for (topic, count) in self.produced.drain() {
            self.metrics
                .records_produced
                .with_label_values(&[topic.as_str()])
                .inc_by(count);
        }
        self.metrics
            .state_store_bytes
            .set(i64::try_from(self.state.size_on_disk()).unwrap_or(i64::MAX));
    }

    /// Revocation: commit what the revoked tasks did, then close them.
    fn on_revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) {
        self.health.set_ready(false);
        if let Err(error) = self.commit(consumer) {
            self.fatal.get_or_insert(error);
        }
        for element in revoked.elements() {
            let id = TaskId(element.partition());
            if self.tasks.remove(&id).is_some() {
                let _span =
                    info_span!("task", application = %self.config.application_id, task = %id)
                        .entered();
                info!("task closed (partition revoked)");
            }
        }
        self.metrics
            .assigned_partitions
            .set(self.tasks.len() as i64);
    }

    /// Assignment: create (and restore) a task per assigned partition number.
    fn on_assign(&mut self, assigned: &TopicPartitionList) {
        self.health.set_ready(false);
        let mut partitions: Vec<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
        partitions.sort_unstable();
        partitions.dedup();
        for partition in partitions {
            if let Err(error) = self.create_task(partition) {
                self.fatal.get_or_insert(error);
                return;
            }
            info!(task = %TaskId(partition), "task created");
        }
        self.metrics
            .assigned_partitions
            .set(assigned.count() as i64);
        self.health.set_ready(true);
    }

    /// After a failure: drop every task without committing anything. Their uncommitted work
    /// is redone from the last commit by whichever instance owns the partitions next.
    pub(crate) fn abandon(&mut self) {
        self.tasks.clear();
        self.health.set_ready(false);
    }

    /// Clean shutdown: commit, close every task, make local state durable.
    pub(crate) fn close<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamsError> {
        self.commit(consumer)?;
        self.tasks.clear();
        self.health.set_ready(false);
        self.state.flush()?;
        Ok(())
    }
}

/// The consumer's context: rebalance callbacks reach the engine through it.
pub(crate) struct StreamsContext<P: Processor> {
    pub(crate) engine: Mutex<Engine<P>>,
    pub(crate) metrics: Arc<StreamsMetrics>,
}

impl<P: Processor> StreamsContext<P> {
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine<P>> {
        lock(&self.engine)
    }
}

impl<P: Processor> ClientContext for StreamsContext<P> {
    /// librdkafka's statistics carry the consumer lag of every assigned partition.
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, partition_stats) in &stats.partitions {
                if *partition >= 0 && partition_stats.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), partition.to_string().as_str()])
                        .set(partition_stats.consumer_lag);
                }
            }
        }
    }
}

impl<P: Processor> ConsumerContext for StreamsContext<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => self.engine().on_revoke(consumer, revoked),
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => warn!(%error, "rebalance error"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.engine().on_assign(assigned);
        }
    }
}
