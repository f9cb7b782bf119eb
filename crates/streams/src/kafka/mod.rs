//! The Kafka transport: an application instance that consumes its source topics in a consumer
//! group, runs a task per assigned partition and commits exactly-once (or at-least-once).

mod engine;
mod produce;
mod restore;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use tracing::{info, warn};

pub use engine::ProcessorFactory;
use engine::{Engine, StreamsContext};
use produce::{DeliveryContext, StreamsProducer};
use restore::RestoreContext;

use crate::config::{ConfigError, ProcessingGuarantee, StreamsConfig};
use crate::metrics::{Health, StreamsMetrics};
use crate::processor::Processor;
use crate::store::{StateDir, StoreError};

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
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// One instance of a streams application on Kafka.
///
/// ```no_run
/// # use std::sync::atomic::AtomicBool;
/// # use tickstream_streams::{KafkaStreams, StreamsConfig, Processor, ProcessorContext, ProcessError, Record};
/// # struct Counting;
/// # impl Processor for Counting {
/// #     type State = u64;
/// #     fn process(&mut self, r: &Record<'_>, ctx: &mut ProcessorContext<'_, u64>) -> Result<(), ProcessError> { Ok(()) }
/// # }
/// let config = StreamsConfig::new("counter", "127.0.0.1:9092", &["words"]);
/// let streams = KafkaStreams::new(config, Box::new(|_task| Counting))?;
/// let shutdown = AtomicBool::new(false); // set it from a signal handler
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

    /// Runs until `shutdown` is set, then commits, closes its tasks and returns `Ok`.
    /// Blocking: call it from a dedicated thread (`tokio::task::spawn_blocking`).
    pub fn run(self, shutdown: &AtomicBool) -> Result<(), StreamsError> {
        let config = self.config;
        let state = StateDir::open(&config.state_dir, &config.application_id)?;
        let instance_id = match &config.instance_id {
            Some(id) => id.clone(),
            None => stable_instance_id(&state)?,
        };
        let partitions = prepare_topics(&config)?;
        info!(application = %config.application_id, instance = %instance_id, partitions, "starting");

        let producer = create_producer(&config, &instance_id)?;
        if config.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
            // Fences a previous incarnation with this transactional id and aborts its open
            // transaction, so its partitions are not blocked until the transaction times out.
            producer
                .init_transactions(STARTUP_TIMEOUT)
                .map_err(|e| StreamsError::kafka("initialising transactions", e))?;
            producer
                .begin_transaction()
                .map_err(|e| StreamsError::kafka("beginning a transaction", e))?;
        }
        let restore_consumer: BaseConsumer<RestoreContext> = client_config(&config)
            // librdkafka refuses assign() without a group id; this one never joins or commits.
            .set("group.id", format!("{}-restore", config.application_id))
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .create_with_context(RestoreContext)
            .map_err(|e| StreamsError::kafka("creating the restore consumer", e))?;
        let engine = Engine::new(
            config.clone(),
            self.factory,
            state,
            producer,
            restore_consumer,
            Arc::clone(&self.metrics),
            Arc::clone(&self.health),
        );
        let context = StreamsContext {
            engine: Mutex::new(engine),
            metrics: Arc::clone(&self.metrics),
        };
        let consumer: BaseConsumer<StreamsContext<P>> = client_config(&config)
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
            .create_with_context(context)
            .map_err(|e| StreamsError::kafka("creating the consumer", e))?;
        let topics: Vec<&str> = config.source_topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| StreamsError::kafka("subscribing", e))?;

        let result = process_until(&consumer, shutdown, &self.metrics, &self.health);
        // Commit only after a clean stop. After a failure the batch may be half done (the
        // failing record's position already advanced): committing it could skip that record.
        // Instead the tasks are abandoned (so the revocation that leaving the group triggers has
        // nothing to commit either), the open transaction is left to abort (the broker's
        // timeout, or fencing by this instance's next start) and sled never sees the batch.
        let closed = match &result {
            Ok(()) => consumer.context().engine().close(&consumer),
            Err(_) => {
                consumer.context().engine().abandon();
                Ok(())
            }
        };
        // Leave the group now, so a surviving instance takes over without waiting for a timeout.
        consumer.unsubscribe();
        drop(consumer);
        result.and(closed)
    }
}

