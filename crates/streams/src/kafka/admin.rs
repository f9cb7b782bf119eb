//! The topics an application needs — sources, repartition, changelog, outputs, dead letters —
//! described against what the broker has, and created idempotently (Kafka Streams creates its
//! internal topics the same way). `tickstream topics create|describe` and an instance's start
//! both go through here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use tracing::{info, warn};

use super::task_manager::TopicLayout;
use super::{STARTUP_TIMEOUT, StreamsError, client_config};
use crate::client_log::LoggingContext;
use crate::config::StreamsConfig;
use crate::shutdown::Shutdown;

/// What a topic is for in the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRole {
    /// Read by the application; written by someone else (ingest, the user's producers).
    Source,
    /// Source records re-keyed by their state key.
    Repartition,
    /// The state store's changelog: compacted.
    Changelog,
    /// What the processor emits.
    Output,
    /// Refused records, with the reason in headers.
    DeadLetter,
}

impl TopicRole {
    pub fn name(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Repartition => "repartition",
            Self::Changelog => "changelog",
            Self::Output => "output",
            Self::DeadLetter => "dead letter",
        }
    }
}

/// A topic as the application needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub role: TopicRole,
    pub partitions: i32,
    /// Topic-level settings it is created with (`cleanup.policy`, `retention.ms`, …).
    pub settings: Vec<(&'static str, String)>,
}

/// A topic as the broker has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingTopic {
    pub partitions: i32,
    pub cleanup_policy: Option<String>,
}

/// One needed topic against what exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub spec: TopicSpec,
    pub existing: Option<ExistingTopic>,
}

impl TopicState {
    /// What is wrong with the topic as it exists (`None`: nothing). Fewer partitions than
    /// needed cannot be fixed by creating; more are fine for sources (they are repartitioned).
    pub fn problem(&self) -> Option<String> {
        let Some(existing) = &self.existing else {
            return Some("missing".to_owned());
        };
        let needed = self.spec.partitions;
        if existing.partitions < needed && self.spec.role != TopicRole::Source {
            return Some(format!(
                "{} partitions, {needed} needed",
                existing.partitions
            ));
        }
        let compact = self.spec.role == TopicRole::Changelog;
        let policy = existing.cleanup_policy.as_deref().unwrap_or("delete");
        if compact && !policy.contains("compact") {
            return Some(format!("cleanup.policy={policy}, compact needed"));
        }
        None
    }
}

impl StreamsConfig {
    /// Every topic the application needs with `partitions` tasks; `sources` adds the source
    /// topics (created by `topics create` for a fresh deployment, never by an instance).
    pub fn topic_specs(&self, partitions: i32, sources: bool) -> Vec<TopicSpec> {
        let spec = |name: &str, role, settings: Vec<(&'static str, String)>| TopicSpec {
            name: name.to_owned(),
            role,
            partitions,
            settings,
        };
        let mut specs = Vec::new();
        if sources {
            for topic in &self.source_topics {
                specs.push(spec(topic, TopicRole::Source, Vec::new()));
            }
        }
        if self.repartition.is_some() {
            // No time-based retention: forwarded records keep their (event) timestamps, which
            // may be old; what was processed is purged instead (see `purge`).
            specs.push(spec(
                &self.repartition_topic(),
                TopicRole::Repartition,
                vec![
                    ("cleanup.policy", "delete".to_owned()),
                    ("retention.ms", "-1".to_owned()),
                    ("segment.bytes", (64 << 20).to_string()),
                ],
            ));
        }
        specs.push(spec(
            &self.changelog_topic(),
            TopicRole::Changelog,
            vec![("cleanup.policy", "compact".to_owned())],
        ));
        for topic in &self.output_topics {
            specs.push(spec(topic, TopicRole::Output, Vec::new()));
        }
        specs.push(spec(
            &self.dead_letter_topic,
            TopicRole::DeadLetter,
            Vec::new(),
        ));
        specs
    }
}

type Probe = BaseConsumer<LoggingContext>;

fn probe(config: &StreamsConfig) -> Result<Probe, StreamsError> {
    client_config(config)
        .create_with_context(LoggingContext::new("metadata probe"))
        .map_err(|e| StreamsError::kafka("creating a client", e))
}

/// Partition counts of `topics` that exist (and have partitions).
fn partition_counts(
    probe: &Probe,
    config: &StreamsConfig,
    timeout: Duration,
) -> Result<HashMap<String, i32>, StreamsError> {
    let metadata = probe.fetch_metadata(None, timeout).map_err(|e| {
        StreamsError::kafka(
            &format!("reading topic metadata from {}", config.bootstrap_servers),
            e,
        )
    })?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect())
}

/// The needed topics against what exists (partitions and cleanup policy).
pub fn describe_topics(
    config: &StreamsConfig,
    specs: Vec<TopicSpec>,
) -> Result<Vec<TopicState>, StreamsError> {
    let counts = partition_counts(&probe(config)?, config, STARTUP_TIMEOUT)?;
    let admin = admin_client(config)?;
    let existing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| counts.contains_key(&s.name))
        .collect();
    let resources: Vec<ResourceSpecifier<'_>> = existing
        .iter()
        .map(|s| ResourceSpecifier::Topic(&s.name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(STARTUP_TIMEOUT));
    let mut policies = HashMap::new();
    if !resources.is_empty() {
        let results = futures::executor::block_on(admin.describe_configs(&resources, &options))
            .map_err(|e| StreamsError::kafka("describing topic configs", e))?;
        for (spec, result) in existing.iter().zip(results) {
            if let Ok(resource) = result {
                let policy = resource
                    .get("cleanup.policy")
                    .and_then(|entry| entry.value.clone());
                policies.insert(spec.name.clone(), policy);
            }
        }
    }
    Ok(specs
        .into_iter()
        .map(|spec| {
            let existing = counts.get(&spec.name).map(|&partitions| ExistingTopic {
                partitions,
                cleanup_policy: policies.get(&spec.name).cloned().flatten(),
            });
            TopicState { spec, existing }
        })
        .collect())
}

