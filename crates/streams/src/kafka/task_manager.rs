//! The task manager (Kafka Streams' `TaskManager`): which partitions this instance owns and
//! the task that runs each.
//!
//! Responsibilities, and only these:
//! - **assignment**: a task per assigned partition number (co-partitioned inputs share it),
//!   its state restored from the changelog before it processes anything;
//! - **revocation**: closing the revoked tasks — after the caller committed their work, inside
//!   the rebalance callback, so no other instance takes a partition over before that;
//! - **the tasks** ([`Tasks`], shared with the in-process transport), and the per-task steps
//!   of a commit (prepare: the encoded state changes; post-commit: apply them to the stores
//!   with their changelog checkpoints; rollback);
//! - **closing**: clean (after a final commit, local state made durable) or dirty (after a
//!   failure: uncommitted work is dropped and redone from the last commit);
//! - the `assigned_partitions` gauge, counted one way: the topic-partitions the group assigned
//!   and has not revoked.
//!
//! It neither sends nor commits: the record collector sends, the commit path (`commit.rs`)
//! runs the transaction around [`TaskManager::prepare_commit`] and
//! [`TaskManager::post_commit`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use tracing::{info, info_span};

use super::StreamsError;
use super::restore::{RestoreConsumer, restore_task};
use crate::config::StreamsConfig;
use crate::metrics::{Health, StreamsMetrics};
use crate::processor::{Collector, Processor, TaskId};
use crate::store::{KeyValueStore, StateDir, StoreError};
use crate::task::{StagedChanges, StreamTask, Tasks};

/// Creates the processor of a task; called on every assignment of that task.
pub type ProcessorFactory<P> = Box<dyn Fn(TaskId) -> P + Send + Sync>;

/// What the topics look like, learned at start-up.
pub(crate) struct TopicLayout {
    pub(crate) source_partitions: HashMap<String, i32>,
    pub(crate) tasks: i32,
}

pub(crate) struct TaskManager<P: Processor> {
    application_id: String,
    store_name: String,
    changelog: String,
    give_up_after: Duration,
    /// Partition counts of the source topics, and the task count: tasks `0..tasks` own state.
    layout: TopicLayout,
    factory: ProcessorFactory<P>,
    state: StateDir,
    restore_consumer: RestoreConsumer,
    /// The running tasks (created, processed through, committed and closed as on every
    /// transport: [`Tasks`]).
    tasks: Tasks<P>,
    /// The topic-partitions assigned and not revoked: what the gauge counts.
    assigned: BTreeSet<(String, i32)>,
    metrics: Arc<StreamsMetrics>,
    health: Arc<Health>,
}

