//! The Kafka transport: an application instance that consumes its source topics in a consumer
//! group, runs a task per assigned partition and commits exactly-once (or at-least-once).
//!
//! In Kafka Streams' shape: [`KafkaStreams`] (here) builds the clients and runs the stream
//! thread's loop (`crate::stream_loop`, the same loop as in process) over the Kafka transport
//! (`transport.rs`: one poll per turn, the outage probe); the loop's shared state and the
//! rebalance callbacks are in `thread.rs`, the tasks in `task_manager.rs`, every send in
//! `record_collector.rs`, the record path in `route.rs` (with `partition_group.rs`) and the
//! commit path in `commit.rs`.

mod admin;
pub(crate) mod client;
mod commit;
pub(crate) mod dead_letter;
mod outage;
mod partition_group;
pub(crate) mod produce;
mod purge;
pub(crate) mod record;
mod record_collector;
mod restore;
mod route;
mod task_manager;
mod thread;
mod transport;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use tracing::info;

pub use admin::{ExistingTopic, TopicRole, TopicSpec, TopicState, create_topics, describe_topics};
use dead_letter::DeadLetterWriter;
use produce::{DeliveryContext, StreamsProducer};
use record_collector::RecordCollector;
use restore::RestoreConsumer;
pub use task_manager::ProcessorFactory;
use task_manager::TaskManager;
use thread::{StreamThread, StreamsContext};
use transport::KafkaTransport;

use crate::client_log::ClientLog;
use crate::config::{ConfigError, ProcessingGuarantee, StreamsConfig};
use crate::metrics::{Health, StreamsMetrics};
use crate::processor::Processor;
use crate::shutdown::Shutdown;
use crate::store::{StateDir, StoreError};
use crate::stream_loop::StreamLoop;

#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error("topology: {0}")]
    Topology(String),
    #[error("restoring {changelog} partition {partition}: {problem}")]
    Restore {
        changelog: String,
        partition: i32,
        problem: String,
    },
    /// Around the processing thread: endpoints, signals, shutdown.
    #[error("runtime: {0}")]
    Runtime(String),
    /// The broker stayed unreachable longer than `give_up_after`.
    #[error(
        "{what}: Kafka unreachable for {lasted_secs} s, longer than processing.give_up_after \
         (last error: {last_error}); check the brokers and the network, then restart"
    )]
    Outage {
        what: String,
        lasted_secs: u64,
        last_error: String,
    },
}

impl StreamsError {
    pub(crate) fn kafka(context: &str, source: KafkaError) -> Self {
        Self::Kafka {
            context: context.to_owned(),
            source,
        }
    }
}

/// How long to wait for the broker while starting up.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// One instance of a streams application on Kafka.
///
/// ```no_run
/// # use tickstream_streams::{KafkaStreams, Shutdown, StreamsConfig, Processor, ProcessorContext, ProcessError, Record};
/// # struct Counting;
/// # impl Processor for Counting {
/// #     type State = u64;
/// #     fn process(&mut self, r: &Record<'_>, ctx: &mut ProcessorContext<'_, u64>) -> Result<(), ProcessError> { Ok(()) }
/// # }
/// let config = StreamsConfig::new("counter", "127.0.0.1:9092", &["words"]);
/// let streams = KafkaStreams::new(config, Box::new(|_task| Counting))?;
/// let shutdown = Shutdown::new(); // requested on SIGTERM: see `Shutdown::request_on_signals`
/// streams.run(&shutdown)?;
/// # Ok::<(), tickstream_streams::StreamsError>(())
/// ```
pub struct KafkaStreams<P: Processor> {
    config: StreamsConfig,
    factory: ProcessorFactory<P>,
    metrics: Arc<StreamsMetrics>,
    health: Arc<Health>,
}

