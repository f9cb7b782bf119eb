//! The Kafka layer: consume (read_committed) → batch (by count and time) → bulk write →
//! dead-letter what cannot be stored → commit the batch's offsets, only after MongoDB
//! acknowledged it. A crash anywhere before the commit re-reads the batch; the deterministic
//! `_id`s turn the second write into duplicates, never into second copies.
//!
//! Rebalances: every batch commits as soon as it is written, so what was written is committed
//! before a partition can move. Records of a revoked partition that are buffered but not yet
//! written are dropped from the batch, uncommitted: the partition's new owner re-reads them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tickstream_model::Topology;
use tickstream_streams::{Health, Record, dlq_headers};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::availability::{
    Retry, WriteTask, mongodb_down, mongodb_up, wait_or_stop, write_acknowledged,
};
use crate::backoff::Backoff;
use crate::batch::{Batch, DeadLetter, PartitionKey};
use crate::document::DocumentMapper;
use crate::metrics::SinkMetrics;
use crate::writer::{MongoWriter, SinkError, WriteReport};

/// How often the lag gauges are refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// With nothing to write for this long, the sink pings MongoDB so readiness stays truthful.
const IDLE_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long an idle ping may take before MongoDB counts as unavailable.
const IDLE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reason code of documents MongoDB refused for their content.
pub const MONGODB_REJECTED: &str = "mongodb_rejected";

/// How the sink consumes and batches.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub brokers: String,
    /// Consumer group and DLQ `tickstream.application` header: `<application_id>-sink`.
    pub group_id: String,
    pub topics: Vec<String>,
    pub dead_letter_topic: String,
    /// Write a batch once it holds this many records…
    pub batch_size: usize,
    /// …or this long after its first record arrived.
    pub batch_interval: Duration,
    /// Backoff while MongoDB is unreachable: from `initial`, doubling up to `max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// On SIGTERM with MongoDB down, give up on the in-flight batch (uncommitted, so it is
    /// re-read on restart) after this long.
    pub shutdown_grace: Duration,
    /// Extra librdkafka settings (security), applied to the consumer and the DLQ producer.
    pub kafka_settings: Vec<(String, String)>,
}

impl SinkConfig {
    pub fn from_topology(topology: &Topology, brokers: &str) -> Self {
        let mapper = DocumentMapper::new(topology);
        Self {
            brokers: brokers.to_owned(),
            group_id: format!("{}-sink", topology.application_id),
            topics: mapper.topics(),
            dead_letter_topic: topology.topics.dead_letter.clone(),
            batch_size: topology.mongodb.batch_size.max(1),
            batch_interval: topology.mongodb.batch_interval,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            kafka_settings: Vec::new(),
        }
    }
}

/// Tracks the assignment for the processing loop (rebalance callbacks run inside `recv`)
/// and logs asynchronous commits that failed.
#[derive(Default)]
struct SinkContext {
    assigned: Mutex<HashSet<PartitionKey>>,
    revision: AtomicU64,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            warn!(%error, "offset commit failed; the next batch's commit covers it");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
        match rebalance {
            Rebalance::Assign(list) => {
                for e in list.elements() {
                    assigned.insert((e.topic().to_owned(), e.partition()));
                }
            }
            Rebalance::Revoke(list) => {
                for e in list.elements() {
                    assigned.remove(&(e.topic().to_owned(), e.partition()));
                }
            }
            Rebalance::Error(error) => warn!(%error, "rebalance failed"),
        }
        info!(partitions = assigned.len(), "sink assignment changed");
        self.revision.fetch_add(1, Ordering::Release);
    }
}

/// The sink process: Kafka in, MongoDB out.
pub struct KafkaSink {
    config: SinkConfig,
    mapper: DocumentMapper,
    writer: MongoWriter,
    metrics: Arc<SinkMetrics>,
    health: Arc<Health>,
    last_lag_update: Mutex<Option<Instant>>,
}

