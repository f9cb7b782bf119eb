//! The commit path of an instance, in one place: stage the tasks' state changes, write them to
//! the changelog, flush, add the input positions to the transaction, commit — or abort, roll
//! back and rewind. The failure cases are as much a part of it as the happy path.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::StreamsError;
use super::engine::Engine;
use super::produce::{DeliveryLog, count, lock, send_polling};
use crate::config::ProcessingGuarantee;
use crate::processor::{Processor, TaskId};
use crate::store::Change;
use crate::task::StreamTask;

/// How long one Kafka operation of the commit path may take before the commit counts as failed.
pub(super) const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A commit that did not go through: abort and rewind (`Abortable`) or stop (`Fatal`).
pub(super) enum CommitFailure {
    Abortable(KafkaError),
    Fatal(KafkaError),
}

pub(super) fn classify(error: KafkaError) -> CommitFailure {
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

impl<P: Processor> Engine<P> {
    pub(super) fn exactly_once(&self) -> bool {
        self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnce
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
                self.outage.recovered();
                self.health.set_ready(true);
                self.in_flight.committed();
                if let Some(purge) = &mut self.purge {
                    purge.after_commit(self.tasks.values().flat_map(|task| {
                        task.positions()
                            .iter()
                            .map(move |(topic, position)| (task.id().0, topic.as_str(), *position))
                    }));
                }
                if self.exactly_once() {
                    self.producer
                        .begin_transaction()
                        .map_err(|e| StreamsError::kafka("beginning a transaction", e))?;
                }
            }
            Err(CommitFailure::Abortable(error)) => {
                // Most often the broker is unreachable: not ready, and retried until it is
                // back or the outage outlasts give_up_after.
                self.health.set_ready(false);
                self.outage.commit_failed(&error)?;
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
                send_polling(&self.producer, record).map_err(classify)?;
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
            self.abort_transaction()?;
        }
        *lock(&self.producer.context().log) = DeliveryLog::default();
        self.send_failure = None;
        self.in_flight.aborted();
        // The batch will be consumed and produced again: count it then.
        self.consumed.clear();
        self.produced.clear();
        let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for task in self.tasks.values_mut() {
            for (topic, offset) in task.rollback() {
                positions.insert((topic, task.id().0), offset);
            }
        }
        // Buffered records were never processed; a partition none of whose records was
        // processed in this batch is read again from its first buffered record.
        for (topic, partition, first) in self.group.clear() {
            positions
                .entry((topic.to_string(), partition))
                .or_insert(first);
        }
        let paused = self.group.resume_all();
        if !paused.is_empty() {
            let mut list = TopicPartitionList::new();
            for (topic, partition) in &paused {
                list.add_partition(topic, *partition);
            }
            if let Err(error) = consumer.resume(&list) {
                warn!(%error, "resuming paused partitions before rewinding failed");
            }
        }
        let mut rewind = TopicPartitionList::new();
        for ((topic, partition), offset) in &positions {
            self.group.rewound(topic, *partition, *offset);
            rewind
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| StreamsError::kafka("rewinding after an abort", e))?;
        }
        if rewind.count() > 0 {
            // A partition revoked meanwhile cannot be sought (its new owner starts from the
            // committed offset anyway). One still assigned that cannot be rewound would go on
            // from its fetch position past records the task rolled back: stop instead, and the
            // next start reads from the committed offsets.
            let assigned = consumer.assignment().unwrap_or_default();
            let sought = consumer
                .seek_partitions(rewind, OPERATION_TIMEOUT)
                .map_err(|e| StreamsError::kafka("rewinding the consumer after an abort", e))?;
            for element in sought.elements() {
                if let Err(error) = element.error()
                    && assigned
                        .find_partition(element.topic(), element.partition())
                        .is_some()
                {
                    return Err(StreamsError::kafka(
                        &format!(
                            "rewinding {} partition {} after an abort",
                            element.topic(),
                            element.partition()
                        ),
                        error,
                    ));
                }
            }
        }
        if self.exactly_once() {
            self.producer
                .begin_transaction()
                .map_err(|e| StreamsError::kafka("beginning a transaction", e))?;
        }
        Ok(())
    }

    /// Aborts the open transaction, retrying through a broker outage (an abort that cannot
    /// reach the transaction coordinator times out, and may be called again).
    fn abort_transaction(&mut self) -> Result<(), StreamsError> {
        loop {
            match self.producer.abort_transaction(OPERATION_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(error) => {
                    if let CommitFailure::Fatal(error) = classify(error.clone()) {
                        return Err(StreamsError::kafka("aborting a failed transaction", error));
                    }
                    self.outage
                        .failed("aborting a failed transaction", &error)?;
                    // Still alive (the loop waits here, not stuck): /healthz stays true.
                    self.health.heartbeat();
                    std::thread::sleep(self.outage.backoff());
                }
            }
        }
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
}
