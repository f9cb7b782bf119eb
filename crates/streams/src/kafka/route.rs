//! The record path of an instance: a polled record goes through the partition group (source
//! topics, in timestamp order) or straight to its task (the repartition topic), then to the
//! processor, the repartition topic or the dead-letter topic.
//!
//! With repartitioning on, a source record's state key decides (Kafka Streams' repartition
//! before a stateful step): the record is processed where it is only when the policy is `Auto`,
//! its own key is its state key and it sits in the partition Kafka's default partitioner gives
//! that key among the task count; otherwise it is forwarded — key = state key, same value,
//! timestamp and headers — to that partition of the repartition topic, in the transaction that
//! commits its input offset. Task `p` then owns every key whose partition is `p`.

use std::collections::HashMap;
use std::ffi::CStr;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message, OwnedHeaders};
use tracing::debug;

use super::StreamsError;
use super::dead_letter::DeadLetter;
use super::partition_group::EndOffsets;
use super::produce::count;
use super::thread::StreamThread;
use crate::config::RepartitionPolicy;
use crate::dlq_headers;
use crate::partitioner::partition_for;
use crate::processor::{Processor, Record, Rejection};
use crate::task::Outcome;

/// A record's original headers: borrowed from the consumer, or owned by a buffered record.
pub(super) enum OriginalHeaders<'a> {
    Borrowed(Option<&'a BorrowedHeaders>),
    Owned(Option<OwnedHeaders>),
}

impl OriginalHeaders<'_> {
    fn into_owned(self) -> Option<OwnedHeaders> {
        match self {
            Self::Borrowed(headers) => headers.map(BorrowedHeaders::detach),
            Self::Owned(headers) => headers,
        }
    }
}

/// State keys with forwarded records not read back from the repartition topic yet. While a key
/// has some, its in-place records take the hop too: behind them, in order. (A symbol written
/// both keyed and unkeyed — ingest and the reference producer on one topic — would otherwise
/// see its in-place ticks overtake the forwarded ones by a commit interval.)
#[derive(Default)]
pub(crate) struct InFlight {
    pending: HashMap<Vec<u8>, u64>,
    /// This batch's changes, undone if it aborts.
    forwarded: HashMap<Vec<u8>, u64>,
    returned: HashMap<Vec<u8>, u64>,
}

impl InFlight {
    fn contains(&self, key: &[u8]) -> bool {
        // Nearly always empty: skip hashing the key.
        !self.pending.is_empty() && self.pending.contains_key(key)
    }

    fn forwarded(&mut self, key: &[u8]) {
        *self.pending.entry(key.to_vec()).or_default() += 1;
        *self.forwarded.entry(key.to_vec()).or_default() += 1;
    }

    fn returned(&mut self, key: &[u8]) {
        if let Some(count) = self.pending.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.pending.remove(key);
            }
            *self.returned.entry(key.to_vec()).or_default() += 1;
        }
    }

    pub(crate) fn committed(&mut self) {
        self.forwarded.clear();
        self.returned.clear();
    }

    /// The batch is redone: what it forwarded is gone, what it read back will be read again.
    pub(crate) fn aborted(&mut self) {
        for (key, n) in self.forwarded.drain() {
            if let Some(count) = self.pending.get_mut(&key) {
                *count = count.saturating_sub(n);
                if *count == 0 {
                    self.pending.remove(&key);
                }
            }
        }
        for (key, n) in self.returned.drain() {
            *self.pending.entry(key).or_default() += n;
        }
    }
}

/// The repartition partitions not yet read to their end since they were assigned: records an
/// earlier owner (or this instance before a restart) forwarded may still wait there, so no
/// record is processed in place before they are read. Checked at most every 100 ms; given up
/// after [`CATCH_UP_LIMIT`] (the records then merge in arrival order).
#[derive(Default)]
pub(crate) struct CatchUp {
    /// Partition and where reading starts (the committed offset), when known.
    pending: Vec<(i32, Option<i64>)>,
    checked: Option<Instant>,
    since: Option<Instant>,
}

const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

impl CatchUp {
    pub(crate) fn add(&mut self, partition: i32, start: Option<i64>) {
        self.pending.push((partition, start));
        self.since.get_or_insert_with(Instant::now);
    }

