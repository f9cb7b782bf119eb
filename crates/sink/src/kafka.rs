//! The Kafka layer: consume (read_committed) → batch (by count and time) → bulk write →
//! dead-letter what cannot be stored → commit the batch's offsets, only after MongoDB
//! acknowledged it. A crash anywhere before the commit re-reads the batch; the deterministic
//! `_id`s turn the second write into duplicates, never into second copies.
//!
//! Rebalances: every batch commits as soon as it is written, so what was written is committed
//! before a partition can move. Records of a revoked partition that are buffered but not yet
//! written are dropped from the batch, uncommitted: the partition's new owner re-reads them.
//!
//! Outages: a probe asks the brokers for the subscribed topics' metadata every second. While
//! they do not answer, or a subscribed topic does not exist (yet), the sink is not ready;
//! librdkafka reconnects by itself and consuming resumes where it stopped. A topic created
//! after the sink started is picked up within seconds (`topic.metadata.refresh.interval.ms`).
//! A broker (or MongoDB) outage longer than `processing.give_up_after` stops the sink with an
//! error naming it ([`GaveUp`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tickstream_model::Topology;
use tickstream_streams::{
    ClientLog, DeadLetterWriter, Health, LoggingContext, Record, client_config, dlq_headers,
    kafka_millis,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::availability::{
    Availability, GaveUp, Retry, WriteTask, wait_or_stop, write_acknowledged,
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
/// How often the brokers are asked for the subscribed topics: how soon `/readyz` notices an
/// outage (plus [`KAFKA_PROBE_TIMEOUT`]) or its end.
const KAFKA_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a metadata request may take before the brokers count as unreachable.
const KAFKA_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// librdkafka's metadata refresh (default 5 min): how soon a subscribed topic created after
/// the sink started is seen, assigned and read.
const TOPIC_METADATA_REFRESH: Duration = Duration::from_secs(2);
/// librdkafka's longest wait between reconnects (default 10 s): a broker that is back is
/// reconnected to within this.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most this often, offsets whose commit failed are committed again.
const RECOMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Dead letters outlive an outage: librdkafka keeps retrying them this much longer than the
/// sink waits before giving up, so one is never dropped while the sink still runs.
const DELIVERY_MARGIN: Duration = Duration::from_secs(60);

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
    /// `compression.type` of the dead letters (the topology's `topics.compression.derived`).
    pub dead_letter_compression: String,
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
    /// A Kafka or MongoDB outage longer than this stops the sink with an error
    /// (`processing.give_up_after`).
    pub give_up_after: Duration,
    /// Extra librdkafka settings (security), applied to the consumer and the DLQ producer.
    pub kafka_settings: tickstream_streams::KafkaSettings,
}

impl SinkConfig {
    pub fn from_topology(topology: &Topology, brokers: &str) -> Self {
        let mapper = DocumentMapper::new(topology);
        Self {
            brokers: brokers.to_owned(),
            group_id: format!("{}-sink", topology.application_id),
            topics: mapper.topics(),
            dead_letter_topic: topology.topics.dead_letter.clone(),
            dead_letter_compression: topology.topics.compression.derived.as_str().to_owned(),
            batch_size: topology.mongodb.batch_size.max(1),
            batch_interval: topology.mongodb.batch_interval,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            give_up_after: topology.processing.give_up_after,
            kafka_settings: tickstream_streams::KafkaSettings::default(),
        }
    }
}

/// Tracks the assignment for the processing loop (rebalance callbacks run inside `recv`),
/// notes asynchronous commits that failed, and logs librdkafka's reports at honest levels.
struct SinkContext {
    assigned: Mutex<HashSet<PartitionKey>>,
    revision: AtomicU64,
    /// A commit failed: the loop commits everything written again once Kafka answers.
    commit_failed: AtomicBool,
    log: ClientLog,
}

impl SinkContext {
    fn new() -> Self {
        Self {
            assigned: Mutex::new(HashSet::new()),
            revision: AtomicU64::new(0),
            commit_failed: AtomicBool::new(false),
            log: ClientLog::new("sink consumer"),
        }
    }
}

tickstream_streams::forward_client_log!(SinkContext, log);

impl ConsumerContext for SinkContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            self.commit_failed.store(true, Ordering::Release);
            self.log.error(
                &error,
                "offset commit failed; the offsets are committed again once Kafka answers",
            );
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
            Rebalance::Error(error) => self.log.error(error, "rebalance failed"),
        }
        info!(partitions = assigned.len(), "sink assignment changed");
        self.revision.fetch_add(1, Ordering::Release);
    }
}

