//! The state of the stream thread (Kafka Streams' `StreamThread`) — what the processing loop
//! (`crate::stream_loop`, through the Kafka transport of `transport.rs`) and the consumer's
//! rebalance callbacks share — and the callbacks themselves. Who does what:
//!
//! - [`TaskManager`] (`task_manager.rs`): assignment, revocation, the tasks, their creation,
//!   restoration and closing;
//! - [`RecordCollector`] (`record_collector.rs`): every send, the batch's first send error,
//!   the produced counts;
//! - the record path (`route.rs`): a polled record through the partition group (timestamp
//!   order), to its task, the repartition topic or the dead-letter topic;
//! - the commit path (`commit.rs`): changelog → flush → offsets to the transaction → commit →
//!   begin; on failure abort → rewind.
//!
//! **Why behind a mutex in the consumer's context.** librdkafka hands revocations and
//! assignments to a callback that runs inside `consumer.poll`: a revocation must commit and
//! close the revoked tasks right there, before another instance may take them over, so the
//! callback must reach the tasks, the collector and the commit path. The processing loop
//! takes the lock after each poll and never holds it while polling.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::warn;

use super::StreamsError;
use super::commit::OPERATION_TIMEOUT;
use super::outage::Outage;
use super::partition_group::PartitionGroup;
use super::produce::lock;
use super::purge::RepartitionPurge;
use super::record_collector::RecordCollector;
use super::route::{CatchUp, InFlight};
use super::task_manager::TaskManager;
use crate::client_log::ClientLog;
use crate::config::StreamsConfig;
use crate::metrics::{Health, StreamsMetrics};
use crate::processor::Processor;

pub(crate) struct StreamThread<P: Processor> {
    pub(super) config: StreamsConfig,
    /// This instance's id (its transactional id's suffix), for a producer reset.
    pub(super) instance_id: String,
    pub(super) tasks: TaskManager<P>,
    pub(super) collector: RecordCollector,
    pub(super) metrics: Arc<StreamsMetrics>,
    pub(super) health: Arc<Health>,

    // The record path's (`route.rs`).
    pub(super) repartition_topic: String,
    /// The same, as librdkafka takes it.
    pub(super) repartition_c_topic: CString,
    /// The assigned source partitions' records, taken in timestamp order.
    pub(super) group: PartitionGroup,
    /// Reused for every record's state key.
    pub(super) key_buffer: Vec<u8>,
    /// State keys with records on their way through the repartition topic.
    pub(super) in_flight: InFlight,
    /// The repartition partitions this instance reads, and those it has not read to their end
    /// since assignment (until then nothing is processed in place: what an earlier owner
    /// forwarded must come first).
    pub(super) repartition_owned: Vec<i32>,
    pub(super) catch_up: CatchUp,
    /// Records consumed since the last commit, per topic.
    pub(super) consumed: HashMap<String, u64>,
    /// Records taken (processed, forwarded or dead-lettered) since the start, never reset:
    /// the loop's commit-due rule counts a turn's as the difference.
    pub(super) records_taken: u64,

    // The commit path's (`commit.rs`).
    /// Since when commits have failed (the broker unreachable, most likely).
    pub(super) outage: Outage,
    /// Deletes processed records from the repartition topic now and then.
    pub(super) purge: Option<RepartitionPurge>,
    /// An error raised inside a rebalance callback, for the loop to return.
    pub(super) rebalance_error: Option<StreamsError>,
    /// Wall-clock punctuations were held back by an outage: the tasks hear it has ended.
    pub(super) punctuations_paused: bool,
}