/// The processing loop: poll, process, commit when due; until `shutdown`.
fn process_until<P: Processor>(
    consumer: &BaseConsumer<StreamsContext<P>>,
    shutdown: &AtomicBool,
    metrics: &StreamsMetrics,
    health: &Health,
) -> Result<(), StreamsError> {
    while !shutdown.load(Ordering::Relaxed) {
        health.heartbeat();
        // Rebalance callbacks run inside poll and take the engine lock: do not hold it here.
        let polled = consumer.poll(Duration::from_millis(50));
        let mut engine = consumer.context().engine();
        if let Some(error) = engine.fatal.take() {
            return Err(error);
        }
        match polled {
            Some(Ok(message)) => {
                let started = std::time::Instant::now();
                engine.process(&message)?;
                metrics
                    .process_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(error)) => warn!(%error, "consumer error (librdkafka retries)"),
        }
        if engine.commit_due() {
            engine.commit(consumer)?;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        engine.punctuate_wall_clock(now_ms)?;
    }
    info!("shutdown requested: committing and closing tasks");
    Ok(())
}

/// Settings every client of this application shares: brokers plus the user's pass-through
/// librdkafka settings (security and the like).
fn client_config(config: &StreamsConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers);
    for (key, value) in &config.kafka_settings {
        client.set(key, value);
    }
    client
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
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    let id = format!("{:016x}", hasher.finish());
    std::fs::write(&path, &id).map_err(io_error)?;
    Ok(id)
}

/// Checks the inputs exist and are co-partitioned; creates the changelog (compacted), the
/// dead-letter topic and the outputs with the same partition count where missing.
fn prepare_topics(config: &StreamsConfig) -> Result<i32, StreamsError> {
    let probe: BaseConsumer = client_config(config)
        .create()
        .map_err(|e| StreamsError::kafka("creating a client", e))?;
    let partitions_of = |topic: &str| -> Result<Option<i32>, StreamsError> {
        let metadata = probe
            .fetch_metadata(Some(topic), STARTUP_TIMEOUT)
            .map_err(|e| {
                StreamsError::kafka(
                    &format!(
                        "reading metadata of {topic} from {}",
                        config.bootstrap_servers
                    ),
                    e,
                )
            })?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .filter(|n| *n > 0))
    };
    let mut counts = Vec::new();
    for topic in &config.source_topics {
        match partitions_of(topic)? {
            Some(n) => counts.push((topic.as_str(), n)),
            None => {
                return Err(StreamsError::Topology(format!(
                    "source topic {topic:?} does not exist on {}: create it (the topology's partition count) or fix source_topics",
                    config.bootstrap_servers
                )));
            }
        }
    }
    let partitions = counts[0].1;
    if let Some((topic, n)) = counts.iter().find(|(_, n)| *n != partitions) {
        return Err(StreamsError::Topology(format!(
            "source topics are not co-partitioned: {:?} has {partitions} partitions, {topic:?} has {n}; give them the same count",
            counts[0].0
        )));
    }
    let changelog = config.changelog_topic();
    match partitions_of(&changelog)? {
        Some(n) if n < partitions => {
            return Err(StreamsError::Topology(format!(
                "changelog {changelog:?} has {n} partitions but the inputs have {partitions}: \
                 delete it (state is rebuilt from the inputs' committed offsets only) or restore the inputs' count"
            )));
        }
        Some(_) => {}
        None => create_topic(config, &changelog, partitions, true)?,
    }
    let mut others = vec![config.dead_letter_topic.clone()];
    others.extend(config.output_topics.iter().cloned());
    for topic in &others {
        if partitions_of(topic)?.is_none() {
            create_topic(config, topic, partitions, false)?;
        }
    }
    // A topic exists in metadata before its partitions have leaders; reading the changelog's
    // offsets in that gap fails with NotLeaderForPartition. Wait until every partition of
    // every topic the tasks touch has one.
    others.push(changelog);
    for topic in &others {
        await_leaders(&probe, topic, config)?;
    }
    Ok(partitions)
}

fn await_leaders(
    probe: &BaseConsumer,
    topic: &str,
    config: &StreamsConfig,
) -> Result<(), StreamsError> {
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        let metadata = probe
            .fetch_metadata(Some(topic), STARTUP_TIMEOUT)
            .map_err(|e| StreamsError::kafka(&format!("reading metadata of {topic}"), e))?;
        let ready = metadata.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && !t.partitions().is_empty()
                && t.partitions()
                    .iter()
                    .all(|p| p.error().is_none() && p.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(StreamsError::Topology(format!(
                "topic {topic:?} has partitions without a leader on {} after {STARTUP_TIMEOUT:?}: check the broker's log",
                config.bootstrap_servers
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_topic(
    config: &StreamsConfig,
    topic: &str,
    partitions: i32,
    compacted: bool,
) -> Result<(), StreamsError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)
        .create()
        .map_err(|e| StreamsError::kafka("creating an admin client", e))?;
    // -1: the broker's default.replication.factor.
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    if compacted {
        new_topic = new_topic.set("cleanup.policy", "compact");
    }
    let options = AdminOptions::new().operation_timeout(Some(STARTUP_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&new_topic], &options))
        .map_err(|e| StreamsError::kafka(&format!("creating topic {topic}"), e))?;
    for result in results {
        match result {
            Ok(_) => info!(topic, partitions, compacted, "topic created"),
            // Another instance created it first: fine.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(StreamsError::Topology(format!(
                    "creating topic {name:?} failed: {code}"
                )));
            }
        }
    }
    Ok(())
}