type SinkConsumer = StreamConsumer<SinkContext>;

/// The sink process: Kafka in, MongoDB out.
pub struct KafkaSink {
    config: SinkConfig,
    mapper: DocumentMapper,
    writer: MongoWriter,
    metrics: Arc<SinkMetrics>,
    health: Arc<Health>,
    last_lag_update: Mutex<Option<Instant>>,
    dead_letters: DeadLetterWriter,
}

/// Aborts the task when dropped: the Kafka probe ends with [`KafkaSink::run`], however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
            dead_letters: DeadLetterWriter::new(config.dead_letter_topic.clone()),
            config,
            mapper: DocumentMapper::new(topology),
            writer,
            metrics,
            health,
            last_lag_update: Mutex::new(None),
        }
    }

    /// Runs until `shutdown` completes; then writes and commits the in-flight batch and
    /// returns. `Err` when the batch could not be written within the shutdown grace (nothing
    /// is committed then: it is re-read on restart), when Kafka or MongoDB stayed unreachable
    /// for `give_up_after` ([`SinkError::GaveUp`]), or when Kafka cannot be set up.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SinkError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let availability = Arc::new(Availability::new(
            Arc::clone(&self.health),
            Arc::clone(&self.metrics),
            self.config.give_up_after,
            self.writer.address(),
            &self.config.brokers,
        ));
        let consumer: Arc<SinkConsumer> = consumer_config(&self.config)
            .create_with_context(SinkContext::new())
            .map(Arc::new)?;
        let producer: FutureProducer<LoggingContext> = dead_letter_config(&self.config)
            .create_with_context(LoggingContext::new("sink dead-letter producer"))?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        info!(group = %self.config.group_id, ?topics, "sink subscribed");
        let probe = AbortOnDrop(tokio::spawn(watch_kafka(
            Arc::clone(&consumer),
            self.config.topics.clone(),
            Arc::clone(&availability),
        )));
        let outcome = self
            .process(&consumer, &producer, &availability, stop_rx)
            .await;
        drop(probe);
        if !availability.kafka_is_up() {
            // Closing a consumer leaves its group, which takes a broker: with none answering,
            // librdkafka's close (run on drop) would never return and the process never exit.
            // The broker drops the member after its session timeout instead.
            info!("Kafka unreachable: exiting without leaving the consumer group");
            std::mem::forget(consumer);
        }
        outcome
    }

    /// The processing loop of [`KafkaSink::run`].
    async fn process(
        &self,
        consumer: &Arc<SinkConsumer>,
        producer: &FutureProducer<LoggingContext>,
        availability: &Arc<Availability>,
        stop_rx: watch::Receiver<bool>,
    ) -> Result<(), SinkError> {
        let mut gave_up_rx = availability.gave_up();

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
                    availability.mongodb_down(&error)?;
                    availability.heartbeat();
                    if wait_or_stop(backoff.next_delay(), &stop_rx).await {
                        return Ok(());
                    }
                    check_gave_up(&gave_up_rx)?;
                }
            }
        }
        backoff.reset();
        availability.mongodb_up();

        let mut batch = Batch::default();
        // At most one batch is being written while the next one fills: commits stay in
        // offset order, and consuming overlaps the write.
        let mut in_flight: Option<WriteTask> = None;
        // The next offset of everything written, per partition: every commit covers it all,
        // so a commit lost to an outage is made good by the next one.
        let mut written: HashMap<PartitionKey, i64> = HashMap::new();
        let mut seen_revision = 0;
        let mut stop_rx_loop = stop_rx.clone();
        let mut messages = consumer.stream();
        let mut last_contact = Instant::now();
        let mut last_recommit = Instant::now();
        let mut done = Finish {
            consumer,
            producer,
            availability,
            stop_rx: &stop_rx,
            written: &mut written,
        };
        loop {
            availability.heartbeat();
            check_gave_up(&gave_up_rx)?;
            let stopping = *stop_rx_loop.borrow();
            if !stopping {
                let deadline = batch
                    .started
                    .map(|s| s + self.config.batch_interval)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                let joined = tokio::select! {
                    joined = async {
                        match in_flight.as_mut() {
                            Some(task) => task.await,
                            None => std::future::pending().await,
                        }
                    } => Some(joined),
                    _ = stop_rx_loop.changed() => None,
                    _ = gave_up_rx.changed() => None,
                    _ = tokio::time::sleep_until(deadline.into()) => None,
                    message = messages.next() => {
                        // What librdkafka already fetched joins the batch without another
                        // trip through select! (and its timer) per record.
                        let mut next = message;
                        while let Some(result) = next {
                            match result {
                                Ok(message) => push_message(&mut batch, &self.mapper, &message),
                                Err(error) => {
                                    // A missing topic, a broker away: librdkafka retries.
                                    consumer.context().log.error(&error, "consuming");
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
                if let Some(joined) = joined {
                    in_flight = None;
                    self.finish(joined, &mut done).await?;
                    last_contact = Instant::now();
                }
                if batch.is_empty()
                    && in_flight.is_none()
                    && last_contact.elapsed() >= IDLE_PROBE_INTERVAL
                {
                    self.probe_idle(availability).await?;
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
                done.written.retain(|key, _| assigned.contains(key));
            }
            // A commit lost to an outage is made good once Kafka answers, even if no record
            // follows (at most once a second: a commit that keeps failing is not hammered).
            if availability.kafka_is_up()
                && !done.written.is_empty()
                && last_recommit.elapsed() >= RECOMMIT_INTERVAL
                && consumer
                    .context()
                    .commit_failed
                    .swap(false, Ordering::AcqRel)
            {
                last_recommit = Instant::now();
                self.commit(done.written, consumer, CommitMode::Async);
            }
            let stopping = *stop_rx_loop.borrow();
            let due = batch
                .started
                .is_some_and(|s| s.elapsed() >= self.config.batch_interval);
            if !batch.is_empty() && (stopping || due || batch.records >= self.config.batch_size) {
                if let Some(task) = in_flight.take() {
                    self.finish(task.await, &mut done).await?;
                }
                let full = std::mem::take(&mut batch);
                in_flight = Some(tokio::spawn(write_acknowledged(
                    self.writer.clone(),
                    full,
                    Retry {
                        metrics: Arc::clone(&self.metrics),
                        availability: Arc::clone(availability),
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
                    self.finish(task.await, &mut done).await?;
                }
                info!("sink stopped: in-flight batch written and committed");
                return Ok(());
            }
        }
    }

    /// With nothing to write, nothing else would notice MongoDB leaving (or coming back):
    /// ask it, so `/readyz` and `mongodb_up` tell the truth while idle too.
    async fn probe_idle(&self, availability: &Availability) -> Result<(), SinkError> {
        match tokio::time::timeout(IDLE_PROBE_TIMEOUT, self.writer.ping()).await {
            Ok(Ok(())) => availability.mongodb_up(),
            Ok(Err(error)) => availability.mongodb_down(&error)?,
            Err(_) => availability.mongodb_down(&SinkError::Config(format!(
                "no answer to a ping within {IDLE_PROBE_TIMEOUT:?}"
            )))?,
        }
        Ok(())
    }

    /// After a batch's write was acknowledged: counts, dead-letters and commits it.
    async fn finish(
        &self,
        joined: Result<Result<(Batch, WriteReport), SinkError>, tokio::task::JoinError>,
        done: &mut Finish<'_>,
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
                headers: origin.headers.clone(),
                code: MONGODB_REJECTED.to_owned(),
                message: rejected.message.clone(),
            });
        }
        self.dead_letter(
            &dead_letters,
            done.producer,
            done.availability,
            done.stop_rx,
        )
        .await?;
        {
            // Only partitions still assigned: a revoked one has a new owner, whose commits a
            // stale offset of ours must not overwrite (it re-reads what we wrote: duplicates).
            let assigned = done
                .consumer
                .context()
                .assigned
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (key, next) in batch.offsets {
                if assigned.contains(&key) {
                    let committed = done.written.entry(key).or_insert(next);
                    *committed = (*committed).max(next);
                }
            }
        }
        // The last commit before exiting waits for the broker's answer, unless there is no
        // broker to answer (a synchronous commit would then hang the exit).
        let mode = if *done.stop_rx.borrow() && done.availability.kafka_is_up() {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        self.commit(done.written, done.consumer, mode);
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

    /// Sends every dead letter and waits for the broker's acknowledgement, by the one retry
    /// rule (`tickstream_streams::DeadLetterWriter::deliver`): a record whose offset is
    /// committed must be either in MongoDB or on the dead-letter topic. While Kafka is away
    /// this waits (alive, not ready) until it answers, the sink gives up (`give_up_after`), or
    /// — once stopping — the shutdown grace has passed: the batch is then not committed.
    async fn dead_letter(
        &self,
        dead_letters: &[DeadLetter],
        producer: &FutureProducer<LoggingContext>,
        availability: &Availability,
        stop_rx: &watch::Receiver<bool>,
    ) -> Result<(), SinkError> {
        let mut gave_up_rx = availability.gave_up();
        for letter in dead_letters {
            let outgoing = outgoing(letter, &self.config.group_id);
            let deliver =
                self.dead_letters
                    .deliver(producer, &outgoing, stop_rx, self.config.shutdown_grace);
            tokio::pin!(deliver);
            let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
            let delivered = loop {
                tokio::select! {
                    delivered = &mut deliver => break delivered,
                    _ = heartbeat.tick() => availability.heartbeat(),
                    _ = gave_up_rx.changed() => check_gave_up(&gave_up_rx)?,
                }
            };
            delivered.map_err(|error| SinkError::Config(error.to_string()))?;
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
        }
        Ok(())
    }

    /// Commits `offsets` (the next offset of everything written, per partition):
    /// asynchronously while running (the writes are already acknowledged; a lost commit only
    /// means a re-read batch, i.e. duplicates, and is repeated once Kafka answers),
    /// synchronously for the last batch before exiting. A failure is logged, not fatal.
    fn commit(
        &self,
        offsets: &HashMap<PartitionKey, i64>,
        consumer: &Arc<SinkConsumer>,
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
            Err(error) => {
                consumer
                    .context()
                    .commit_failed
                    .store(true, Ordering::Release);
                consumer.context().log.error(
                    &error,
                    "offset commit failed; the offsets are committed again once Kafka answers",
                );
            }
        }
    }

    /// Lag per partition: the high watermark (asked off the async threads, at most every
    /// few seconds) minus the next offset to write.
    fn update_lag(&self, offsets: &HashMap<PartitionKey, i64>, consumer: &Arc<SinkConsumer>) {
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

fn consumer_config(config: &SinkConfig) -> ClientConfig {
    client_config(
        &config.brokers,
        &[
            ("group.id", &config.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
            // A crashed sink's partitions move on (or come back to it) within 10 s.
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "3000"),
            (
                "topic.metadata.refresh.interval.ms",
                &kafka_millis(TOPIC_METADATA_REFRESH),
            ),
            (
                "reconnect.backoff.max.ms",
                &kafka_millis(RECONNECT_BACKOFF_MAX),
            ),
        ],
        &config.kafka_settings,
    )
}

fn dead_letter_config(config: &SinkConfig) -> ClientConfig {
    client_config(
        &config.brokers,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.type", &config.dead_letter_compression),
            (
                "message.timeout.ms",
                &kafka_millis(config.give_up_after + DELIVERY_MARGIN),
            ),
            (
                "reconnect.backoff.max.ms",
                &kafka_millis(RECONNECT_BACKOFF_MAX),
            ),
        ],
        &config.kafka_settings,
    )
}

/// What finishing a batch touches besides the batch.
struct Finish<'a> {
    consumer: &'a Arc<SinkConsumer>,
    producer: &'a FutureProducer<LoggingContext>,
    availability: &'a Availability,
    stop_rx: &'a watch::Receiver<bool>,
    written: &'a mut HashMap<PartitionKey, i64>,
}

/// `Err` once Kafka or MongoDB stayed unreachable for `give_up_after`.
fn check_gave_up(gave_up_rx: &watch::Receiver<Option<GaveUp>>) -> Result<(), SinkError> {
    match gave_up_rx.borrow().as_ref() {
        Some(gave_up) => Err(SinkError::GaveUp(gave_up.clone())),
        None => Ok(()),
    }
}

/// What goes to the dead-letter topic for `letter`: its bytes, its original headers, then the
/// sink's reason (see `tickstream_streams::DeadLetter`).
fn outgoing<'a>(letter: &'a DeadLetter, application: &str) -> tickstream_streams::DeadLetter<'a> {
    let reason = dlq_headers::headers(
        &letter.code,
        &letter.message,
        &letter.topic,
        letter.partition,
        letter.offset,
        application,
    );
    tickstream_streams::DeadLetter::new(
        letter.key.as_deref(),
        letter.value.as_deref(),
        letter.headers.clone(),
        &reason,
    )
}

#[cfg(test)]
fn dead_letter_headers(letter: &DeadLetter, application: &str) -> rdkafka::message::OwnedHeaders {
    outgoing(letter, application).headers
}

/// Every second: do the brokers answer, and do the subscribed topics exist? Updates
/// `availability` (hence `/readyz`) until aborted, or until Kafka has been unreachable for
/// `give_up_after` (the processing loop then stops the sink).
async fn watch_kafka(
    consumer: Arc<SinkConsumer>,
    topics: Vec<String>,
    availability: Arc<Availability>,
) {
    loop {
        let probe = {
            let consumer = Arc::clone(&consumer);
            let topics = topics.clone();
            tokio::task::spawn_blocking(move || probe_topics(&consumer, &topics)).await
        };
        let outcome = match probe {
            Ok(Ok(missing)) => {
                availability.kafka_up(missing);
                Ok(())
            }
            Ok(Err(cause)) => availability.kafka_down(&cause),
            Err(error) => availability.kafka_down(&format!("the metadata probe failed: {error}")),
        };
        if outcome.is_err() {
            return;
        }
        tokio::time::sleep(KAFKA_PROBE_INTERVAL).await;
    }
}

/// The subscribed topics that do not exist, or why the brokers did not answer. One metadata
/// request per topic: a full cluster listing can be large. Asked through the consumer, which
/// never auto-creates a topic (`allow.auto.create.topics` is false for consumers).
fn probe_topics(consumer: &SinkConsumer, topics: &[String]) -> Result<Vec<String>, String> {
    let mut missing = Vec::new();
    for topic in topics {
        match consumer.fetch_metadata(Some(topic), KAFKA_PROBE_TIMEOUT) {
            Ok(metadata) => {
                let exists = metadata.topics().iter().any(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                });
                if !exists {
                    missing.push(topic.clone());
                }
            }
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
            )) => missing.push(topic.clone()),
            Err(error) => {
                return Err(match consumer.context().log.last_problem() {
                    Some(problem) => format!("{error}; last report: {problem}"),
                    None => error.to_string(),
                });
            }
        }
    }
    Ok(missing)
}

