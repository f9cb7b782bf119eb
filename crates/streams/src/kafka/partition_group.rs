//! Kafka Streams' `PartitionGroup`: the source records of an instance taken in timestamp
//! order across its assigned source partitions, not in the order the fetcher delivers them.
//!
//! Each source partition has a queue. The next record is the head with the smallest timestamp
//! among the queues that hold one — but only once every empty queue is known to be at its end
//! (its next offset has reached the high watermark of the last fetch): an empty queue that has
//! not may still hold an earlier record on the broker. Such a queue is waited for at most
//! `max_task_idle` (Kafka Streams' `max.task.idle.ms`) from the moment it ran empty; one whose
//! end is not known yet (no fetch answered since assignment) at most [`UNKNOWN_END_WAIT`].
//! Then the others go ahead ("enforced processing", counted in a metric) until it has data —
//! but only while the consumer has nothing more to hand over: librdkafka's fetched records of
//! all partitions wait in one queue, so the records of one partition can sit behind a whole
//! fetched batch of another. To let them through, a partition with [`PAUSE_AT`] records
//! buffered is paused (no more fetching, its fetched records dropped from librdkafka's queue,
//! to be fetched again from where the application stands) and resumed once it is down to
//! [`RESUME_AT`] — Kafka Streams' `buffered.records.per.partition`, larger here: librdkafka
//! hands over up to 1 MB per partition per fetch (thousands of ticks), and a pause discards
//! what it prefetched, so a bound below one fetch would make it fetch everything twice.
//!
//! So a backlog spread over several partitions — the reference producer's unkeyed records over
//! a 3-partition topic — is replayed in event-time order, and a caught-up stream pays nothing:
//! a record whose every peer queue is empty and at its end is processed straight from the
//! consumer, without a copy ([`PartitionGroup::may_bypass`]).

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Message};

use super::record::OwnedRecord;
use crate::processor::Record;

/// A source partition: topic and partition number.
pub(crate) type PartitionRef = (Arc<str>, i32);

/// Records buffered in one partition before it is paused.
pub(crate) const PAUSE_AT: usize = 20_000;
/// Records left in a paused partition's queue when it is resumed.
pub(crate) const RESUME_AT: usize = 10_000;

/// How long an empty partition whose end is unknown (not fetched yet) holds the others back.
pub(crate) const UNKNOWN_END_WAIT: Duration = Duration::from_secs(5);

struct Queue {
    topic: Arc<str>,
    /// The name as librdkafka takes it, made once.
    c_topic: CString,
    partition: i32,
    records: VecDeque<OwnedRecord>,
    /// The offset after the last record taken from the consumer (buffered or bypassed); `None`
    /// until known (the committed offset, or the first record): then consumption starts at the
    /// log start (`auto.offset.reset = earliest`).
    next_offset: Option<i64>,
    /// Since when the queue has been empty.
    empty_since: Instant,
    /// Paused at the consumer (too much buffered).
    paused: bool,
    /// The watermarks last read and when: read at most every [`WATERMARK_REFRESH`], since
    /// every record polled asks about every other partition.
    watermarks: std::cell::Cell<Option<CachedWatermarks>>,
}

/// When watermarks were read, and what they were (`None`: not known yet).
type CachedWatermarks = (Instant, Option<(i64, i64)>);

/// How stale the cached watermarks may be. A high watermark is only ever too low, so a stale
/// one can at worst let a record go ahead of one fetched within this window.
const WATERMARK_REFRESH: Duration = Duration::from_millis(1);

impl Queue {
    fn watermarks(&self, ends: &dyn EndOffsets, now: Instant) -> Option<(i64, i64)> {
        match self.watermarks.get() {
            Some((read, known)) if now.saturating_duration_since(read) < WATERMARK_REFRESH => known,
            _ => {
                let known = ends.watermarks(&self.c_topic, self.partition);
                self.watermarks.set(Some((now, known)));
                known
            }
        }
    }
}

/// Where one partition stands against the end of its log, as the last fetch reported it.
pub(crate) trait EndOffsets {
    /// The low and high watermarks of `topic`/`partition` from the consumer's last fetch
    /// response, if one arrived yet (no network round trip).
    fn watermarks(&self, topic: &CStr, partition: i32) -> Option<(i64, i64)>;
}

pub(crate) struct PartitionGroup {
    queues: Vec<Queue>,
    max_task_idle: Duration,
    buffered: usize,
}

/// What an empty queue means for the others.
enum Empty {
    /// At its end: nothing earlier can come from it.
    AtEnd,
    /// It may hold earlier records: wait for it until this moment.
    WaitUntil(Instant),
}

