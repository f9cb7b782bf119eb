//! What one streams application instance needs to know, validated before anything connects.

use std::path::PathBuf;
use std::time::Duration;

/// Kafka Streams' `processing.guarantee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// Outputs, changelog writes and input offsets commit in one Kafka transaction per commit
    /// interval (exactly-once v2: one transactional producer per instance, fenced by the
    /// consumer group generation). Downstream `read_committed` consumers see each result once.
    ExactlyOnce,
    /// Outputs are flushed, then offsets committed: nothing lost, duplicates after a crash.
    AtLeastOnce,
}

/// When source records take the repartition hop (Kafka Streams repartitions before a stateful
/// step whose key is not the record's key; see [`crate::Processor::state_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepartitionPolicy {
    /// A record whose key is its state key and that already sits in the partition Kafka's
    /// default partitioner (murmur2) gives that key among the task count is processed where
    /// it is; every other record is re-keyed through the repartition topic.
    Auto,
    /// Every source record takes the hop.
    Always,
}

#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// Kafka Streams' `application.id`: the consumer group, the transactional-id prefix and the
    /// changelog topic prefix. Every instance of one application shares it.
    pub application_id: String,
    pub bootstrap_servers: String,
    /// Input topics; co-partitioned (same partition count), partition `p` of each feeds task `p`.
    pub source_topics: Vec<String>,
    /// The processor's state store; its changelog is `<application_id>-<store_name>-changelog`.
    pub store_name: String,
    /// Where rejected records go, with the reason in headers.
    pub dead_letter_topic: String,
    /// Topics the processor emits to; created (with the inputs' partition count) if missing.
    pub output_topics: Vec<String>,
    /// `state.dir`: local state lives in `<state_dir>/<application_id>`.
    pub state_dir: PathBuf,
    /// Stable identity of this instance across restarts, so a restarted instance reuses its
    /// transactional id and fences its crashed predecessor at once. Default: generated once and
    /// kept in the state dir.
    pub instance_id: Option<String>,
    pub processing_guarantee: ProcessingGuarantee,
    /// `commit.interval.ms`: how often to commit (Kafka Streams' exactly-once default: 100 ms).
    pub commit_interval: Duration,
    /// Commit early once this many records were processed since the last commit.
    pub max_uncommitted_records: usize,
    /// How long the group waits for a silent member before moving its partitions elsewhere:
    /// the time a crashed instance's partitions stay unprocessed (a restarted instance rejoins
    /// and gets work back within this too). Kafka's minimum is 6 s by default.
    pub session_timeout: Duration,
    /// How long an open transaction may live before the broker aborts it: bounds how long a
    /// crashed instance's partitions stay blocked when no instance with its id comes back.
    pub transaction_timeout: Duration,
    /// Extra librdkafka settings applied to every client (security.protocol, sasl.*, ssl.*…).
    pub kafka_settings: Vec<(String, String)>,
    /// `None`: no repartition topic; partition `p` of every (co-partitioned) source is task `p`.
    /// `Some`: source records are re-keyed by [`crate::Processor::state_key`] through
    /// [`Self::repartition_topic`] as the policy says, and tasks own state keys, not partitions.
    pub repartition: Option<RepartitionPolicy>,
    /// The task count: partitions of the repartition topic, the changelog and the outputs this
    /// instance creates. Default: the source topics' (largest) partition count.
    pub partitions: Option<i32>,
    /// Kafka Streams' `max.task.idle.ms`: source records are taken in timestamp order across
    /// the assigned source partitions; one with nothing buffered that has not reached its end
    /// is waited for at most this long.
    pub max_task_idle: Duration,
    /// How long to keep retrying while the broker is unreachable (not ready meanwhile) before
    /// failing with [`crate::StreamsError::Outage`].
    pub give_up_after: Duration,
    /// librdkafka's `compression.type` for everything this instance produces.
    pub compression: String,
}

