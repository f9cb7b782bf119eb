//! A stream task: one processor instance, its store, and its input positions; and [`Tasks`],
//! the tasks of one instance, handled one way on both transports.

use std::collections::{BTreeMap, HashMap};

use crate::processor::{
    Collector, ProcessError, Processor, ProcessorContext, PunctuationType, Record, Rejection,
    TaskId,
};
use crate::store::{Change, KeyValueStore, StoreError};

/// What became of one input record.
#[derive(Debug)]
pub(crate) enum Outcome {
    Processed,
    /// The processor refused it; the caller routes it to the dead-letter topic.
    Rejected(Rejection),
}

pub(crate) struct StreamTask<P: Processor> {
    id: TaskId,
    processor: P,
    store: KeyValueStore<P::State>,
    /// Next offset to read, per input topic, as processed (not yet committed).
    positions: Vec<(String, i64)>,
    /// Positions as of the last commit: where to rewind to when a transaction aborts.
    committed: Vec<(String, i64)>,
    /// The largest record timestamp seen (Kafka Streams' stream time).
    stream_time: Option<i64>,
    next_punctuation: Option<i64>,
}

fn set_position(positions: &mut Vec<(String, i64)>, topic: &str, offset: i64) {
    match positions.iter_mut().find(|(t, _)| t == topic) {
        Some((_, position)) => *position = offset,
        None => positions.push((topic.to_owned(), offset)),
    }
}

impl<P: Processor> StreamTask<P> {
    pub(crate) fn new(id: TaskId, processor: P, store: KeyValueStore<P::State>) -> Self {
        Self {
            id,
            processor,
            store,
            positions: Vec::new(),
            committed: Vec::new(),
            stream_time: None,
            next_punctuation: None,
        }
    }

    pub(crate) fn id(&self) -> TaskId {
        self.id
    }

    pub(crate) fn store_mut(&mut self) -> &mut KeyValueStore<P::State> {
        &mut self.store
    }

    /// Runs the processor on one record and advances this task's position past it, also when
    /// the record is rejected (a rejected record is consumed: it goes to the dead-letter topic).
    pub(crate) fn process(
        &mut self,
        record: &Record<'_>,
        collector: &mut dyn Collector,
    ) -> Result<Outcome, StoreError> {
        self.advance(record);
        if let Some(ts) = record.timestamp {
            self.stream_time = Some(self.stream_time.map_or(ts, |t| t.max(ts)));
        }
        let mut ctx = ProcessorContext {
            task: self.id,
            store: &mut self.store,
            collector,
            timestamp: record.timestamp,
        };
        let outcome = match self.processor.process(record, &mut ctx) {
            Ok(()) => Outcome::Processed,
            Err(ProcessError::Rejected(rejection)) => Outcome::Rejected(rejection),
            Err(ProcessError::Store(error)) => return Err(error),
        };
        if let (Some((PunctuationType::StreamTime, interval)), Some(now)) =
            (self.processor.punctuation(), self.stream_time)
        {
            self.punctuate_if_due(now, interval.as_millis() as i64, collector)?;
        }
        Ok(outcome)
    }

    /// Moves this task's position past `record` without processing it: it was forwarded (to
    /// the repartition topic) or dead-lettered before reaching the processor.
    pub(crate) fn advance(&mut self, record: &Record<'_>) {
        if !self.committed.iter().any(|(t, _)| t == record.topic) {
            // First record of this input since assignment: it sits at the committed offset.
            self.committed
                .push((record.topic.to_owned(), record.offset));
        }
        set_position(&mut self.positions, record.topic, record.offset + 1);
    }

    /// The key of the state `record` updates ([`Processor::state_key`]).
    pub(crate) fn state_key(
        &mut self,
        record: &Record<'_>,
        key: &mut Vec<u8>,
    ) -> Result<(), Rejection> {
        self.processor.state_key(record, key)
    }

    /// Every input ended: the processor's [`Processor::end_of_input`].
    pub(crate) fn end_of_input(&mut self, collector: &mut dyn Collector) -> Result<(), StoreError> {
        let mut ctx = ProcessorContext {
            task: self.id,
            store: &mut self.store,
            collector,
            timestamp: self.stream_time,
        };
        self.processor.end_of_input(&mut ctx)
    }

    /// Fires a wall-clock punctuation if one is due (called between records and when idle).
    pub(crate) fn punctuate_wall_clock(
        &mut self,
        now_ms: i64,
        collector: &mut dyn Collector,
    ) -> Result<(), StoreError> {
        match self.processor.punctuation() {
            Some((PunctuationType::WallClock, interval)) => {
                self.punctuate_if_due(now_ms, interval.as_millis() as i64, collector)
            }
            _ => Ok(()),
        }
    }