impl KafkaSink {
    pub fn new(
        config: SinkConfig,
        topology: &Topology,
        writer: MongoWriter,
        metrics: Arc<SinkMetrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            config,
            mapper: DocumentMapper::new(topology),
            writer,
            metrics,
            health,
            last_lag_update: Mutex::new(None),
        }
    }

    /// `defaults`, then the configured librdkafka settings, which win.
    fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.config.brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.config.kafka_settings {
            config.set(key, value);
        }
        config
    }

    /// Runs until `shutdown` completes; then writes and commits the in-flight batch and
    /// returns. `Err` only when the batch could not be written within the shutdown grace
    /// (nothing is committed then: it is re-read on restart) or Kafka cannot be set up.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SinkError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });

        let consumer: Arc<StreamConsumer<SinkContext>> = self
            .client_config(&[
                ("group.id", &self.config.group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "earliest"),
                // A crashed sink's partitions move on (or come back to it) within 10 s.
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "3000"),
            ])
            .create_with_context(SinkContext::default())
            .map(Arc::new)?;
        let producer: FutureProducer = self
            .client_config(&[("enable.idempotence", "true"), ("acks", "all")])
            .create()?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        info!(group = %self.config.group_id, ?topics, "sink subscribed");

        let mut backoff = Backoff::new(
            self.config.backoff_initial,
            self.config.backoff_max,
            u64::from(std::process::id()) ^ now_nanos(),
        );
        // Indexes first: the queries need them, and it proves MongoDB answers.
        loop {
            match self.writer.ensure_indexes().await {
                Ok(()) => break,
                Err(error) => {
                    mongodb_down(&self.metrics, &self.health, &error);
                    self.health.heartbeat();
                    if wait_or_stop(backoff.next_delay(), &stop_rx).await {
                        return Ok(());
                    }
                }
            }
        }
        backoff.reset();
        mongodb_up(&self.metrics, &self.health);

        let mut batch = Batch::default();
        // At most one batch is being written while the next one fills: commits stay in
        // offset order, and consuming overlaps the write.
        let mut in_flight: Option<WriteTask> = None;
        let mut seen_revision = 0;
        let mut stop_rx_loop = stop_rx.clone();
        let mut messages = consumer.stream();
        let mut last_contact = Instant::now();
        loop {
            self.health.heartbeat();
            let stopping = *stop_rx_loop.borrow();
            if !stopping {
                let deadline = batch
                    .started
                    .map(|s| s + self.config.batch_interval)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                let written = tokio::select! {
                    joined = async {
                        match in_flight.as_mut() {
                            Some(task) => task.await,
                            None => std::future::pending().await,
                        }
                    } => Some(joined),
                    _ = stop_rx_loop.changed() => None,
                    _ = tokio::time::sleep_until(deadline.into()) => None,
                    message = messages.next() => {
                        // What librdkafka already fetched joins the batch without another
                        // trip through select! (and its timer) per record.
                        let mut next = message;
                        while let Some(result) = next {
                            match result {
                                Ok(message) => push_message(&mut batch, &self.mapper, &message),
                                Err(error) => {
                                    warn!(%error, "consuming failed; retrying");
                                    break;
                                }
                            }
                            if batch.records >= self.config.batch_size {
                                break;
                            }
                            next = messages.next().now_or_never().flatten();
                        }
                        None
                    }
                };
                if let Some(joined) = written {
                    in_flight = None;
                    self.finish(joined, &consumer, &producer, &mut backoff, &stop_rx)
                        .await?;
                    last_contact = Instant::now();
                }
                if batch.is_empty()
                    && in_flight.is_none()
                    && last_contact.elapsed() >= IDLE_PROBE_INTERVAL
                {
                    self.probe_idle().await;
                    last_contact = Instant::now();
                }
            }
            let revision = consumer.context().revision.load(Ordering::Acquire);
            if revision != seen_revision {
                seen_revision = revision;
                let assigned = consumer
                    .context()
                    .assigned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                batch.retain_assigned(&assigned);
            }
            let stopping = *stop_rx_loop.borrow();
            let due = batch
                .started
                .is_some_and(|s| s.elapsed() >= self.config.batch_interval);
            if !batch.is_empty() && (stopping || due || batch.records >= self.config.batch_size) {
                if let Some(task) = in_flight.take() {
                    self.finish(task.await, &consumer, &producer, &mut backoff, &stop_rx)
                        .await?;
                }
                let full = std::mem::take(&mut batch);
                in_flight = Some(tokio::spawn(write_acknowledged(
                    self.writer.clone(),
                    full,
                    Retry {
                        metrics: Arc::clone(&self.metrics),
                        health: Arc::clone(&self.health),
                        stop_rx: stop_rx.clone(),
                        shutdown_grace: self.config.shutdown_grace,
                        backoff: backoff.clone(),
                    },
                )));
            } else if batch.is_empty() {
                batch.started = None;
            }
            if stopping {
                if let Some(task) = in_flight.take() {
                    self.finish(task.await, &consumer, &producer, &mut backoff, &stop_rx)
                        .await?;
                }
                info!("sink stopped: in-flight batch written and committed");
                return Ok(());
            }
        }
    }

    /// With nothing to write, nothing else would notice MongoDB leaving (or coming back):
    /// ask it, so `/readyz` and `mongodb_up` tell the truth while idle too.
    async fn probe_idle(&self) {
        match tokio::time::timeout(IDLE_PROBE_TIMEOUT, self.writer.ping()).await {
            Ok(Ok(())) => mongodb_up(&self.metrics, &self.health),
            Ok(Err(error)) => mongodb_down(&self.metrics, &self.health, &error),
            Err(_) => mongodb_down(
                &self.metrics,
                &self.health,
                &SinkError::Config(format!("no answer to a ping within {IDLE_PROBE_TIMEOUT:?}")),
            ),
        }
    }

    /// After a batch's write was acknowledged: counts, dead-letters and commits it.
    async fn finish(
        &self,
        joined: Result<Result<(Batch, WriteReport), SinkError>, tokio::task::JoinError>,
        consumer: &Arc<StreamConsumer<SinkContext>>,
        producer: &FutureProducer,
        backoff: &mut Backoff,
        stop_rx: &watch::Receiver<bool>,
    ) -> Result<(), SinkError> {
        let (batch, report) = joined
            .map_err(|e| SinkError::Config(format!("the MongoDB write task failed: {e}")))??;
        self.count(&report);

        let mut dead_letters = batch.dead_letters;
        for rejected in &report.rejected {
            let origin = &batch.origins[rejected.index];
            dead_letters.push(DeadLetter {
                topic: origin.topic.to_string(),
                partition: origin.partition,
                offset: origin.offset,
                key: origin.key.clone(),
                value: origin.value.clone(),
                code: MONGODB_REJECTED.to_owned(),
                message: rejected.message.clone(),
            });
        }
        self.dead_letter(&dead_letters, producer, backoff).await;
        let mode = if *stop_rx.borrow() {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        self.commit(&batch.offsets, consumer, mode);
        Ok(())
    }

    fn count(&self, report: &WriteReport) {
        for (collection, n) in &report.written {
            self.metrics
                .documents_written
                .with_label_values(&[collection])
                .inc_by(*n);
        }
        for (collection, n) in &report.duplicates {
            self.metrics
                .duplicates
                .with_label_values(&[collection])
                .inc_by(*n);
        }
        debug!(
            written = report.total_written(),
            duplicates = report.total_duplicates(),
            rejected = report.rejected.len(),
            "batch written"
        );
    }

    /// Sends every dead letter and waits for the broker's acknowledgement, retrying: a record
    /// whose offset is committed must be either in MongoDB or on the dead-letter topic.
    async fn dead_letter(
        &self,
        dead_letters: &[DeadLetter],
        producer: &FutureProducer,
        backoff: &mut Backoff,
    ) {
        for letter in dead_letters {
            let headers = dlq_headers::headers(
                &letter.code,
                &letter.message,
                &letter.topic,
                letter.partition,
                letter.offset,
                &self.config.group_id,
            )
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            });
            loop {
                let mut record = FutureRecord::<[u8], [u8]>::to(&self.config.dead_letter_topic)
                    .headers(headers.clone());
                if let Some(key) = &letter.key {
                    record = record.key(key.as_slice());
                }
                if let Some(value) = &letter.value {
                    record = record.payload(value.as_slice());
                }
                match producer.send(record, Duration::from_secs(30)).await {
                    Ok(_) => {
                        self.metrics
                            .dead_letter_records
                            .with_label_values(&[&letter.code])
                            .inc();
                        warn!(
                            topic = %letter.topic,
                            partition = letter.partition,
                            offset = letter.offset,
                            code = %letter.code,
                            reason = %letter.message,
                            "record sent to the dead-letter topic"
                        );
                        break;
                    }
                    Err((error, _)) => {
                        warn!(%error, topic = %self.config.dead_letter_topic, "dead-letter send failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
        backoff.reset();
    }

    /// Commits the batch's offsets: asynchronously while running (the write is already
    /// acknowledged; a lost commit only means a re-read batch, i.e. duplicates), synchronously
    /// for the last batch before exiting. A failure is logged, not fatal: the next commit
    /// covers these offsets too.
    fn commit(
        &self,
        offsets: &HashMap<PartitionKey, i64>,
        consumer: &Arc<StreamConsumer<SinkContext>>,
        mode: CommitMode,
    ) {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*next))
            {
                warn!(%error, %topic, partition, "cannot build the offset commit");
                return;
            }
        }
        let result = match mode {
            CommitMode::Sync => tokio::task::block_in_place(|| consumer.commit(&list, mode)),
            CommitMode::Async => consumer.commit(&list, mode),
        };
        match result {
            Ok(()) => {
                self.metrics.commits.inc();
                self.update_lag(offsets, consumer);
            }
            Err(error) => warn!(%error, "offset commit failed; the next batch's commit covers it"),
        }
    }

    /// Lag per partition: the high watermark (asked off the async threads, at most every
    /// few seconds) minus the next offset to write.
    fn update_lag(
        &self,
        offsets: &HashMap<PartitionKey, i64>,
        consumer: &Arc<StreamConsumer<SinkContext>>,
    ) {
        {
            let mut last = self
                .last_lag_update
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < LAG_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let consumer = Arc::clone(consumer);
        let metrics = Arc::clone(&self.metrics);
        let offsets = offsets.clone();
        tokio::task::spawn_blocking(move || {
            for ((topic, partition), next) in offsets {
                if let Ok((_, high)) =
                    consumer.fetch_watermarks(&topic, partition, Duration::from_secs(1))
                {
                    metrics
                        .consumer_lag
                        .with_label_values(&[&topic, &partition.to_string()])
                        .set((high - next).max(0));
                }
            }
        });
    }
}

fn push_message(batch: &mut Batch, mapper: &DocumentMapper, message: &BorrowedMessage<'_>) {
    batch.push(
        mapper,
        &Record {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key(),
            value: message.payload(),
        },
    );
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