/// Records with no timestamp go first: nothing says they are late.
fn order(record: &OwnedRecord) -> i64 {
    record.timestamp.unwrap_or(i64::MIN)
}

impl PartitionGroup {
    pub(crate) fn new(max_task_idle: Duration) -> Self {
        Self {
            queues: Vec::new(),
            max_task_idle,
            buffered: 0,
        }
    }

    fn position(&self, topic: &str, partition: i32) -> Option<usize> {
        self.queues
            .iter()
            .position(|q| q.partition == partition && &*q.topic == topic)
    }

    pub(crate) fn contains(&self, topic: &str, partition: i32) -> bool {
        self.position(topic, partition).is_some()
    }

    /// A newly assigned partition; `next_offset` is where consumption starts, when known.
    pub(crate) fn add(&mut self, topic: &str, partition: i32, next_offset: Option<i64>) {
        if self.contains(topic, partition) {
            return;
        }
        self.queues.push(Queue {
            topic: Arc::from(topic),
            // Kafka topic names never hold a NUL byte.
            c_topic: CString::new(topic).unwrap_or_default(),
            partition,
            records: VecDeque::new(),
            next_offset,
            empty_since: Instant::now(),
            paused: false,
            watermarks: std::cell::Cell::new(None),
        });
        self.queues
            .sort_by(|a, b| (&*a.topic, a.partition).cmp(&(&*b.topic, b.partition)));
    }

