//! The engine of one instance: its tasks, its (transactional) producer, its partition group,
//! and their life cycle on assignment and revocation. The record path is in `route.rs`, the
//! commit path in `commit.rs`.
//!
//! The engine lives inside the consumer's context, behind a mutex, because Kafka hands
//! partition revocations and assignments to a callback that runs inside `consumer.poll`: a
//! revocation must commit and close the revoked tasks right there, before another instance
//! may take them over. The processing loop never holds the lock while it polls.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, info_span, warn};

use super::StreamsError;
use super::commit::OPERATION_TIMEOUT;
use super::dead_letter::DeadLetterWriter;
use super::outage::Outage;
use super::partition_group::PartitionGroup;
use super::produce::{ProducerCollector, StreamsProducer, lock};
use super::purge::RepartitionPurge;
use super::restore::{RestoreContext, restore_task};
use super::route::{CatchUp, InFlight};
use crate::client_log::ClientLog;
use crate::config::StreamsConfig;
use crate::metrics::{Health, StreamsMetrics};
use crate::processor::{Processor, TaskId};
use crate::store::{KeyValueStore, StateDir};
use crate::task::StreamTask;

/// Creates the processor of a task; called on every assignment of that task.
pub type ProcessorFactory<P> = Box<dyn Fn(TaskId) -> P + Send + Sync>;

pub(crate) struct Engine<P: Processor> {
    pub(crate) config: StreamsConfig,
    pub(super) changelog: String,
    pub(super) repartition_topic: String,
    /// The same, as librdkafka takes it.
    pub(super) repartition_c_topic: std::ffi::CString,
    /// Partition counts of the source topics, and the task count: tasks `0..tasks` own state.
    pub(super) topology: TopicLayout,
    pub(super) factory: ProcessorFactory<P>,
    pub(super) state: StateDir,
    pub(super) producer: StreamsProducer,
    /// Writes refused records to `config.dead_letter_topic`, in the open transaction.
    pub(super) dead_letters: DeadLetterWriter,
    pub(super) restore_consumer: BaseConsumer<RestoreContext>,
    pub(super) tasks: BTreeMap<TaskId, StreamTask<P>>,
    /// The assigned source partitions' records, taken in timestamp order.
    pub(super) group: PartitionGroup,
    /// Reused for every record's state key.
    pub(super) key_buffer: Vec<u8>,
    /// Deletes processed records from the repartition topic now and then.
    pub(super) purge: Option<RepartitionPurge>,
    /// State keys with records on their way through the repartition topic.
    pub(super) in_flight: InFlight,
    /// The repartition partitions this instance reads, and those it has not read to their end
    /// since assignment (until then nothing is processed in place: what an earlier owner
    /// forwarded must come first).
    pub(super) repartition_owned: Vec<i32>,
    pub(super) catch_up: CatchUp,
    pub(super) metrics: Arc<StreamsMetrics>,
    pub(super) health: Arc<Health>,
    /// Records processed since the last commit.
    pub(super) uncommitted: usize,
    pub(super) last_commit: Instant,
    /// The first send failure of this batch: the batch cannot commit.
    pub(super) send_failure: Option<KafkaError>,
    /// An error raised inside a rebalance callback, for the loop to return.
    pub(crate) fatal: Option<StreamsError>,
    /// Since when commits have failed (the broker unreachable, most likely).
    pub(super) outage: Outage,
    pub(super) consumed: HashMap<String, u64>,
    pub(super) produced: HashMap<String, u64>,
}

/// What the topics look like, learned at start-up.
pub(crate) struct TopicLayout {
    pub(crate) source_partitions: HashMap<String, i32>,
    pub(crate) tasks: i32,
}

/// The Kafka clients an engine works with, besides the consumer that drives it.
pub(crate) struct EngineClients {
    pub(crate) producer: StreamsProducer,
    pub(crate) restore_consumer: BaseConsumer<RestoreContext>,
    pub(crate) purge: Option<RepartitionPurge>,
}

