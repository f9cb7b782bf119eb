//! The commit path of an instance, in one place, in the order of rust-rdkafka's
//! `examples/transactions.rs`: write the tasks' state changes to their changelogs, flush, send
//! the input offsets to the transaction, commit, begin the next one — or abort, roll back and
//! rewind to the last commit, then begin again. The failure cases are as much a part of it as
//! the happy path.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::StreamsError;
use super::thread::StreamThread;
use crate::config::ProcessingGuarantee;
use crate::processor::Processor;
use crate::task::StagedChanges;
/// How long one Kafka operation of the commit path may take before the commit counts as failed.
pub(super) const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A commit that did not go through: abort and rewind (`Abortable`), the same with a new
/// producer (`Fenced`), or stop (`Fatal`).
pub(super) enum CommitFailure {
    Abortable(KafkaError),
    /// The producer is fenced: its transaction was aborted for it, and it can do nothing more.
    /// Kafka Streams takes this for a migrated task and resets the producer; so do we.
    Fenced(KafkaError),
    Fatal(KafkaError),
}

pub(super) fn classify(error: KafkaError) -> CommitFailure {
    match &error {
        KafkaError::Transaction(rd) if rd.is_fatal() && is_fencing(rd.code()) => {
            CommitFailure::Fenced(error)
        }
        KafkaError::Transaction(rd) if rd.is_fatal() => CommitFailure::Fatal(error),
        _ => CommitFailure::Abortable(error),
    }
}

/// The fatal errors that mean "fenced": the coordinator bumped this transactional id's epoch,
/// because the transaction outlived `transaction.timeout.ms` (a broker stalled longer than
/// that, as a fenced-and-readmitted broker does) or another producer initialised the same id.
fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

impl<P: Processor> StreamThread<P> {
    fn exactly_once(&self) -> bool {
        self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnce
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
        if !self.tasks.commit_needed() && !self.collector.has_send_error() {
            return Ok(());
        }
        let started = Instant::now();
        let staged = self.tasks.prepare_commit();
        match self.commit_transaction(consumer, &staged) {
            Ok(changelog_end) => {
                self.post_commit(&staged, &changelog_end)?;
                self.begin_transaction()?;
            }
            Err(CommitFailure::Abortable(error)) => {
                // Most often the broker is unreachable: not ready, and retried until it is
                // back or the outage outlasts give_up_after.
                self.health.set_ready(false);
                self.outage.commit_failed(&error)?;
                self.abort_and_rewind(consumer)?;
                self.begin_transaction()?;
            }
            // The abort fails the same way and replaces the producer (it says so, at WARN).
            Err(CommitFailure::Fenced(_)) => {
                self.health.set_ready(false);
                self.abort_and_rewind(consumer)?;
                self.begin_transaction()?;
            }
            Err(CommitFailure::Fatal(error)) => {
                return Err(StreamsError::kafka(
                    "committing (a fatal producer error: check the ACLs of the transactional id \
                     and that the broker supports transactions)",
                    error,
                ));
            }
        }
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Steps 1–3 of [`Self::commit`]; returns the last changelog offset written per partition.
    fn commit_transaction<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        staged: &StagedChanges,
    ) -> Result<HashMap<i32, i64>, CommitFailure> {
        if let Some(error) = self.collector.take_send_error() {
            return Err(CommitFailure::Abortable(error));
        }
        for (id, changes) in staged {
            self.collector
                .send_changelog(id.0, changes)
                .map_err(classify)?;
        }
        let changelog_end = self.collector.flush().map_err(classify)?;
        let mut offsets = TopicPartitionList::new();
        for (topic, partition, position) in self.tasks.positions() {
            offsets
                .add_partition_offset(topic, partition, Offset::Offset(position))
                .map_err(CommitFailure::Abortable)?;
        }
        if self.exactly_once() {
            let metadata = consumer
                .group_metadata()
                // Not a group member right now (left or kicked out): abort; the group decides anew.
                .ok_or(CommitFailure::Abortable(KafkaError::Rebalance(
                    RDKafkaErrorCode::State,
                )))?;
            let producer = self.collector.producer();
            producer
                .send_offsets_to_transaction(&offsets, &metadata, OPERATION_TIMEOUT)
                .map_err(classify)?;
            producer
                .commit_transaction(OPERATION_TIMEOUT)
                .map_err(classify)?;
        } else if offsets.count() > 0 {
            consumer
                .commit(&offsets, CommitMode::Sync)
                .map_err(CommitFailure::Abortable)?;
        }
        Ok(changelog_end)
    }

    /// Step 4 of [`Self::commit`]: the transaction committed.
    fn post_commit(
        &mut self,
        staged: &StagedChanges,
        changelog_end: &HashMap<i32, i64>,
    ) -> Result<(), StreamsError> {
        self.tasks.post_commit(staged, changelog_end)?;
        self.metrics.commits.inc();
        self.flush_counters();
        self.outage.recovered();
        self.health.set_ready(true);
        self.in_flight.committed();
        if let Some(purge) = &mut self.purge {
            purge.after_commit(
                self.tasks
                    .positions()
                    .map(|(topic, partition, position)| (partition, topic, position)),
            );
        }
        Ok(())
    }