fn push_message(batch: &mut Batch, mapper: &DocumentMapper, message: &BorrowedMessage<'_>) {
    batch.push(
        mapper,
        &Record::from_message(message),
        message.headers().map(|headers| headers.detach()),
    );
}

fn now_nanos() -> u64 {
    tickstream_model::clock::since_epoch().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, Headers, OwnedHeaders};

    use super::*;

    /// Each header's name and value, as text.
    fn header_list(headers: &OwnedHeaders) -> Vec<(String, Option<String>)> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let mut list = Vec::with_capacity(headers.count());
        for header in headers.iter() {
            list.push((header.key.to_owned(), header.value.map(text)));
        }
        list
    }

    fn letter(headers: Option<OwnedHeaders>) -> DeadLetter {
        DeadLetter {
            topic: "prices.raw".to_owned(),
            partition: 2,
            offset: 41,
            key: None,
            value: Some(b"{}".to_vec()),
            headers,
            code: "missing_field".to_owned(),
            message: "no price".to_owned(),
        }
    }

    #[test]
    fn client_settings_follow_the_topology() {
        // Dead letters carry derived events' codec; the outage bound is 45 s.
        let toml = [
            r#"symbols = ["BTCUSDT"]"#,
            "[topics]",
            r#"compression = { raw = "none", derived = "zstd" }"#,
            "[processing]",
            r#"give_up_after = "45s""#,
        ]
        .join("\n");
        let topology = Topology::from_str(&toml).expect("valid topology");
        let config = SinkConfig::from_topology(&topology, "b:9092");
        let producer = dead_letter_config(&config);
        assert_eq!(
            producer.get("compression.type"),
            Some("zstd"),
            "derived family"
        );
        let timeout: u64 = producer
            .get("message.timeout.ms")
            .and_then(|v| v.parse().ok())
            .expect("a message timeout");
        assert!(timeout > 45_000, "{timeout} ms");
        let consumer = consumer_config(&config);
        let refresh: u64 = consumer
            .get("topic.metadata.refresh.interval.ms")
            .and_then(|v| v.parse().ok())
            .expect("a refresh interval");
        assert!(
            refresh <= 5_000,
            "a topic created later is read within seconds, not librdkafka's 5 min: {refresh} ms"
        );
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
    }

    #[test]
    fn dead_letters_keep_the_original_headers_before_the_reason() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some("00-abc-01"),
            })
            .insert(Header::<&[u8]> {
                key: "empty",
                value: None,
            });
        let headers = header_list(&dead_letter_headers(&letter(Some(original)), "app-sink"));
        assert_eq!(
            headers[..2],
            [
                ("traceparent".to_owned(), Some("00-abc-01".to_owned())),
                ("empty".to_owned(), None),
            ],
            "the original headers first, as they were (a null value stays null)"
        );
        assert_eq!(
            headers[2..],
            [
                (dlq_headers::ERROR_CODE, "missing_field"),
                (dlq_headers::ERROR_MESSAGE, "no price"),
                (dlq_headers::SOURCE_TOPIC, "prices.raw"),
                (dlq_headers::SOURCE_PARTITION, "2"),
                (dlq_headers::SOURCE_OFFSET, "41"),
                (dlq_headers::APPLICATION, "app-sink"),
            ]
            .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
        );
        assert_eq!(
            header_list(&dead_letter_headers(&letter(None), "app-sink")).len(),
            6,
            "a record without headers gets the reason only"
        );
    }
}