    fn done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Drops the partitions whose position has reached their end (a transaction marker may sit
    /// at the last offset, so one short of the high watermark counts).
    fn check<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, topic: &CStr) {
        if self.pending.is_empty() || self.checked.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return;
        }
        self.checked = Some(Instant::now());
        if self.since.is_some_and(|t| t.elapsed() > CATCH_UP_LIMIT) {
            self.pending.clear();
            return;
        }
        let positions = consumer.position().unwrap_or_default();
        let name = topic.to_string_lossy();
        let ends = FetchedEnds(consumer);
        self.pending.retain(|(partition, start)| {
            let Some((low, high)) = ends.watermarks(topic, *partition) else {
                return true;
            };
            let position = positions
                .find_partition(&name, *partition)
                .and_then(|e| match e.offset() {
                    rdkafka::Offset::Offset(offset) => Some(offset),
                    _ => None,
                })
                .or(*start)
                .unwrap_or(low);
            position < high - 1
        });
    }
}

const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The watermarks librdkafka cached from its last fetch response of a partition.
struct FetchedEnds<'a, C: ConsumerContext>(&'a BaseConsumer<C>);

impl<C: ConsumerContext> EndOffsets for FetchedEnds<'_, C> {
    fn watermarks(&self, topic: &CStr, partition: i32) -> Option<(i64, i64)> {
        let (mut low, mut high) = (-1_i64, -1_i64);
        // SAFETY: the client pointer lives as long as the consumer borrowed here; `topic` is a
        // NUL-terminated string; librdkafka only writes the two out-parameters.
        let error = unsafe {
            rdsys::rd_kafka_get_watermark_offsets(
                self.0.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && low >= 0 && high >= 0)
            .then_some((low, high))
    }
}

