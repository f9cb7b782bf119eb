//! Restoring a task's local state from its changelog partition.
//!
//! Local sled data is trusted only when its checkpoint lies within the changelog's current
//! offsets: sled holds exactly the committed changelog prefix up to the checkpoint (see
//! [`crate::store`]), so replaying from the checkpoint to the end brings it up to date — this
//! also picks up what another instance wrote while it owned the task. A missing checkpoint, or
//! one outside the changelog (the topic was recreated or truncated), means the local data is
//! not trustworthy: wipe it and replay the whole changelog.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::info;

use super::StreamsError;
use super::client::Rebootstrapper;
use crate::config::StreamsConfig;
use crate::metrics::{Health, StreamsMetrics};
use crate::store::TaskTree;

/// One attempt at reading a changelog partition's offsets.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);
/// Records applied to sled per batch (and per progress update).
const BATCH: usize = 10_000;

/// The restore consumer's librdkafka reports, at the level they deserve (a broker restart is
/// no ERROR; see [`crate::ClientLog`]).
pub(crate) type RestoreContext = crate::client_log::LoggingContext;

/// The consumer that reads the changelogs to restore tasks (assigned, never subscribed), and
/// the bootstrap servers it is given again if it finds no broker (`client::Rebootstrapper`).
pub(crate) struct RestoreConsumer {
    consumer: BaseConsumer<RestoreContext>,
    brokers: String,
}

impl RestoreConsumer {
    pub(crate) fn new(config: &StreamsConfig) -> Result<Self, StreamsError> {
        let consumer = super::consumer_client_config(config)
            // librdkafka refuses assign() without a group id; this one never joins or commits.
            .set("group.id", format!("{}-restore", config.application_id))
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .create_with_context(RestoreContext::new("restore consumer"))
            .map_err(|e| StreamsError::kafka("creating the restore consumer", e))?;
        Ok(Self {
            consumer,
            brokers: config.bootstrap_servers.clone(),
        })
    }

    /// A retriable error: if it says no broker answers, maybe re-bootstrap.
    fn retrying(&self, error: &KafkaError, rebootstrapper: &mut Rebootstrapper) {
        if super::is_unreachable(error) {
            rebootstrapper.failed(self.consumer.client(), &self.brokers);
        }
    }
}

/// Leadership moves (a fresh topic, a broker restart) and an unreachable broker answer with a
/// retriable error for a while; those are retried until `patience` runs out, anything else
/// fails at once.
fn fetch_watermarks(
    restore: &RestoreConsumer,
    changelog: &str,
    partition: i32,
    patience: Duration,
    health: &Health,
) -> Result<(i64, i64), KafkaError> {
    let deadline = Instant::now() + patience;
    let mut rebootstrapper = Rebootstrapper::default();
    loop {
        match restore
            .consumer
            .fetch_watermarks(changelog, partition, WATERMARK_TIMEOUT)
        {
            Err(error) if retriable(&error) && Instant::now() < deadline => {
                restore.retrying(&error, &mut rebootstrapper);
                health.heartbeat();
                std::thread::sleep(Duration::from_millis(200));
            }
            result => return result,
        }
    }
}

/// Errors a restarting broker or a moving leader causes, which go away by themselves.
fn retriable(error: &KafkaError) -> bool {
    super::is_unreachable(error)
        || matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::NotLeaderForPartition
                    | RDKafkaErrorCode::LeaderNotAvailable
                    | RDKafkaErrorCode::UnknownTopicOrPartition
            )
        )
}

pub(crate) fn restore_task(
    restore: &RestoreConsumer,
    tree: &TaskTree,
    changelog: &str,
    partition: i32,
    metrics: &StreamsMetrics,
    health: &Health,
    patience: Duration,
) -> Result<(), StreamsError> {
    let fail = |problem: String| StreamsError::Restore {
        changelog: changelog.to_owned(),
        partition,
        problem,
    };
    let (low, high) = fetch_watermarks(restore, changelog, partition, patience, health)
        .map_err(|e| fail(format!("cannot read its offsets: {e}")))?;
    let start = match tree.checkpoint()? {
        Some(checkpoint) if (low..=high).contains(&checkpoint) => checkpoint,
        checkpoint => {
            if checkpoint.is_some() || low < high {
                info!(
                    changelog,
                    partition,
                    ?checkpoint,
                    low,
                    high,
                    "local state not usable: wiping and restoring in full"
                );
            }
            tree.wipe()?;
            low
        }
    };
    let remaining_gauge = metrics
        .restore_remaining
        .with_label_values(&[tree.name(), &partition.to_string()]);
    if start >= high {
        remaining_gauge.set(0);
        return Ok(());
    }
    let started = Instant::now();
    let consumer = &restore.consumer;
    let mut rebootstrapper = Rebootstrapper::default();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(changelog, partition, Offset::Offset(start))
        .map_err(|e| fail(e.to_string()))?;
    consumer
        .assign(&assignment)
        .map_err(|e| fail(format!("cannot assign: {e}")))?;

    let restored = metrics.restore_records.with_label_values(&[tree.name()]);
    let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(BATCH);
    let mut next = start;
    let mut total = 0u64;
    let mut last_progress = Instant::now();
    let apply = |batch: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>, next: i64| {
        tree.apply(
            batch.iter().map(|(k, v)| (&k[..], v.as_deref())),
            Some(next),
        )?;
        restored.inc_by(batch.len() as u64);
        remaining_gauge.set((high - next).max(0));
        batch.clear();
        Ok::<(), StreamsError>(())
    };
    // Under read_committed the end is the last stable offset; librdkafka reports it as EOF.
    while next < high {
        // Restoring is progress too (it may wait out a broker restart): stay alive.
        health.heartbeat();
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if let Some(key) = message.key() {
                    batch.push((key.to_vec(), message.payload().map(<[u8]>::to_vec)));
                }
                next = message.offset() + 1;
                total += 1;
                last_progress = Instant::now();
                if batch.len() >= BATCH {
                    apply(&mut batch, next)?;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break,
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            // The broker restarting under a restore: librdkafka reconnects and goes on.
            Some(Err(error)) if retriable(&error) && last_progress.elapsed() <= patience => {
                restore.retrying(&error, &mut rebootstrapper);
            }
            Some(Err(error)) => return Err(fail(error.to_string())),
            None if last_progress.elapsed() > patience => {
                return Err(fail(format!(
                    "no progress for {patience:?} (processing.give_up_after) at offset {next} of \
                     {high}; is the broker up?"
                )));
            }
            None => {}
        }
    }
    apply(&mut batch, next)?;
    remaining_gauge.set(0);
    consumer
        .unassign()
        .map_err(|e| fail(format!("cannot unassign: {e}")))?;
    info!(
        changelog,
        partition,
        from = start,
        records = total,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "state restored"
    );
    Ok(())
}