impl<P: Processor + 'static> KafkaStreams<P> {
    /// Validates the configuration; nothing connects until [`Self::run`].
    pub fn new(config: StreamsConfig, factory: ProcessorFactory<P>) -> Result<Self, StreamsError> {
        config.validate()?;
        let metrics = Arc::new(StreamsMetrics::new(&config.application_id));
        Ok(Self {
            config,
            factory,
            metrics,
            health: Arc::new(Health::default()),
        })
    }

    /// Reports into `metrics` instead of a registry of its own: processors register their
    /// metrics in the same registry first, and one `/metrics` shows both.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<StreamsMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> Arc<StreamsMetrics> {
        Arc::clone(&self.metrics)
    }

    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Runs the stream loop (`crate::stream_loop`) until `shutdown` is requested, then
    /// commits, closes its tasks and returns `Ok` (stop polling → commit → close tasks →
    /// leave the group: the order of [`Shutdown`]).
    /// Blocking: call it from a dedicated thread (`tokio::task::spawn_blocking`).
    pub fn run(self, shutdown: &Shutdown) -> Result<(), StreamsError> {
        let config = self.config;
        let state = StateDir::open(&config.state_dir, &config.application_id)?;
        let instance_id = match &config.instance_id {
            Some(id) => id.clone(),
            None => stable_instance_id(&state)?,
        };
        self.health.set_ready(false);
        let Some(layout) = admin::prepare_topics(&config, shutdown)? else {
            info!("shutdown requested before the topics were ready");
            return Ok(());
        };
        info!(
            application = %config.application_id,
            instance = %instance_id,
            tasks = layout.tasks,
            repartition = ?config.repartition,
            "starting"
        );

        let producer = transactional_producer(&config, &instance_id, STARTUP_TIMEOUT)?;
        if config.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
            producer
                .begin_transaction()
                .map_err(|e| StreamsError::kafka("beginning a transaction", e))?;
        }
        let restore_consumer = RestoreConsumer::new(&config)?;
        let purge = match config.repartition {
            Some(_) => Some(purge::RepartitionPurge::new(&config)?),
            None => None,
        };
        let tasks = TaskManager::new(
            &config,
            layout,
            self.factory,
            state,
            restore_consumer,
            Arc::clone(&self.metrics),
            Arc::clone(&self.health),
        );
        let collector = RecordCollector::new(
            producer,
            config.changelog_topic(),
            DeadLetterWriter::new(config.dead_letter_topic.clone()),
        );
        let thread = StreamThread::new(
            config.clone(),
            instance_id,
            tasks,
            collector,
            purge,
            Arc::clone(&self.metrics),
            Arc::clone(&self.health),
        );
        let context = StreamsContext {
            thread: Mutex::new(thread),
            metrics: Arc::clone(&self.metrics),
            log: ClientLog::new("consumer"),
        };
        let consumer = create_consumer(&config, context)?;
        let repartition_topic = config.repartition_topic();
        let mut topics: Vec<&str> = config.source_topics.iter().map(String::as_str).collect();
        if config.repartition.is_some() {
            topics.push(&repartition_topic);
        }
        consumer
            .subscribe(&topics)
            .map_err(|e| StreamsError::kafka("subscribing", e))?;

        let result = {
            let mut transport = KafkaTransport::new(&consumer, &self.metrics, &self.health);
            StreamLoop::new(&config, shutdown, &self.health).run(&mut transport)
        };
        close_and_leave(consumer, result.map(drop))
    }
}

/// After the loop (which made the last commit after a clean stop): the tasks closed, and the
/// group left — unless the broker is gone. Returns the loop's error, else the closing one.
fn close_and_leave<P: Processor>(
    consumer: BaseConsumer<StreamsContext<P>>,
    result: Result<(), StreamsError>,
) -> Result<(), StreamsError> {
    // The loop commits only after a clean stop. After a failure the batch may be half done
    // (the failing record's position already advanced): committing it could skip that record.
    // Instead the tasks are closed dirty (so the revocation that leaving the group triggers has
    // nothing to commit either), the open transaction is left to abort (the broker's
    // timeout, or fencing by this instance's next start) and sled never sees the batch.
    let closed = match &result {
        Ok(()) => consumer.context().thread().close_clean(),
        Err(_) => {
            consumer.context().thread().close_dirty();
            Ok(())
        }
    };
    let broker_gone = matches!(result, Err(StreamsError::Outage { .. }))
        || matches!(closed, Err(StreamsError::Outage { .. }))
        || consumer.context().thread().outage_is_on();
    if broker_gone {
        // The broker is gone: leaving the group (librdkafka's close on drop) would wait for
        // it forever, and so would the producer's. The process is about to exit and the
        // group notices the silence within session_timeout: let the clients go unclosed.
        std::mem::forget(consumer);
        return result.and(closed);
    }
    // Leave the group now, so a surviving instance takes over without waiting for a timeout.
    consumer.unsubscribe();
    drop(consumer);
    result.and(closed)
}