impl<P: Processor> StreamThread<P> {
    /// Takes one polled record: the repartition topic's go to their task at once (their order
    /// was settled when they were forwarded); source records wait their turn in the group,
    /// unless nothing else could come first.
    pub(crate) fn on_message<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), StreamsError> {
        let headers = OriginalHeaders::Borrowed(message.headers());
        let record = Record::from_message(message);
        if record.topic == self.repartition_topic {
            if let Some(key) = record.key {
                self.in_flight.returned(key);
            }
            return self.process_in_task(&record, headers);
        }
        if self.group.buffered() == 0 && self.goes_in_place(&record)? {
            // Keyed for where it sits: its symbol lives in this partition only, so its place
            // in the timestamp order across partitions does not matter, and nothing waits
            // before it (the group is empty). No copy, no wait.
            self.group
                .bypassed(record.topic, record.partition, record.offset);
            return self.process_in_task(&record, headers);
        }
        if self
            .group
            .may_bypass(record.topic, record.partition, &FetchedEnds(consumer))
        {
            self.group
                .bypassed(record.topic, record.partition, record.offset);
            self.route(&record, headers)?;
        } else {
            self.group.push(message);
        }
        self.drain(consumer, false)
    }

    /// Processes buffered source records whose turn has come; `idle`: the consumer had no
    /// record to hand over, so a lagging partition may be waited out.
    pub(crate) fn drain<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        idle: bool,
    ) -> Result<(), StreamsError> {
        if self.group.buffered() == 0 && !self.group.any_paused() && self.catch_up.done() {
            return Ok(()); // the per-record fast path: nothing waits
        }
        self.catch_up.check(consumer, &self.repartition_c_topic);
        let now = Instant::now();
        let mut enforced = false;
        while let Some(mut buffered) =
            self.group
                .next(now, &FetchedEnds(consumer), idle, &mut enforced)
        {
            if enforced {
                self.metrics.enforced_processing.inc();
            }
            let headers = OriginalHeaders::Owned(buffered.headers.take());
            self.route(&buffered.record(), headers)?;
        }
        let (pause, resume) = self.group.flow_changes();
        for (partitions, paused) in [(pause, true), (resume, false)] {
            if partitions.is_empty() {
                continue;
            }
            let mut list = TopicPartitionList::new();
            for (topic, partition) in &partitions {
                list.add_partition(topic, *partition);
            }
            let result = if paused {
                consumer.pause(&list)
            } else {
                consumer.resume(&list)
            };
            if let Err(error) = result {
                debug!(%error, paused, "pausing or resuming source partitions failed");
            }
        }
        self.metrics
            .buffered_records
            .set(i64::try_from(self.group.buffered()).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Whether `record` is processed where it is (see [`Self::route`]); `false` also when its
    /// state key cannot be read (the usual path then dead-letters it).
    fn goes_in_place(&mut self, record: &Record<'_>) -> Result<bool, StreamsError> {
        if self.config.repartition != Some(RepartitionPolicy::Auto) || record.key.is_none() {
            return Ok(false);
        }
        let mut key = std::mem::take(&mut self.key_buffer);
        let keyed = self
            .tasks
            .task_for(record.partition)?
            .state_key(record, &mut key);
        let in_place = keyed.is_ok() && self.in_place(record, &key);
        self.key_buffer = key;
        Ok(in_place)
    }

    fn in_place(&self, record: &Record<'_>, key: &[u8]) -> bool {
        let layout = self.tasks.layout();
        let tasks = layout.tasks;
        self.config.repartition == Some(RepartitionPolicy::Auto)
            && record.key == Some(key)
            && partition_for(key, tasks) == record.partition
            && layout.source_partitions.get(record.topic) == Some(&tasks)
            && !self.in_flight.contains(key)
            && self.catch_up.done()
    }

    /// A source record's turn: process it here, forward it, or dead-letter it.
    fn route(
        &mut self,
        record: &Record<'_>,
        headers: OriginalHeaders<'_>,
    ) -> Result<(), StreamsError> {
        if self.config.repartition.is_none() {
            return self.process_in_task(record, headers);
        }
        let mut key = std::mem::take(&mut self.key_buffer);
        let keyed = self
            .tasks
            .task_for(record.partition)?
            .state_key(record, &mut key);
        let result = match keyed {
            Err(rejection) => {
                self.tasks.task_for(record.partition)?.advance(record);
                self.count_consumed(record.topic);
                self.send_dead_letter(record, headers.into_owned(), &rejection);
                Ok(())
            }
            Ok(()) => {
                let target = partition_for(&key, self.tasks.layout().tasks);
                if self.in_place(record, &key) {
                    self.process_in_task(record, headers)
                } else {
                    self.tasks.task_for(record.partition)?.advance(record);
                    self.count_consumed(record.topic);
                    self.forward(record, headers.into_owned(), &key, target);
                    Ok(())
                }
            }
        };
        self.key_buffer = key;
        result
    }

    /// Runs one record through its task's processor; a rejection goes to the dead-letter topic.
    fn process_in_task(
        &mut self,
        record: &Record<'_>,
        headers: OriginalHeaders<'_>,
    ) -> Result<(), StreamsError> {
        let task = self.tasks.task_for(record.partition)?;
        let outcome = task.process(record, &mut self.collector)?;
        if let Outcome::Rejected(rejection) = outcome {
            self.send_dead_letter(record, headers.into_owned(), &rejection);
        }
        self.count_consumed(record.topic);
        Ok(())
    }

    fn count_consumed(&mut self, topic: &str) {
        count(&mut self.consumed, topic, 1);
        self.records_taken += 1;
        if self.records_taken.is_multiple_of(1024) {
            self.collector.poll(); // serve delivery reports as we go
        }
    }

    /// Writes `record` re-keyed to partition `target` of the repartition topic.
    fn forward(
        &mut self,
        record: &Record<'_>,
        headers: Option<OwnedHeaders>,
        key: &[u8],
        target: i32,
    ) {
        let sent = self.collector.send_to_partition(
            &self.repartition_topic,
            target,
            key,
            record.value,
            record.timestamp,
            headers,
        );
        if sent {
            self.metrics.repartitioned_records.inc();
            // Tracked only where this instance reads it back (else it never returns here).
            if self.repartition_owned.contains(&target) {
                self.in_flight.forwarded(key);
            }
        }
    }
}

impl<P: Processor> StreamThread<P> {
    /// Sends a refused record to the dead-letter topic: its key, value and original headers,
    /// then the reason headers (`crate::dlq_headers`).
    pub(super) fn send_dead_letter(
        &mut self,
        record: &Record<'_>,
        original: Option<OwnedHeaders>,
        rejection: &Rejection,
    ) {
        let reason = dlq_headers::for_rejection(record, rejection, &self.config.application_id);
        let letter = DeadLetter::new(record.key, record.value, original, &reason);
        self.collector.send_dead_letter(letter);
        self.metrics
            .dead_letter_records
            .with_label_values(&[record.topic, rejection.code.as_ref()])
            .inc();
    }
}