impl<P: Processor> TaskManager<P> {
    pub(crate) fn new(
        config: &StreamsConfig,
        layout: TopicLayout,
        factory: ProcessorFactory<P>,
        state: StateDir,
        restore_consumer: RestoreConsumer,
        metrics: Arc<StreamsMetrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            application_id: config.application_id.clone(),
            store_name: config.store_name.clone(),
            changelog: config.changelog_topic(),
            give_up_after: config.give_up_after,
            layout,
            factory,
            state,
            restore_consumer,
            tasks: Tasks::default(),
            assigned: BTreeSet::new(),
            metrics,
            health,
        }
    }

    pub(crate) fn layout(&self) -> &TopicLayout {
        &self.layout
    }

    /// Assignment: creates (and restores) the task of every assigned partition number not
    /// running yet.
    pub(crate) fn handle_assignment(
        &mut self,
        assigned: &TopicPartitionList,
    ) -> Result<(), StreamsError> {
        for element in assigned.elements() {
            self.assigned
                .insert((element.topic().to_owned(), element.partition()));
        }
        self.update_assigned_gauge();
        let partitions: BTreeSet<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
        for partition in partitions {
            if !self.tasks.contains(TaskId(partition)) {
                self.create_task(partition)?;
                info!(task = %TaskId(partition), "task created");
            }
        }
        Ok(())
    }

    /// Revocation: closes the tasks of the revoked partitions. Their work must be committed
    /// (or abandoned) first: what they did not commit is lost here.
    pub(crate) fn handle_revocation(&mut self, revoked: &TopicPartitionList) {
        for element in revoked.elements() {
            self.assigned
                .remove(&(element.topic().to_owned(), element.partition()));
            // librdkafka stops reporting a revoked partition's lag: its last value would stay.
            let _ = self
                .metrics
                .consumer_lag
                .remove_label_values(&[element.topic(), element.partition().to_string().as_str()]);
            let id = TaskId(element.partition());
            if self.tasks.close(id) {
                let _span = self.task_span(id).entered();
                info!("task closed (partition revoked)");
            }
        }
        self.update_assigned_gauge();
    }

    /// Whether any partition is assigned (an instance of a group with more instances than
    /// partitions may have none).
    pub(crate) fn has_assignment(&self) -> bool {
        !self.assigned.is_empty()
    }

    fn update_assigned_gauge(&self) {
        self.metrics
            .assigned_partitions
            .set(i64::try_from(self.assigned.len()).unwrap_or(i64::MAX));
    }

    fn task_span(&self, id: TaskId) -> tracing::Span {
        info_span!("task", application = %self.application_id, task = %id)
    }

    /// The task of `partition`, created if the assignment has not created it yet (a record
    /// racing the callback).
    pub(crate) fn task_for(&mut self, partition: i32) -> Result<&mut StreamTask<P>, StreamsError> {
        let id = TaskId(partition);
        if !self.tasks.contains(id) {
            self.create_task(partition)?;
        }
        self.tasks.get_mut(id).ok_or_else(|| {
            StreamsError::Runtime(format!(
                "no task for partition {partition} after creating it"
            ))
        })
    }

    /// Creates the task for `partition`, restoring its state from the changelog first. A
    /// task beyond the task count (a source topic with more partitions, all of whose records
    /// are repartitioned) only forwards: it gets an empty in-memory store.
    fn create_task(&mut self, partition: i32) -> Result<(), StreamsError> {
        let id = TaskId(partition);
        if partition >= self.layout.tasks {
            let store = KeyValueStore::in_memory(&self.store_name);
            self.tasks.create(id, (self.factory)(id), store);
            return Ok(());
        }
        // Everything logged while the task is set up (restoration included) carries its id.
        let _span = self.task_span(id).entered();
        let tree = self.state.task_tree(&self.store_name, partition)?;
        restore_task(
            &self.restore_consumer,
            &tree,
            &self.changelog,
            partition,
            &self.metrics,
            &self.health,
            self.give_up_after,
        )?;
        self.tasks
            .create(id, (self.factory)(id), KeyValueStore::persistent(tree));
        Ok(())
    }

    // The per-task steps of a commit, as on every transport ([`Tasks`]).

    pub(crate) fn commit_needed(&self) -> bool {
        self.tasks.commit_needed()
    }

    pub(crate) fn positions(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.tasks.positions()
    }

    pub(crate) fn punctuate_wall_clock(
        &mut self,
        now_ms: i64,
        collector: &mut dyn Collector,
    ) -> Result<(), StoreError> {
        self.tasks.punctuate_wall_clock(now_ms, collector)
    }

    /// An outage ended: every task's [`Processor::input_resumed`].
    pub(crate) fn input_resumed(&mut self, now_ms: i64) {
        self.tasks.input_resumed(now_ms);
    }

    pub(crate) fn prepare_commit(&mut self) -> StagedChanges {
        self.tasks.prepare_commit()
    }

    /// The transaction holding `staged` committed; `changelog_end`: the last changelog offset
    /// it wrote per task, whose successor becomes the store's checkpoint.
    pub(crate) fn post_commit(
        &mut self,
        staged: &StagedChanges,
        changelog_end: &HashMap<i32, i64>,
    ) -> Result<(), StoreError> {
        self.tasks.post_commit(staged, changelog_end)
    }

    pub(crate) fn rollback(&mut self) -> BTreeMap<(String, i32), i64> {
        self.tasks.rollback()
    }

    /// Bytes of local state on disk (a gauge, refreshed after each commit).
    pub(crate) fn state_bytes(&self) -> u64 {
        self.state.size_on_disk()
    }

    /// Clean shutdown, after the last commit: closes every task and makes local state durable.
    pub(crate) fn close_clean(&mut self) -> Result<(), StoreError> {
        self.close_dirty();
        self.state.flush()
    }

    /// After a failure: closes every task without committing anything. Their uncommitted work
    /// is redone from the last commit by whichever instance owns the partitions next; local
    /// state (sled) only ever holds committed work, so it stays valid.
    pub(crate) fn close_dirty(&mut self) {
        self.tasks.close_all();
        self.assigned.clear();
        self.update_assigned_gauge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::CountingProcessor;

    /// A task manager whose tasks all forward (task count 0): none restores, so no broker.
    fn forwarding_only(
        state: StateDir,
        metrics: &Arc<StreamsMetrics>,
    ) -> TaskManager<CountingProcessor> {
        let config = StreamsConfig::new("gauge", "127.0.0.1:1", &["in"]);
        let restore_consumer =
            RestoreConsumer::new(&config).expect("creating a consumer needs no broker");
        let layout = TopicLayout {
            source_partitions: HashMap::from([("in".to_owned(), 2)]),
            tasks: 0,
        };
        TaskManager::new(
            &config,
            layout,
            Box::new(|_| CountingProcessor::new("out")),
            state,
            restore_consumer,
            Arc::clone(metrics),
            Arc::new(Health::default()),
        )
    }

    fn partitions(list: &[(&str, i32)]) -> TopicPartitionList {
        let mut partitions = TopicPartitionList::new();
        for (topic, partition) in list {
            partitions.add_partition(topic, *partition);
        }
        partitions
    }

    #[test]
    fn the_assigned_partitions_gauge_counts_topic_partitions_on_assign_and_on_revoke() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path(), "gauge").expect("state dir");
        let metrics = Arc::new(StreamsMetrics::new("gauge"));
        let mut manager = forwarding_only(state, &metrics);
        // Partition 0 of two inputs is one task (co-partitioned), but two assigned partitions.
        let assigned = partitions(&[("in", 0), ("in", 1), ("gauge-repartition", 0)]);
        manager.handle_assignment(&assigned).expect("assign");
        assert_eq!(metrics.assigned_partitions.get(), 3);
        assert_eq!(manager.tasks.len(), 2, "one task per partition number");

        manager.handle_revocation(&partitions(&[("in", 1)]));
        assert_eq!(
            metrics.assigned_partitions.get(),
            2,
            "counted the same way on revoke"
        );
        assert_eq!(manager.tasks.len(), 1);

        manager.handle_revocation(&partitions(&[("in", 0), ("gauge-repartition", 0)]));
        assert_eq!(metrics.assigned_partitions.get(), 0);
        assert_eq!(manager.tasks.len(), 0);
    }
}
