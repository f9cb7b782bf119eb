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
    pub kafka_settings: KafkaSettings,
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
            kafka_settings: KafkaSettings::default(),
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

/// librdkafka settings from the user (security.protocol, sasl.*, ssl.*…), checked when built:
/// none that loads code or runs a command, each one a setting librdkafka knows with a value it
/// takes. `Debug` redacts the values of secret settings (passwords, keys, tokens).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaSettings(Vec<(String, String)>);

/// Settings refused whatever their value: whoever can set them runs code in this process.
pub const DENIED_KAFKA_SETTINGS: [(&str, &str); 5] = [
    ("plugin.library.paths", "loads shared libraries (dlopen)"),
    ("sasl.kerberos.kinit.cmd", "runs a shell command"),
    ("ssl.engine.location", "loads an OpenSSL engine library"),
    ("ssl.engine.id", "loads an OpenSSL engine"),
    ("ssl.providers", "loads OpenSSL provider modules"),
];

/// Settings librdkafka substitutes into its kinit shell command (GSSAPI): only characters
/// that mean nothing to a shell are allowed in them.
const SHELL_SUBSTITUTED_SETTINGS: [&str; 2] = ["sasl.kerberos.principal", "sasl.kerberos.keytab"];

/// Parts of a setting's name that mark its value as secret.
const SECRET_SETTING_MARKERS: [&str; 7] = [
    "password",
    "secret",
    "passphrase",
    ".pem",
    "jaas",
    "token",
    "oauthbearer.config",
];

impl KafkaSettings {
    /// Checks every setting; the first one refused is the error, naming its key (never its
    /// value, which may be a password).
    pub fn new(settings: Vec<(String, String)>) -> Result<Self, KafkaSettingError> {
        for (key, value) in &settings {
            check_setting(key, value)?;
        }
        Ok(Self(settings))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, (String, String)> {
        self.0.iter()
    }

    /// Whether `key`'s value is a secret (shown redacted).
    pub fn is_secret(key: &str) -> bool {
        SECRET_SETTING_MARKERS
            .iter()
            .any(|marker| key.contains(marker))
    }
}

fn check_setting(key: &str, value: &str) -> Result<(), KafkaSettingError> {
    if let Some((_, why)) = DENIED_KAFKA_SETTINGS
        .iter()
        .find(|(denied, _)| *denied == key)
    {
        return Err(KafkaSettingError::Denied {
            key: key.to_owned(),
            why,
        });
    }
    let shell_safe = |c: char| c.is_ascii_alphanumeric() || "._-/@+:".contains(c);
    if SHELL_SUBSTITUTED_SETTINGS.contains(&key) && !value.chars().all(shell_safe) {
        return Err(KafkaSettingError::ShellUnsafe {
            key: key.to_owned(),
        });
    }
    // librdkafka's own check, on a configuration of its own (no client is created). Its
    // message quotes the value, so only the kind of refusal is kept.
    let mut config = rdkafka::ClientConfig::new();
    config.set(key, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
            ..,
        )) => Err(KafkaSettingError::Unknown {
            key: key.to_owned(),
        }),
        Err(_) => Err(KafkaSettingError::InvalidValue {
            key: key.to_owned(),
        }),
    }
}

impl std::ops::Deref for KafkaSettings {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a KafkaSettings {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, value)| {
                let shown = if Self::is_secret(key) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (key, shown)
            }))
            .finish()
    }
}

/// A librdkafka setting refused, named by its key; its value is never shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaSettingError {
    #[error("librdkafka setting `{key}` is not allowed: it {why}")]
    Denied { key: String, why: &'static str },
    #[error(
        "librdkafka setting `{key}` goes into a shell command: only letters, digits and . _ - / @ + : are allowed in it"
    )]
    ShellUnsafe { key: String },
    #[error("librdkafka has no setting `{key}`; check the name in librdkafka's CONFIGURATION.md")]
    Unknown { key: String },
    #[error(
        "librdkafka refuses the value of `{key}` (not shown); check it in librdkafka's CONFIGURATION.md"
    )]
    InvalidValue { key: String },
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

    fn settings(pairs: &[(&str, &str)]) -> Result<KafkaSettings, KafkaSettingError> {
        KafkaSettings::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn settings_that_load_code_or_run_commands_are_refused_by_key_not_value() {
        for (key, _) in DENIED_KAFKA_SETTINGS {
            let error = settings(&[(key, "/tmp/S3cretPW.so")]).expect_err(key);
            let message = error.to_string();
            assert!(message.contains(key), "{message}");
            assert!(!message.contains("S3cretPW"), "{message}");
        }
        let error = settings(&[("sasl.kerberos.principal", "x; touch /tmp/S3cretPW")])
            .expect_err("a shell command in the principal");
        assert!(!error.to_string().contains("S3cretPW"), "{error}");
        let error = settings(&[("sasl.passwrd", "S3cretPW")]).expect_err("a typo");
        assert_eq!(
            error,
            KafkaSettingError::Unknown {
                key: "sasl.passwrd".into()
            }
        );
        let error = settings(&[("acks", "S3cretPW")]).expect_err("not a number");
        assert!(
            matches!(error, KafkaSettingError::InvalidValue { .. }),
            "{error}"
        );
        assert!(!error.to_string().contains("S3cretPW"), "{error}");
    }

    #[test]
    fn debug_redacts_secret_values_only() {
        let settings = settings(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.password", "S3cretPW"),
            ("ssl.key.password", "S3cretPW"),
            ("sasl.username", "tickstream"),
        ])
        .expect("valid settings");
        let mut config = StreamsConfig::new("enrich", "127.0.0.1:9092", &["in"]);
        config.kafka_settings = settings;
        let debug = format!("{config:?}");
        assert!(!debug.contains("S3cretPW"), "{debug}");
        assert!(debug.contains("SASL_SSL"), "{debug}");
    }
}
