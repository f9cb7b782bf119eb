//! The processor API: what application code implements, with no Kafka in sight.
//!
//! A [`Processor`] sees one [`Record`] at a time, together with a [`ProcessorContext`] that
//! gives it its task's key-value state store and a way to emit records to named output topics.
//! It either accepts the record (`Ok`) or rejects it with a [`Rejection`], which the runtime
//! routes to the dead-letter topic with the reason — a rejection never stops the task.
//!
//! Everything the processor does to its store and every record it emits while handling input
//! becomes visible together, at the next commit, or not at all (exactly-once).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::store::{KeyValueStore, StateCodec, StoreError};

/// A task: the unit of work bound to one partition number of the (co-partitioned) inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub i32);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// One input record, borrowed from the transport for the duration of `process`.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (epoch milliseconds), when the transport has one.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Why a processor refused a record. `code` is short and stable (metrics label, DLQ header);
/// `message` says what is wrong with this record for a human.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub code: Cow<'static, str>,
    pub message: String,
}

impl Rejection {
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Why `process` did not complete: the record is at fault (it goes to the dead-letter topic
/// and the task moves on) or the task's state is (the batch is rolled back and the task stops).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("record rejected: {0}")]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How punctuation time advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunctuationType {
    /// Every interval of wall-clock time, checked between records and on idle polls.
    WallClock,
    /// Whenever the task's stream time (the largest record timestamp seen) crosses the next
    /// multiple of the interval; it only advances when records arrive.
    StreamTime,
}

/// Where emitted records go. The Kafka transport hands them to the (transactional) producer;
/// the in-process transport appends them to in-memory topics; tests can collect them.
pub trait Collector {
    /// Emits one record to `topic`; key-based partitioning decides the partition.
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>);
}

/// A record as a plain `Vec` collector keeps it: `(topic, key, value)`.
pub type Emitted = (String, Option<Vec<u8>>, Vec<u8>);

/// Collects into memory: for testing processors.
impl Collector for Vec<Emitted> {
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], _timestamp: Option<i64>) {
        self.push((topic.to_owned(), key.map(<[u8]>::to_vec), value.to_vec()));
    }
}

/// What a processor may touch while it handles a record or a punctuation.
pub struct ProcessorContext<'a, S: StateCodec> {
    pub(crate) task: TaskId,
    pub(crate) store: &'a mut KeyValueStore<S>,
    pub(crate) collector: &'a mut dyn Collector,
    pub(crate) timestamp: Option<i64>,
}

impl<'a, S: StateCodec> ProcessorContext<'a, S> {
    /// A context over an explicit store and collector: for testing processors without a
    /// transport.
    pub fn new(
        task: TaskId,
        store: &'a mut KeyValueStore<S>,
        collector: &'a mut dyn Collector,
    ) -> Self {
        Self {
            task,
            store,
            collector,
            timestamp: None,
        }
    }

    pub fn task(&self) -> TaskId {
        self.task
    }

    /// The task's state store. Reads see this batch's uncommitted writes.
    pub fn store(&mut self) -> &mut KeyValueStore<S> {
        self.store
    }

    /// Emits a record to `topic`, stamped with the current input record's timestamp.
    pub fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8]) {
        self.collector.send(topic, key, value, self.timestamp);
    }
}

/// Application logic for one task. One instance is created per task (per partition), so a
/// processor may keep per-task fields; durable state belongs in the store.
pub trait Processor: Send {
    /// The store's value type (keys are bytes).
    type State: StateCodec;

    /// Handles one record. `?` works on both store calls and [`Rejection`]s.
    fn process(
        &mut self,
        record: &Record<'_>,
        ctx: &mut ProcessorContext<'_, Self::State>,
    ) -> Result<(), ProcessError>;

    /// The key of the state `record` updates — Kafka Streams' `selectKey` before a stateful
    /// step — written into `key` (cleared first). When the runtime repartitions
    /// ([`crate::StreamsConfig::repartition`]), a source record whose own key differs, or
    /// that sits in another partition than this key's, is re-keyed through the repartition
    /// topic, so one task sees every record of a key. A rejection sends the record to the
    /// dead-letter topic. Default: the record's own key (a record without one is rejected).
    fn state_key(&mut self, record: &Record<'_>, key: &mut Vec<u8>) -> Result<(), Rejection> {
        key.clear();
        match record.key {
            Some(own) => {
                key.extend_from_slice(own);
                Ok(())
            }
            None => Err(Rejection::new(
                "missing_key",
                "the record has no key to repartition by",
            )),
        }
    }

    /// When to call [`Processor::punctuate`], if ever.
    fn punctuation(&self) -> Option<(PunctuationType, Duration)> {
        None
    }

    /// A timer fired at `time` (epoch milliseconds: wall clock or stream time).
    fn punctuate(
        &mut self,
        _time: i64,
        _ctx: &mut ProcessorContext<'_, Self::State>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every input has been read to its end and nothing more will come (in process only: a
    /// replay's or a bounded run's last record; Kafka's topics never end). Called once, after
    /// the last record and before the last commit: what a processor holds back for more input
    /// (an open window, a candle) it may emit now.
    fn end_of_input(
        &mut self,
        _ctx: &mut ProcessorContext<'_, Self::State>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// The input was unreachable (a broker outage: wall-clock punctuations were held back
    /// meanwhile) and flows again at wall clock `now_ms`. A timer that measures how long the
    /// input has been quiet should count from here: what the outage held back is still to
    /// come.
    fn input_resumed(&mut self, _now_ms: i64) {}

    /// The batch since the last commit was undone: the store is back at its committed state
    /// and the records will be processed again. A processor that keeps anything derived from
    /// the store outside it (an index, a cache) must forget it here.
    fn rolled_back(&mut self) {}
}