    fn begin_transaction(&self) -> Result<(), StreamsError> {
        if self.exactly_once() {
            self.collector
                .producer()
                .begin_transaction()
                .map_err(|e| StreamsError::kafka("beginning a transaction", e))?;
        }
        Ok(())
    }

    /// The failure path: abort the transaction, forget the batch (state, sends, counts) and
    /// rewind the consumer to where the tasks last committed.
    fn abort_and_rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), StreamsError> {
        self.metrics.transaction_aborts.inc();
        if self.exactly_once() {
            self.abort_transaction()?;
        }
        self.collector.discard_batch();
        self.in_flight.aborted();
        // The batch will be consumed again: count it then.
        self.consumed.clear();
        let mut positions = self.tasks.rollback();
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
        self.rewind(consumer, &positions)
    }

    /// Seeks every partition in `positions` back to its offset.
    fn rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        positions: &BTreeMap<(String, i32), i64>,
    ) -> Result<(), StreamsError> {
        let mut rewind = TopicPartitionList::new();
        for ((topic, partition), offset) in positions {
            self.group.rewound(topic, *partition, *offset);
            rewind
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| StreamsError::kafka("rewinding after an abort", e))?;
        }
        if rewind.count() == 0 {
            return Ok(());
        }
        // A partition revoked meanwhile cannot be sought (its new owner starts from the
        // committed offset anyway). One still assigned that cannot be rewound would go on from
        // its fetch position past records the task rolled back: stop instead, and the next
        // start reads from the committed offsets.
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
        Ok(())
    }

    /// Aborts the open transaction, retrying through a broker outage (an abort that cannot
    /// reach the transaction coordinator times out, and may be called again).
    fn abort_transaction(&mut self) -> Result<(), StreamsError> {
        let mut rebootstrapper = super::client::Rebootstrapper::default();
        loop {
            match self
                .collector
                .producer()
                .abort_transaction(OPERATION_TIMEOUT)
            {
                Ok(()) => return Ok(()),
                Err(error) => {
                    match classify(error.clone()) {
                        // Fenced: the coordinator aborted the transaction already. Any other
                        // fatal error: the producer can do nothing more, and the batch is
                        // being given up anyway — Kafka 4.x answers an abort that races the
                        // coordinator's own timeout abort with INVALID_TXN_STATE, for one.
                        // A new producer's init_transactions aborts whatever is still open;
                        // a cause that lasts (an ACL) fails that init, and stops us there.
                        CommitFailure::Fenced(error) | CommitFailure::Fatal(error) => {
                            return self.reset_producer(&error);
                        }
                        CommitFailure::Abortable(_) => {}
                    }
                    self.outage
                        .failed("aborting a failed transaction", &error)?;
                    // See `client::Rebootstrapper`: the producer may have no broker left.
                    rebootstrapper.failed(
                        self.collector.producer().client(),
                        &self.config.bootstrap_servers,
                    );
                    // Still alive (the loop waits here, not stuck): /healthz stays true.
                    self.health.heartbeat();
                    std::thread::sleep(self.outage.backoff());
                }
            }
        }
    }

    /// Replaces a fenced (or otherwise failed) producer (Kafka Streams'
    /// `StreamsProducer.resetProducer`): a new one with the same transactional id,
    /// initialised — which fences nothing of ours any more and completes the abort of what the
    /// old one had open. Retried through an outage like an abort; the caller then rolls back,
    /// rewinds and begins a transaction on it.
    fn reset_producer(&mut self, failed: &KafkaError) -> Result<(), StreamsError> {
        warn!(
            error = %failed,
            "the producer can go on no more (fenced, or its transaction ended by the \
             coordinator): the transaction outlived transaction.timeout.ms (a broker stall?) or \
             another process started with this instance's id (two instances sharing a copied \
             state dir: give each its own); a new producer takes over"
        );
        self.metrics.producer_resets.inc();
        loop {
            match super::transactional_producer(&self.config, &self.instance_id, OPERATION_TIMEOUT)
            {
                Ok(producer) => {
                    self.collector.replace_producer(producer);
                    return Ok(());
                }
                Err(StreamsError::Kafka { source: error, .. })
                    if matches!(classify(error.clone()), CommitFailure::Abortable(_)) =>
                {
                    self.outage.failed("initialising a new producer", &error)?;
                    self.health.heartbeat();
                    std::thread::sleep(self.outage.backoff());
                }
                Err(error) => return Err(error),
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
        for (topic, count) in self.collector.take_produced() {
            self.metrics
                .records_produced
                .with_label_values(&[topic.as_str()])
                .inc_by(count);
        }
        self.metrics
            .state_store_bytes
            .set(i64::try_from(self.tasks.state_bytes()).unwrap_or(i64::MAX));
    }
}