impl<P: Processor> Engine<P> {
    pub(crate) fn new(
        config: StreamsConfig,
        topology: TopicLayout,
        factory: ProcessorFactory<P>,
        state: StateDir,
        clients: EngineClients,
        metrics: Arc<StreamsMetrics>,
        health: Arc<Health>,
    ) -> Self {
        let EngineClients {
            producer,
            restore_consumer,
            purge,
        } = clients;
        Self {
            changelog: config.changelog_topic(),
            repartition_topic: config.repartition_topic(),
            // Validated topic names hold no NUL byte.
            repartition_c_topic: std::ffi::CString::new(config.repartition_topic())
                .unwrap_or_default(),
            topology,
            group: PartitionGroup::new(config.max_task_idle),
            key_buffer: Vec::with_capacity(32),
            in_flight: InFlight::default(),
            repartition_owned: Vec::new(),
            catch_up: CatchUp::default(),
            purge,
            outage: Outage::new(config.give_up_after),
            dead_letters: DeadLetterWriter::new(config.dead_letter_topic.clone()),
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

    /// Creates the task for `partition`, restoring its state from the changelog first. A
    /// task beyond the task count (a source topic with more partitions, all of whose records
    /// are repartitioned) only forwards: it gets an empty in-memory store.
    pub(super) fn create_task(&mut self, partition: i32) -> Result<(), StreamsError> {
        let id = TaskId(partition);
        if self.tasks.contains_key(&id) {
            return Ok(());
        }
        if partition >= self.topology.tasks {
            let store = KeyValueStore::in_memory(&self.config.store_name);
            self.tasks
                .insert(id, StreamTask::new(id, (self.factory)(id), store));
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
            &self.health,
            self.config.give_up_after,
        )?;
        let task = StreamTask::new(id, (self.factory)(id), KeyValueStore::persistent(tree));
        self.tasks.insert(id, task);
        Ok(())
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
        self.in_flight = InFlight::default();
        self.repartition_owned.clear();
        self.catch_up = CatchUp::default();
        for element in revoked.elements() {
            self.group.remove(element.topic(), element.partition());
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

    /// Assignment: create (and restore) a task per assigned partition number; the source
    /// partitions join the partition group at their committed offsets.
    fn on_assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        assigned: &TopicPartitionList,
    ) {
        self.health.set_ready(false);
        // Unknown (no commit yet, or the broker did not say): the group then reads from the
        // log start, as auto.offset.reset = earliest does.
        let committed = consumer
            .committed_offsets(assigned.clone(), OPERATION_TIMEOUT)
            .unwrap_or_else(|_| TopicPartitionList::new());
        for element in assigned.elements() {
            let start = committed
                .find_partition(element.topic(), element.partition())
                .and_then(|e| match e.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            if element.topic() == self.repartition_topic {
                self.repartition_owned.push(element.partition());
                // Already read to its end (within a transaction marker)? Then nothing waits.
                let caught_up = consumer
                    .fetch_watermarks(element.topic(), element.partition(), OPERATION_TIMEOUT)
                    .is_ok_and(|(low, high)| start.unwrap_or(low) >= high - 1);
                if !caught_up {
                    self.catch_up.add(element.partition(), start);
                }
                continue;
            }
            self.group.add(element.topic(), element.partition(), start);
        }
        // A partition paused here before (too much buffered) may come back paused: the group
        // starts afresh with it.
        if let Err(error) = consumer.resume(assigned) {
            warn!(%error, "resuming newly assigned partitions failed");
        }
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
        self.group.clear();
        self.health.set_ready(false);
    }

    /// Clean shutdown: commit, close every task, make local state durable.
    pub(crate) fn close<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamsError> {
        if self.outage.is_on() {
            // A commit now would wait out the outage; the batch is redone from the last
            // commit by whichever instance owns the partitions next.
            self.abandon();
            return self.state.flush().map_err(Into::into);
        }
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
    pub(crate) log: ClientLog,
}

impl<P: Processor> StreamsContext<P> {
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine<P>> {
        lock(&self.engine)
    }
}

impl<P: Processor> ClientContext for StreamsContext<P> {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }

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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.engine().on_assign(consumer, assigned);
        }
    }
}