    fn punctuate_if_due(
        &mut self,
        now: i64,
        interval: i64,
        collector: &mut dyn Collector,
    ) -> Result<(), StoreError> {
        let interval = interval.max(1);
        let due = *self
            .next_punctuation
            .get_or_insert(now - now.rem_euclid(interval) + interval);
        if now >= due {
            self.next_punctuation = Some(now - now.rem_euclid(interval) + interval);
            let mut ctx = ProcessorContext {
                task: self.id,
                store: &mut self.store,
                collector,
                timestamp: Some(now),
            };
            self.processor.punctuate(now, &mut ctx)?;
        }
        Ok(())
    }

    /// Input positions to commit: `(topic, next offset)` for every input this task has read.
    pub(crate) fn positions(&self) -> &[(String, i64)] {
        &self.positions
    }

    /// Whether anything was processed since the last commit.
    pub(crate) fn has_uncommitted_progress(&self) -> bool {
        self.positions != self.committed || self.store.dirty_len() > 0
    }

    /// The commit holding this task's work succeeded.
    pub(crate) fn committed(&mut self) {
        self.committed.clone_from(&self.positions);
    }

    /// The commit failed: forget uncommitted state and return where to rewind each input.
    pub(crate) fn rollback(&mut self) -> Vec<(String, i64)> {
        self.store.rollback();
        self.processor.rolled_back();
        self.positions.clone_from(&self.committed);
        self.committed.clone()
    }
}

/// Every task's encoded state changes, staged for a commit.
pub(crate) type StagedChanges = Vec<(TaskId, Vec<Change>)>;

/// The tasks of one application instance, by id: one way, on both transports, to create them,
/// process through them, commit and close them. On Kafka the task manager adds assignment,
/// revocation and restoration around it; the in-process transport creates every task up front.
/// A commit is `prepare_commit` → (the transport makes the batch durable) → `post_commit`, or
/// `rollback` when it could not.
pub(crate) struct Tasks<P: Processor> {
    tasks: BTreeMap<TaskId, StreamTask<P>>,
}

impl<P: Processor> Default for Tasks<P> {
    fn default() -> Self {
        Self {
            tasks: BTreeMap::new(),
        }
    }
}

impl<P: Processor> Tasks<P> {
    pub(crate) fn create(&mut self, id: TaskId, processor: P, store: KeyValueStore<P::State>) {
        self.tasks.insert(id, StreamTask::new(id, processor, store));
    }

    pub(crate) fn contains(&self, id: TaskId) -> bool {
        self.tasks.contains_key(&id)
    }