impl<P: Processor> StreamThread<P> {
    pub(crate) fn new(
        config: StreamsConfig,
        instance_id: String,
        tasks: TaskManager<P>,
        collector: RecordCollector,
        purge: Option<RepartitionPurge>,
        metrics: Arc<StreamsMetrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            repartition_topic: config.repartition_topic(),
            // Validated topic names hold no NUL byte.
            repartition_c_topic: CString::new(config.repartition_topic()).unwrap_or_default(),
            group: PartitionGroup::new(config.max_task_idle),
            key_buffer: Vec::with_capacity(32),
            in_flight: InFlight::default(),
            repartition_owned: Vec::new(),
            catch_up: CatchUp::default(),
            consumed: HashMap::new(),
            records_taken: 0,
            outage: Outage::new(config.give_up_after),
            punctuations_paused: false,
            purge,
            rebalance_error: None,
            config,
            instance_id,
            tasks,
            collector,
            metrics,
            health,
        }
    }

    /// An error a rebalance callback raised since the last call: the loop stops with it.
    pub(crate) fn take_rebalance_error(&mut self) -> Result<(), StreamsError> {
        self.rebalance_error.take().map_or(Ok(()), Err)
    }

    pub(crate) fn records_taken(&self) -> u64 {
        self.records_taken
    }

    /// Fires the tasks' due wall-clock punctuations — not during an outage: the input's
    /// silence then says nothing about the data (a timer measuring a quiet input would fire
    /// on the broker's silence). When it ends, the tasks hear that their input flows again
    /// ([`Processor::input_resumed`]) before their next punctuation.
    pub(crate) fn punctuate_wall_clock(&mut self, now_ms: i64) -> Result<(), StreamsError> {
        if self.outage.is_on() {
            self.punctuations_paused = true;
            return Ok(());
        }
        if std::mem::take(&mut self.punctuations_paused) {
            self.tasks.input_resumed(now_ms);
        }
        self.tasks
            .punctuate_wall_clock(now_ms, &mut self.collector)
            .map_err(Into::into)
    }

    /// Revocation: commit what the revoked tasks did, then close them.
    fn on_revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) {
        self.health.set_ready(false);
        if let Err(error) = self.commit(consumer) {
            self.rebalance_error.get_or_insert(error);
        }
        self.in_flight = InFlight::default();
        self.repartition_owned.clear();
        self.catch_up = CatchUp::default();
        for element in revoked.elements() {
            self.group.remove(element.topic(), element.partition());
        }
        self.tasks.handle_revocation(revoked);
        if !self.tasks.has_assignment() {
            self.outage.batch_abandoned();
        }
    }

    /// Assignment: the source partitions join the partition group at their committed offsets
    /// (the repartition partitions are read as they come, once caught up), then the task
    /// manager creates (and restores) a task per assigned partition number.
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
        match self.tasks.handle_assignment(assigned) {
            Ok(()) => self.health.set_ready(true),
            Err(error) => {
                self.rebalance_error.get_or_insert(error);
            }
        }
    }

    /// After a failure: close every task without committing anything (see
    /// [`TaskManager::close_dirty`]); buffered records are dropped with them.
    pub(crate) fn close_dirty(&mut self) {
        self.tasks.close_dirty();
        self.group.clear();
        self.health.set_ready(false);
    }

    /// Clean shutdown, after the loop's last commit (or without it during an outage: the
    /// batch is then redone from the last commit by whichever instance owns the partitions
    /// next): every task closed, buffered records dropped, local state made durable.
    pub(crate) fn close_clean(&mut self) -> Result<(), StreamsError> {
        self.group.clear();
        self.health.set_ready(false);
        self.tasks.close_clean().map_err(Into::into)
    }

    pub(crate) fn outage_is_on(&self) -> bool {
        self.outage.is_on()
    }
}

/// The consumer's context: rebalance callbacks reach the stream thread's state through it.
pub(crate) struct StreamsContext<P: Processor> {
    pub(crate) thread: Mutex<StreamThread<P>>,
    pub(crate) metrics: Arc<StreamsMetrics>,
    pub(crate) log: ClientLog,
}

impl<P: Processor> StreamsContext<P> {
    pub(crate) fn thread(&self) -> MutexGuard<'_, StreamThread<P>> {
        lock(&self.thread)
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
            Rebalance::Revoke(revoked) => self.thread().on_revoke(consumer, revoked),
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => warn!(%error, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.thread().on_assign(consumer, assigned);
        }
    }
}