impl StreamsConfig {
    /// A configuration with Kafka Streams-like defaults.
    pub fn new(application_id: &str, bootstrap_servers: &str, source_topics: &[&str]) -> Self {
        Self {
            application_id: application_id.to_owned(),
            bootstrap_servers: bootstrap_servers.to_owned(),
            source_topics: source_topics.iter().map(|t| (*t).to_owned()).collect(),
            store_name: "state".to_owned(),
            dead_letter_topic: format!("{application_id}.dlq"),
            output_topics: Vec::new(),
            state_dir: PathBuf::from("./data/state"),
            instance_id: None,
            processing_guarantee: ProcessingGuarantee::ExactlyOnce,
            commit_interval: Duration::from_millis(100),
            max_uncommitted_records: 50_000,
            session_timeout: Duration::from_secs(10),
            transaction_timeout: Duration::from_secs(10),
            kafka_settings: Vec::new(),
            repartition: None,
            partitions: None,
            max_task_idle: Duration::from_millis(100),
            give_up_after: Duration::from_secs(600),
            compression: "none".to_owned(),
        }
    }

    pub fn changelog_topic(&self) -> String {
        format!("{}-{}-changelog", self.application_id, self.store_name)
    }

    /// `<application_id>-repartition`: source records re-keyed by their state key.
    pub fn repartition_topic(&self) -> String {
        format!("{}-repartition", self.application_id)
    }

    /// Fails fast, naming the setting and how to fix it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |setting: &'static str, problem: String| Err(ConfigError { setting, problem });
        let legal = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if !legal(&self.application_id) {
            return invalid(
                "application_id",
                format!(
                    "{:?} must be non-empty ASCII letters, digits, '.', '_' or '-'",
                    self.application_id
                ),
            );
        }
        if !legal(&self.store_name) {
            return invalid(
                "store_name",
                format!("{:?}: same rules as application_id", self.store_name),
            );
        }
        if self.bootstrap_servers.trim().is_empty() {
            return invalid(
                "bootstrap_servers",
                "is empty: set TICKSTREAM_KAFKA_BROKERS (host:port,…)".into(),
            );
        }
        if self.source_topics.is_empty() {
            return invalid("source_topics", "no input topic: name at least one".into());
        }
        if self.source_topics.contains(&self.dead_letter_topic)
            || self.output_topics.contains(&self.dead_letter_topic)
        {
            return invalid(
                "dead_letter_topic",
                format!(
                    "{:?} is also an input or output topic: give it its own",
                    self.dead_letter_topic
                ),
            );
        }
        if let Some(topic) = self
            .output_topics
            .iter()
            .find(|t| self.source_topics.contains(t))
        {
            return invalid(
                "output_topics",
                format!("{topic:?} is also an input: that would loop forever"),
            );
        }
        if self.commit_interval.is_zero() {
            return invalid(
                "commit_interval",
                "must be positive (Kafka Streams' default is 100 ms)".into(),
            );
        }
        if self.partitions.is_some_and(|n| n < 1) {
            return invalid("partitions", "must be at least 1".into());
        }
        if self.source_topics.contains(&self.repartition_topic())
            || self.output_topics.contains(&self.repartition_topic())
        {
            return invalid(
                "application_id",
                format!(
                    "{:?} is the repartition topic, which must not be an input or output",
                    self.repartition_topic()
                ),
            );
        }
        if self.max_uncommitted_records == 0 {
            return invalid("max_uncommitted_records", "must be at least 1".into());
        }
        if self.transaction_timeout <= self.commit_interval {
            return invalid(
                "transaction_timeout",
                format!(
                    "{:?} must exceed commit_interval {:?}",
                    self.transaction_timeout, self.commit_interval
                ),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid streams setting `{setting}`: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_the_changelog_after_the_application_and_store() {
        let config = StreamsConfig::new("enrich", "127.0.0.1:9092", &["prices.raw"]);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.changelog_topic(), "enrich-state-changelog");
        assert_eq!(config.dead_letter_topic, "enrich.dlq");
    }

    #[test]
    fn nonsense_is_refused_with_the_setting_named() {
        let base = StreamsConfig::new("enrich", "127.0.0.1:9092", &["in"]);
        let mut looped = base.clone();
        looped.output_topics = vec!["in".into()];
        assert_eq!(
            looped.validate().map_err(|e| e.setting),
            Err("output_topics")
        );
        let mut bad_id = base.clone();
        bad_id.application_id = "has space".into();
        assert_eq!(
            bad_id.validate().map_err(|e| e.setting),
            Err("application_id")
        );
        let mut no_brokers = base;
        no_brokers.bootstrap_servers = " ".into();
        let error = no_brokers.validate().expect_err("empty brokers");
        assert!(
            error.to_string().contains("TICKSTREAM_KAFKA_BROKERS"),
            "{error}"
        );
    }
}