    pub(crate) fn get_mut(&mut self, id: TaskId) -> Option<&mut StreamTask<P>> {
        self.tasks.get_mut(&id)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut StreamTask<P>> {
        self.tasks.values_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Closes the task `id` (its uncommitted work is dropped); whether it was running.
    pub(crate) fn close(&mut self, id: TaskId) -> bool {
        self.tasks.remove(&id).is_some()
    }

    pub(crate) fn close_all(&mut self) {
        self.tasks.clear();
    }

    /// Whether any task processed something since the last commit.
    pub(crate) fn commit_needed(&self) -> bool {
        self.tasks
            .values()
            .any(StreamTask::has_uncommitted_progress)
    }

    /// Input positions to commit: `(topic, partition, next offset)` of every task's inputs.
    pub(crate) fn positions(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.tasks.values().flat_map(|task| {
            task.positions()
                .iter()
                .map(move |(topic, position)| (topic.as_str(), task.id().0, *position))
        })
    }

    /// The input flows again after an outage: each task's [`Processor::input_resumed`].
    pub(crate) fn input_resumed(&mut self, now_ms: i64) {
        for task in self.tasks.values_mut() {
            task.processor.input_resumed(now_ms);
        }
    }

    /// Every input ended: each task's [`Processor::end_of_input`].
    pub(crate) fn end_of_input(&mut self, collector: &mut dyn Collector) -> Result<(), StoreError> {
        for task in self.tasks.values_mut() {
            task.end_of_input(collector)?;
        }
        Ok(())
    }

    /// Fires the wall-clock punctuations that are due.
    pub(crate) fn punctuate_wall_clock(
        &mut self,
        now_ms: i64,
        collector: &mut dyn Collector,
    ) -> Result<(), StoreError> {
        for task in self.tasks.values_mut() {
            task.punctuate_wall_clock(now_ms, collector)?;
        }
        Ok(())
    }

    /// The first step of a commit: every task's state changes, encoded (for the changelog).
    pub(crate) fn prepare_commit(&mut self) -> StagedChanges {
        self.tasks
            .values_mut()
            .map(|task| (task.id(), task.store_mut().dirty_changes()))
            .collect()
    }

    /// The batch holding `staged` is durable: the changes go to each task's store, with the
    /// changelog checkpoint when the transport has one (the offset after the last written, per
    /// task), and the tasks' positions become their committed ones.
    pub(crate) fn post_commit(
        &mut self,
        staged: &StagedChanges,
        changelog_end: &HashMap<i32, i64>,
    ) -> Result<(), StoreError> {
        for (id, changes) in staged {
            let Some(task) = self.tasks.get_mut(id) else {
                continue;
            };
            let checkpoint = changelog_end.get(&id.0).map(|last| last + 1);
            task.store_mut().commit(changes, checkpoint)?;
            task.committed();
        }
        Ok(())
    }

    /// The batch could not be made durable: every task forgets its uncommitted state. Returns
    /// where to rewind each input partition a task read: its last committed position.
    pub(crate) fn rollback(&mut self) -> BTreeMap<(String, i32), i64> {
        let mut positions = BTreeMap::new();
        for task in self.tasks.values_mut() {
            for (topic, offset) in task.rollback() {
                positions.insert((topic, task.id().0), offset);
            }
        }
        positions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::CountingProcessor;

    fn record<'a>(offset: i64, key: Option<&'a [u8]>) -> Record<'a> {
        Record {
            topic: "in",
            partition: 0,
            offset,
            timestamp: Some(offset),
            key,
            value: Some(b"v"),
        }
    }

    #[test]
    fn rejected_records_advance_the_position_and_rollback_rewinds_to_the_last_commit() {
        let mut task = StreamTask::new(
            TaskId(0),
            CountingProcessor::new("counts"),
            KeyValueStore::in_memory("counts"),
        );
        let mut out = Vec::new();
        assert!(matches!(
            task.process(&record(10, Some(b"a")), &mut out),
            Ok(Outcome::Processed)
        ));
        assert!(
            matches!(task.process(&record(11, None), &mut out), Ok(Outcome::Rejected(r)) if r.code == "missing_key")
        );
        assert_eq!(task.positions(), &[("in".to_owned(), 12)]);
        let changes = task.store_mut().dirty_changes();
        task.store_mut().commit(&changes, None).expect("commit");
        task.committed();
        assert!(!task.has_uncommitted_progress());

        task.process(&record(12, Some(b"a")), &mut out)
            .expect("process");
        assert_eq!(task.rollback(), vec![("in".to_owned(), 12)]);
        assert_eq!(
            task.store_mut().get(b"a").expect("get"),
            Some(&1),
            "rollback restores the committed count"
        );
        assert_eq!(
            out.len(),
            2,
            "the collector saw both sends; the transport discards aborted ones"
        );
    }

    /// Emits a tick at every punctuation, with the time it fired at.
    struct Ticking(PunctuationType);

    impl Processor for Ticking {
        type State = u64;
        fn process(
            &mut self,
            _: &Record<'_>,
            _: &mut ProcessorContext<'_, u64>,
        ) -> Result<(), ProcessError> {
            Ok(())
        }
        fn punctuation(&self) -> Option<(PunctuationType, std::time::Duration)> {
            Some((self.0, std::time::Duration::from_millis(100)))
        }
        fn punctuate(
            &mut self,
            time: i64,
            ctx: &mut ProcessorContext<'_, u64>,
        ) -> Result<(), StoreError> {
            ctx.send("ticks", None, time.to_string().as_bytes());
            Ok(())
        }
    }

    fn fired(out: &[crate::processor::Emitted]) -> Vec<String> {
        out.iter()
            .map(|(_, _, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    #[test]
    fn stream_time_punctuation_fires_when_record_timestamps_cross_each_interval() {
        let mut task = StreamTask::new(
            TaskId(0),
            Ticking(PunctuationType::StreamTime),
            KeyValueStore::in_memory("s"),
        );
        let mut out = Vec::new();
        for ts in [1_050, 1_090, 1_100, 1_150, 1_420, 1_410] {
            let record = Record {
                timestamp: Some(ts),
                ..record(0, Some(b"k"))
            };
            task.process(&record, &mut out).expect("process");
        }
        // Armed at 1_100 by the first record; fires at 1_100 and 1_420; a late record (1_410)
        // does not move stream time back.
        assert_eq!(fired(&out), ["1100", "1420"]);
        task.punctuate_wall_clock(5_000, &mut out)
            .expect("no wall-clock schedule");
        assert_eq!(
            out.len(),
            2,
            "a stream-time processor ignores the wall clock"
        );
    }

    #[test]
    fn wall_clock_punctuation_fires_once_per_interval_of_wall_time() {
        let mut task = StreamTask::new(
            TaskId(0),
            Ticking(PunctuationType::WallClock),
            KeyValueStore::in_memory("s"),
        );
        let mut out = Vec::new();
        for now in [10_000, 10_050, 10_100, 10_150, 10_420] {
            task.punctuate_wall_clock(now, &mut out).expect("punctuate");
        }
        assert_eq!(fired(&out), ["10100", "10420"]);
    }
}