    /// A revoked partition: what it buffered is dropped (its new owner reads it again from
    /// the committed offset).
    pub(crate) fn remove(&mut self, topic: &str, partition: i32) {
        if let Some(i) = self.position(topic, partition) {
            self.buffered -= self.queues[i].records.len();
            self.queues.remove(i);
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    pub(crate) fn any_paused(&self) -> bool {
        self.queues.iter().any(|q| q.paused)
    }

    fn at_end(queue: &Queue, ends: &dyn EndOffsets, now: Instant) -> bool {
        queue.records.is_empty()
            && queue
                .watermarks(ends, now)
                .is_some_and(|(low, high)| queue.next_offset.unwrap_or(low) >= high)
    }

    fn empty(&self, queue: &Queue, ends: &dyn EndOffsets, now: Instant) -> Empty {
        match queue.watermarks(ends, now) {
            Some((low, high)) if queue.next_offset.unwrap_or(low) >= high => Empty::AtEnd,
            Some(_) => Empty::WaitUntil(queue.empty_since + self.max_task_idle),
            None => Empty::WaitUntil(queue.empty_since + UNKNOWN_END_WAIT.max(self.max_task_idle)),
        }
    }

    /// Whether the record just polled from `topic`/`partition` may be processed at once: no
    /// queue holds anything, and every other partition is at its end.
    pub(crate) fn may_bypass(&self, topic: &str, partition: i32, ends: &dyn EndOffsets) -> bool {
        let now = Instant::now();
        self.buffered == 0
            && self.queues.iter().all(|q| {
                (q.partition == partition && &*q.topic == topic) || Self::at_end(q, ends, now)
            })
    }

    /// A record taken from the consumer and processed without buffering.
    pub(crate) fn bypassed(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(i) = self.position(topic, partition) {
            self.queues[i].next_offset = Some(offset + 1);
            self.queues[i].empty_since = Instant::now();
        }
    }

    /// Buffers a polled record (copying it) until its turn.
    pub(crate) fn push(&mut self, message: &BorrowedMessage<'_>) {
        let i = match self.position(message.topic(), message.partition()) {
            Some(i) => i,
            None => {
                // Assignment adds partitions first; a record racing it still gets a queue.
                self.add(message.topic(), message.partition(), None);
                match self.position(message.topic(), message.partition()) {
                    Some(i) => i,
                    None => return,
                }
            }
        };
        let queue = &mut self.queues[i];
        queue.next_offset = Some(message.offset() + 1);
        // A partition that ran dry and gets data again has to be waited for afresh next time.
        queue.empty_since = Instant::now();
        queue.records.push_back(OwnedRecord::copy(
            &Record::from_message(message),
            Arc::clone(&queue.topic),
            message.headers().map(|h| h.detach()),
        ));
        self.buffered += 1;
    }

    /// Partitions to pause (too much buffered) and to resume (drained enough) at the
    /// consumer; marks them so.
    pub(crate) fn flow_changes(&mut self) -> (Vec<PartitionRef>, Vec<PartitionRef>) {
        let (mut pause, mut resume) = (Vec::new(), Vec::new());
        for queue in &mut self.queues {
            let wanted = if queue.paused {
                queue.records.len() > RESUME_AT
            } else {
                queue.records.len() >= PAUSE_AT
            };
            if wanted != queue.paused {
                queue.paused = wanted;
                let entry = (Arc::clone(&queue.topic), queue.partition);
                if wanted {
                    pause.push(entry)
                } else {
                    resume.push(entry)
                }
            }
        }
        (pause, resume)
    }

    /// The next record in timestamp order, if its turn has come at `now`; `enforced` is set
    /// when it goes ahead of a lagging partition after `max_task_idle`, which only happens
    /// when `idle` (the consumer had nothing more to hand over).
    pub(crate) fn next(
        &mut self,
        now: Instant,
        ends: &dyn EndOffsets,
        idle: bool,
        enforced: &mut bool,
    ) -> Option<OwnedRecord> {
        *enforced = false;
        if self.buffered == 0 {
            return None;
        }
        let mut best: Option<(usize, i64)> = None;
        let mut waited_out = false;
        for (i, queue) in self.queues.iter().enumerate() {
            match queue.records.front() {
                Some(head) => {
                    if best.is_none_or(|(_, t)| order(head) < t) {
                        best = Some((i, order(head)));
                    }
                }
                None => match self.empty(queue, ends, now) {
                    Empty::AtEnd => {}
                    Empty::WaitUntil(deadline) if now < deadline => return None,
                    Empty::WaitUntil(_) => waited_out = true,
                },
            }
        }
        let (i, _) = best?;
        if waited_out && !idle {
            return None;
        }
        *enforced = waited_out;
        let queue = &mut self.queues[i];
        let record = queue.records.pop_front()?;
        if queue.records.is_empty() {
            queue.empty_since = now;
        }
        self.buffered -= 1;
        Some(record)
    }

    /// After an aborted transaction: drops every buffered record and returns, per partition
    /// that had some, the first offset dropped (where to seek unless the task rewinds it
    /// further back anyway).
    pub(crate) fn clear(&mut self) -> Vec<(Arc<str>, i32, i64)> {
        let mut firsts = Vec::new();
        for queue in &mut self.queues {
            if let Some(first) = queue.records.front() {
                firsts.push((Arc::clone(&queue.topic), queue.partition, first.offset));
                queue.next_offset = Some(first.offset);
            }
            queue.records.clear();
        }
        self.buffered = 0;
        let now = Instant::now();
        for queue in &mut self.queues {
            queue.empty_since = now;
        }
        firsts
    }

    /// Every paused partition, marked resumed: before a rewind, so the seek is not undone by a
    /// later resume (which restarts fetching where the application stood).
    pub(crate) fn resume_all(&mut self) -> Vec<PartitionRef> {
        self.queues
            .iter_mut()
            .filter_map(|q| {
                std::mem::replace(&mut q.paused, false).then(|| (Arc::clone(&q.topic), q.partition))
            })
            .collect()
    }

    /// After a rewind to `offset`: consumption restarts there.
    pub(crate) fn rewound(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(i) = self.position(topic, partition) {
            self.queues[i].next_offset = Some(offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Ends(HashMap<(String, i32), i64>);

    impl EndOffsets for Ends {
        fn watermarks(&self, topic: &CStr, partition: i32) -> Option<(i64, i64)> {
            let topic = topic.to_str().ok()?.to_owned();
            self.0.get(&(topic, partition)).map(|high| (0, *high))
        }
    }

    fn record(partition: i32, offset: i64, ts: i64) -> OwnedRecord {
        OwnedRecord {
            topic: Arc::from("btc"),
            partition,
            offset,
            timestamp: Some(ts),
            key: None,
            value: None,
            headers: None,
        }
    }

    fn group_with(records: &[(i32, i64, i64)]) -> PartitionGroup {
        let mut group = PartitionGroup::new(Duration::from_millis(100));
        for p in 0..3 {
            group.add("btc", p, Some(0));
        }
        for &(p, offset, ts) in records {
            let i = group.position("btc", p).expect("queue");
            group.queues[i].records.push_back(record(p, offset, ts));
            group.queues[i].next_offset = Some(offset + 1);
            group.buffered += 1;
        }
        group
    }

    fn drain(group: &mut PartitionGroup, now: Instant, ends: &Ends) -> Vec<i64> {
        let mut enforced = false;
        std::iter::from_fn(|| group.next(now, ends, true, &mut enforced))
            .map(|r| r.timestamp.unwrap_or_default())
            .collect()
    }

    #[test]
    fn records_of_several_partitions_come_out_in_timestamp_order_once_all_are_buffered() {
        let mut group = group_with(&[(0, 0, 10), (0, 1, 40), (1, 0, 20), (2, 0, 30), (2, 1, 35)]);
        let ends = Ends(HashMap::from([
            (("btc".into(), 0), 2),
            (("btc".into(), 1), 1),
            (("btc".into(), 2), 2),
        ]));
        assert_eq!(
            drain(&mut group, Instant::now(), &ends),
            [10, 20, 30, 35, 40]
        );
        assert_eq!(group.buffered(), 0);
    }

    #[test]
    fn an_empty_partition_that_lags_holds_the_others_back_for_max_task_idle_only() {
        let mut group = group_with(&[(0, 0, 10), (2, 0, 30)]);
        // Partition 1 is empty but its log goes on to offset 5: it may hold earlier records.
        let ends = Ends(HashMap::from([
            (("btc".into(), 0), 1),
            (("btc".into(), 1), 5),
            (("btc".into(), 2), 1),
        ]));
        let start = group.queues[1].empty_since;
        assert!(drain(&mut group, start, &ends).is_empty(), "waits");
        let mut enforced = false;
        let late = start + Duration::from_millis(100);
        let next = group
            .next(late, &ends, true, &mut enforced)
            .expect("goes ahead");
        assert_eq!((next.timestamp, enforced), (Some(10), true));
    }

    #[test]
    fn an_empty_partition_at_its_end_holds_nothing_back_and_unknown_ends_are_waited_for() {
        let mut group = group_with(&[(0, 0, 10)]);
        let at_end = Ends(HashMap::from([
            (("btc".into(), 0), 1),
            (("btc".into(), 1), 0),
            (("btc".into(), 2), 0),
        ]));
        assert!(
            !group.may_bypass("btc", 1, &at_end),
            "something is buffered"
        );
        assert_eq!(drain(&mut group, Instant::now(), &at_end), [10]);
        assert!(group.may_bypass("btc", 0, &at_end));
        let unknown = Ends(HashMap::new());
        assert!(
            !group_with(&[]).may_bypass("btc", 0, &unknown),
            "no fetch answered yet"
        );
        let mut group = group_with(&[(0, 0, 10)]);
        let start = group.queues[1].empty_since;
        let mut enforced = false;
        let soon = start + Duration::from_secs(1);
        assert!(
            group.next(soon, &unknown, true, &mut enforced).is_none(),
            "an unknown end is waited for"
        );
        let later = start + UNKNOWN_END_WAIT + Duration::from_millis(1);
        assert!(group.next(later, &unknown, true, &mut enforced).is_some() && enforced);
    }

    #[test]
    fn a_partition_with_much_buffered_is_paused_and_resumed_once_drained() {
        let records: Vec<(i32, i64, i64)> = (0..PAUSE_AT as i64).map(|o| (0, o, o)).collect();
        let mut group = group_with(&records);
        let (pause, resume) = group.flow_changes();
        assert_eq!((pause.len(), resume.len()), (1, 0));
        assert_eq!(group.flow_changes(), (Vec::new(), Vec::new()), "once");
        let ends = Ends(HashMap::from([
            (("btc".into(), 0), PAUSE_AT as i64),
            (("btc".into(), 1), 0),
            (("btc".into(), 2), 0),
        ]));
        let mut enforced = false;
        for _ in 0..(PAUSE_AT - RESUME_AT) {
            group
                .next(Instant::now(), &ends, false, &mut enforced)
                .expect("a record");
        }
        let (pause, resume) = group.flow_changes();
        assert_eq!((pause.len(), resume.len()), (0, 1));
    }

    #[test]
    fn a_lagging_partition_is_only_waited_out_when_the_consumer_is_idle() {
        let mut group = group_with(&[(0, 0, 10)]);
        let ends = Ends(HashMap::from([
            (("btc".into(), 0), 1),
            (("btc".into(), 1), 5),
            (("btc".into(), 2), 0),
        ]));
        let late = group.queues[1].empty_since + Duration::from_secs(1);
        let mut enforced = false;
        assert!(
            group.next(late, &ends, false, &mut enforced).is_none(),
            "more may be fetched"
        );
        assert!(group.next(late, &ends, true, &mut enforced).is_some() && enforced);
    }

    #[test]
    fn clearing_returns_where_each_partition_must_be_read_again() {
        let mut group = group_with(&[(0, 7, 10), (0, 8, 11), (2, 3, 30)]);
        let mut firsts = group.clear();
        firsts.sort();
        assert_eq!(
            firsts,
            [(Arc::from("btc"), 0, 7), (Arc::from("btc"), 2, 3)],
            "the first offset each partition dropped"
        );
        assert_eq!(group.buffered(), 0);
    }
}