/// Consumer errors that mean the broker cannot be reached (librdkafka reconnects by itself).
pub(crate) fn is_unreachable(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

/// Settings every client of this application shares: brokers plus the user's pass-through
/// librdkafka settings (security and the like). The runtime's own settings are set on the
/// result, after the user's: they win (exactly-once depends on them).
pub(crate) fn client_config(config: &StreamsConfig) -> ClientConfig {
    client::client_config(&config.bootstrap_servers, &[], &config.kafka_settings)
}

/// [`client_config`] for a consumer: with its fetch defaults (which the user's settings
/// override).
pub(crate) fn consumer_client_config(config: &StreamsConfig) -> ClientConfig {
    client::client_config(
        &config.bootstrap_servers,
        &[(
            "fetch.queue.backoff.ms",
            &client::kafka_millis(client::FETCH_QUEUE_BACKOFF),
        )],
        &config.kafka_settings,
    )
}

/// The group member: its context holds the stream thread's state (see `thread.rs`).
fn create_consumer<P: Processor>(
    config: &StreamsConfig,
    context: StreamsContext<P>,
) -> Result<BaseConsumer<StreamsContext<P>>, StreamsError> {
    consumer_client_config(config)
        .set("group.id", &config.application_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // Eager range assignment keeps partition p of every input on one instance
        // (co-partitioning); a revocation commits and closes every task.
        .set("partition.assignment.strategy", "range")
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout.as_millis() / 3).to_string(),
        )
        .set("statistics.interval.ms", "5000")
        // The loop may wait out an outage (commit retries, a restore) for up to
        // give_up_after without polling: it must not be taken for a stuck member meanwhile.
        .set(
            "max.poll.interval.ms",
            (config.give_up_after.as_millis() + 60_000)
                .min(86_400_000)
                .to_string(),
        )
        // A subscribed topic created later is noticed within seconds, not librdkafka's 5 min.
        .set("topic.metadata.refresh.interval.ms", "2000")
        .create_with_context(context)
        .map_err(|e| StreamsError::kafka("creating the consumer", e))
}

/// The instance's producer; exactly-once, with its transactions initialised: that fences a
/// previous incarnation with this transactional id and aborts its open transaction, so its
/// partitions are not blocked until the transaction times out.
fn transactional_producer(
    config: &StreamsConfig,
    instance_id: &str,
    timeout: Duration,
) -> Result<StreamsProducer, StreamsError> {
    let producer = create_producer(config, instance_id)?;
    if config.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
        producer
            .init_transactions(timeout)
            .map_err(|e| StreamsError::kafka("initialising transactions", e))?;
    }
    Ok(producer)
}

fn create_producer(
    config: &StreamsConfig,
    instance_id: &str,
) -> Result<StreamsProducer, StreamsError> {
    let mut producer = client_config(config);
    producer
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", &config.compression)
        // Kafka's (Java, kafka-python) partitioner for keyed records: the same partition for a
        // key whoever writes it, which the repartitioning relies on to skip the hop.
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "1000000");
    if config.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
        let timeout_ms = config.transaction_timeout.as_millis().to_string();
        producer
            .set(
                "transactional.id",
                format!("{}-{}", config.application_id, instance_id),
            )
            .set("transaction.timeout.ms", &timeout_ms)
            // librdkafka requires a record's delivery timeout to fit in its transaction.
            .set("message.timeout.ms", &timeout_ms);
    }
    producer
        .create_with_context(DeliveryContext::new(config.changelog_topic()))
        .map_err(|e| StreamsError::kafka("creating the producer", e))
}

/// The instance id kept in the state dir (created on first start): the same directory means
/// the same instance, and so the same transactional id.
fn stable_instance_id(state: &StateDir) -> Result<String, StreamsError> {
    let path = state.path().join("instance.id");
    let io_error = |e: std::io::Error| StoreError::Sled {
        store: "(instance id)".into(),
        path: path.clone(),
        source: sled::Error::Io(e),
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {} // empty: a crash while creating it; make a new one
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e).into()),
    }
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(tickstream_model::clock::since_epoch().as_nanos());
    hasher.write_u32(std::process::id());
    let id = format!("{:016x}", hasher.finish());
    crate::private_fs::write_private_file(&path, id.as_bytes()).map_err(io_error)?;
    Ok(id)
}