fn admin_client(config: &StreamsConfig) -> Result<AdminClient<LoggingContext>, StreamsError> {
    client_config(config)
        .create_with_context(LoggingContext::new("admin"))
        .map_err(|e| StreamsError::kafka("creating an admin client", e))
}

/// Creates the topics of `specs` that do not exist yet; returns the names it created. A topic
/// created concurrently by someone else counts as existing.
pub fn create_topics(
    config: &StreamsConfig,
    specs: &[TopicSpec],
) -> Result<Vec<String>, StreamsError> {
    let admin = admin_client(config)?;
    let counts = partition_counts(&probe(config)?, config, STARTUP_TIMEOUT)?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !counts.contains_key(&s.name))
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|spec| {
            // -1: the broker's default.replication.factor.
            let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(-1));
            for (key, value) in &spec.settings {
                topic = topic.set(key, value);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(STARTUP_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics(&new_topics, &options))
        .map_err(|e| StreamsError::kafka("creating topics", e))?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => {
                info!(topic = %name, "topic created");
                created.push(name);
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(StreamsError::Topology(format!(
                    "creating topic {name:?} on {} failed: {code}",
                    config.bootstrap_servers
                )));
            }
        }
    }
    let probe = probe(config)?;
    for spec in &missing {
        await_leaders(&probe, &spec.name, config)?;
    }
    Ok(created)
}

/// A topic exists in metadata before its partitions have leaders; reading offsets in that gap
/// fails with NotLeaderForPartition. Waits until every partition has one.
fn await_leaders(probe: &Probe, topic: &str, config: &StreamsConfig) -> Result<(), StreamsError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
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
        if Instant::now() >= deadline {
            return Err(StreamsError::Topology(format!(
                "topic {topic:?} has partitions without a leader on {} after {STARTUP_TIMEOUT:?}: check the broker's log",
                config.bootstrap_servers
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why start-up cannot go on yet.
enum NotYet {
    /// Worth waiting for: the broker unreachable, a source topic not created yet.
    Waiting(String),
    /// A person must fix it.
    Failed(StreamsError),
}

impl From<StreamsError> for NotYet {
    fn from(error: StreamsError) -> Self {
        match error {
            // Unreachable or slow broker: ride it out like any outage.
            StreamsError::Kafka { .. } => Self::Waiting(error.to_string()),
            other => Self::Failed(other),
        }
    }
}

/// Before an instance starts: waits (not ready, logging now and then) until the broker answers
/// and every source topic exists, at most `give_up_after`; then checks the layout and creates
/// the internal and output topics that are missing. `Ok(None)`: shutdown was asked meanwhile.
pub(crate) fn prepare_topics(
    config: &StreamsConfig,
    shutdown: &Shutdown,
) -> Result<Option<TopicLayout>, StreamsError> {
    let started = Instant::now();
    let mut last_said: Option<Instant> = None;
    loop {
        match try_prepare(config) {
            Ok(layout) => return Ok(Some(layout)),
            Err(NotYet::Failed(error)) => return Err(error),
            Err(NotYet::Waiting(reason)) => {
                if started.elapsed() > config.give_up_after {
                    return Err(StreamsError::Outage {
                        what: "starting".to_owned(),
                        lasted_secs: started.elapsed().as_secs(),
                        last_error: reason,
                    });
                }
                if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    warn!(%reason, "waiting before starting (not ready)");
                    last_said = Some(Instant::now());
                }
            }
        }
        let pause = Instant::now() + Duration::from_secs(1);
        while Instant::now() < pause {
            if shutdown.is_requested() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn try_prepare(config: &StreamsConfig) -> Result<TopicLayout, NotYet> {
    let probe = probe(config)?;
    let counts = partition_counts(&probe, config, Duration::from_secs(10))?;
    let mut source_partitions = HashMap::new();
    for topic in &config.source_topics {
        match counts.get(topic) {
            Some(&n) => {
                source_partitions.insert(topic.clone(), n);
            }
            None => {
                return Err(NotYet::Waiting(format!(
                    "source topic {topic:?} does not exist on {}: create the topology's topics with \
                     `tickstream topics create --topology FILE`, or fix the topology's topics.raw",
                    config.bootstrap_servers
                )));
            }
        }
    }
    let largest = source_partitions.values().copied().max().unwrap_or(1);
    let tasks = config.partitions.unwrap_or(largest);
    if config.repartition.is_none()
        && let Some((topic, n)) = source_partitions.iter().find(|(_, n)| **n != tasks)
    {
        return Err(NotYet::Failed(StreamsError::Topology(format!(
            "without repartitioning (topics.repartition = \"never\") every source topic needs {tasks} \
             partitions, but {topic:?} has {n}: give them the same count, or set repartition = \"auto\""
        ))));
    }
    let specs = config.topic_specs(tasks, false);
    for spec in &specs {
        if let Some(&n) = counts.get(&spec.name)
            && n < tasks
        {
            return Err(NotYet::Failed(StreamsError::Topology(format!(
                "{} topic {:?} has {n} partitions but the application has {tasks} tasks: \
                 delete it (a changelog is rebuilt from the inputs' committed offsets only) \
                 or set topics.partitions = {n}",
                spec.role.name(),
                spec.name
            ))));
        }
    }
    create_topics(config, &specs)?;
    for spec in &specs {
        await_leaders(&probe, &spec.name, config)?;
    }
    Ok(TopicLayout {
        source_partitions,
        tasks,
    })
}
