//! librdkafka's log lines and global errors, at the level they deserve.
//!
//! librdkafka reports a broker that restarts at its own ERROR level ("Connect to
//! ipv4#10.0.0.7:9092 failed: Connection refused", "1/1 brokers are down") and repeats it on
//! every reconnect attempt, several times a second; rdkafka's default context forwards all of
//! it as errors. Yet a restarting broker needs nobody: the clients reconnect by themselves and
//! the processors ride the outage out (bounded by `processing.give_up_after`). Errors that
//! need a person (credentials refused, TLS, invalid settings) must not drown in that noise.
//!
//! So every report is classified into a [`Kind`], which decides its [`Severity`]:
//!
//! | kind | e.g. | level |
//! |---|---|---|
//! | `broker_down` | connection refused, transport failure, all brokers down, DNS | WARN |
//! | `unknown_topic` | a subscribed topic that does not exist (yet) | WARN |
//! | `coordination` | rebalances, coordinator or leader moving | DEBUG |
//! | `partition_eof` | the end of a partition | DEBUG |
//! | `authentication`, `authorization`, `ssl`, `config`, `fatal` | SASL refused, ACLs, TLS handshake, bad settings | ERROR |
//! | `other` | anything else: librdkafka's level, ERROR capped at WARN | WARN / INFO / DEBUG |
//!
//! Unknown reports are capped at WARN: when something stops working for good, the processor
//! that depends on it says so itself at ERROR (a delivery that failed, an outage given up).
//!
//! Each kind is rate-limited ([`RateLimiter`]): at most one line per [`RATE_LIMIT_WINDOW`],
//! the next one carrying how many were suppressed meanwhile. DEBUG lines (what
//! `debug=...` asks for on purpose) are never suppressed.
//!
//! Use [`LoggingContext`] for a client without a context of its own; a client with its own
//! context holds a [`ClientLog`] and forwards `log` and `error` to it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, error, info, warn};

/// At most one line per kind in this long.
pub const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(10);

/// The tracing level a report is logged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Debug,
    Info,
    Warn,
    Error,
}

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A broker cannot be reached: refused, reset, timed out, all brokers down, name
    /// resolution. Clients reconnect by themselves.
    BrokerDown,
    /// A topic that does not exist, or not yet: a consumer picks it up once it is created.
    UnknownTopic,
    /// Group coordination and leadership moving: rebalances, elections, a coordinator loading.
    Coordination,
    /// A consumer reached the end of a partition: nothing wrong at all.
    PartitionEof,
    /// Credentials refused (SASL).
    Authentication,
    /// The credentials lack a permission (ACLs on a topic, group, cluster, transactional id).
    Authorization,
    /// TLS: handshake, certificates.
    Ssl,
    /// Settings librdkafka refuses.
    Config,
    /// librdkafka gave up on the client.
    Fatal,
    /// Anything else.
    Other,
}

impl Kind {
    /// The `kind` field of the log line.
    pub fn label(self) -> &'static str {
        match self {
            Self::BrokerDown => "broker_down",
            Self::UnknownTopic => "unknown_topic",
            Self::Coordination => "coordination",
            Self::PartitionEof => "partition_eof",
            Self::Authentication => "authentication",
            Self::Authorization => "authorization",
            Self::Ssl => "ssl",
            Self::Config => "config",
            Self::Fatal => "fatal",
            Self::Other => "other",
        }
    }

    /// Whether a person must act: these are the only kinds logged at ERROR.
    pub fn needs_a_person(self) -> bool {
        matches!(
            self,
            Self::Authentication | Self::Authorization | Self::Ssl | Self::Config | Self::Fatal
        )
    }

    /// What the processors name as the cause when they give up on an unreachable broker.
    fn is_problem(self) -> bool {
        !matches!(self, Self::Coordination | Self::PartitionEof | Self::Other)
    }
}

/// A classified report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub kind: Kind,
    pub severity: Severity,
}

impl Classification {
    fn of(kind: Kind) -> Self {
        let severity = match kind {
            Kind::BrokerDown | Kind::UnknownTopic | Kind::Other => Severity::Warn,
            Kind::Coordination | Kind::PartitionEof => Severity::Debug,
            _ => Severity::Error,
        };
        Self { kind, severity }
    }
}

/// Phrases of a broker that is away (checked last: an SSL or SASL failure also mentions the
/// broker it talked to).
const BROKER_DOWN: [&str; 14] = [
    "connection refused",
    "connection reset",
    "broken pipe",
    "transport failure",
    "brokers are down",
    "broker connections are down",
    "failed to resolve",
    "name or service not known",
    "no route to host",
    "network is unreachable",
    "timed out",
    "disconnected",
    "connect to",
    "connection setup timed out",
];

/// Phrases that only appear when a topic is missing.
const UNKNOWN_TOPIC: [&str; 4] = [
    "unknown topic",
    "subscribed topic not available",
    "topic not available",
    "unknown partition",
];

fn contains_any(text: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|p| text.contains(p))
}

/// A log line from librdkafka's log callback.
pub fn classify_log(level: RDKafkaLogLevel, facility: &str, message: &str) -> Classification {
    let text = message.to_ascii_lowercase();
    let facility = facility.to_ascii_uppercase();
    if let Some(kind) = classify_text(&text, &facility) {
        return Classification::of(kind);
    }
    let severity = match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => Severity::Warn,
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => Severity::Info,
        RDKafkaLogLevel::Debug => Severity::Debug,
    };
    Classification {
        kind: Kind::Other,
        severity,
    }
}

/// What the words of a report say, when they say enough. `text` is lower case, `facility`
/// upper case.
fn classify_text(text: &str, facility: &str) -> Option<Kind> {
    let broker_down = contains_any(text, &BROKER_DOWN);
    if text.contains("sasl") && (text.contains("fail") || text.contains("error"))
        || text.contains("authentication failed")
        || text.contains("invalid username or password")
    {
        return Some(Kind::Authentication);
    }
    if text.contains("authorization failed") || text.contains("not authorized") {
        return Some(Kind::Authorization);
    }
    // A TLS handshake cut short by a broker going away is the broker's absence, not a
    // certificate problem. ("Disconnected while requesting ApiVersion: might be caused by
    // incorrect security.protocol configuration (connecting to a SSL listener?)" is only a
    // guess: a broker starting or stopping causes it too, so it stays a broker_down warning.)
    let tls = facility == "SSL"
        || text.contains("ssl handshake")
        || text.contains("ssl routines")
        || text.contains("certificate");
    if tls && !(text.contains("connection refused") || text.contains("connection reset")) {
        return Some(Kind::Ssl);
    }
    if facility == "CONFWARN"
        || text.contains("configuration property")
        || text.contains("invalid value for configuration")
    {
        return Some(Kind::Config);
    }
    if text.contains("fatal") && !text.contains("non-fatal") {
        return Some(Kind::Fatal);
    }
    if contains_any(text, &UNKNOWN_TOPIC) {
        return Some(Kind::UnknownTopic);
    }
    if text.contains("partition eof") || text.contains("reached end") {
        return Some(Kind::PartitionEof);
    }
    if broker_down {
        return Some(Kind::BrokerDown);
    }
    if text.contains("coordinator")
        || text.contains("rebalance")
        || text.contains("not leader")
        || text.contains("leader not available")
    {
        return Some(Kind::Coordination);
    }
    None
}

/// An error from librdkafka's error callback (or a consumer's poll), by its code first, then
/// by `reason`'s words.
pub fn classify_error(error: &KafkaError, reason: &str) -> Classification {
    use RDKafkaErrorCode as C;
    if let KafkaError::PartitionEOF(_) = error {
        return Classification::of(Kind::PartitionEof);
    }
    if let KafkaError::ClientConfig(..) = error {
        return Classification::of(Kind::Config);
    }
    let text = format!("{error} {reason}").to_ascii_lowercase();
    let kind = match error.rdkafka_error_code() {
        Some(
            C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::BrokerNotAvailable
            | C::TimedOutQueue,
        ) => Some(Kind::BrokerDown),
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition) => {
            Some(Kind::UnknownTopic)
        }
        Some(C::PartitionEOF) => Some(Kind::PartitionEof),
        Some(
            C::Authentication
            | C::SaslAuthenticationFailed
            | C::UnsupportedSASLMechanism
            | C::IllegalSASLState,
        ) => Some(Kind::Authentication),
        Some(
            C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::DelegationTokenAuthorizationFailed,
        ) => Some(Kind::Authorization),
        Some(C::SSL) => {
            if text.contains("connection refused") || text.contains("connection reset") {
                Some(Kind::BrokerDown)
            } else {
                Some(Kind::Ssl)
            }
        }
        Some(C::InvalidConfig | C::InvalidArgument | C::NotConfigured) => Some(Kind::Config),
        Some(C::Fatal) => Some(Kind::Fatal),
        Some(
            C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::CoordinatorLoadInProgress
            | C::RebalanceInProgress
            | C::IllegalGeneration
            | C::UnknownMemberId
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::FencedLeaderEpoch
            | C::WaitingForCoordinator,
        ) => Some(Kind::Coordination),
        _ => None,
    };
    match kind.or_else(|| classify_text(&text, "")) {
        Some(kind) => Classification::of(kind),
        None => Classification::of(Kind::Other),
    }
}

/// At most one event per key per window; counts what it held back.
#[derive(Debug)]
pub struct RateLimiter<K> {
    window: Duration,
    slots: HashMap<K, Slot>,
}

#[derive(Debug)]
struct Slot {
    last_emitted: Instant,
    suppressed: u64,
}

impl<K: Eq + Hash> RateLimiter<K> {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            slots: HashMap::new(),
        }
    }

    /// Whether an event of `key` at `now` is emitted: `Some(n)` with the `n` events of that
    /// key suppressed since the last emitted one, or `None` to suppress it. `now` is passed
    /// in, so tests need no sleeps.
    pub fn check(&mut self, key: K, now: Instant) -> Option<u64> {
        match self.slots.get_mut(&key) {
            Some(slot) if now.saturating_duration_since(slot.last_emitted) < self.window => {
                slot.suppressed += 1;
                None
            }
            Some(slot) => {
                let suppressed = std::mem::take(&mut slot.suppressed);
                slot.last_emitted = now;
                Some(suppressed)
            }
            None => {
                self.slots.insert(
                    key,
                    Slot {
                        last_emitted: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// Rate-limiting key: the kind, and for unclassified reports librdkafka's facility too, so
/// unrelated messages do not hide each other.
type LimitKey = (Kind, Option<String>);

/// Logs one client's librdkafka reports (see the module docs) and remembers the last problem,
/// for the processors to name as the cause when they give up.
#[derive(Debug)]
pub struct ClientLog {
    client: String,
    limiter: Mutex<RateLimiter<LimitKey>>,
    last_problem: Mutex<Option<String>>,
}

impl ClientLog {
    /// `client` names the client in every line, e.g. `"sink consumer"`.
    pub fn new(client: impl Into<String>) -> Self {
        Self {
            client: client.into(),
            limiter: Mutex::new(RateLimiter::new(RATE_LIMIT_WINDOW)),
            last_problem: Mutex::new(None),
        }
    }

    /// What `ClientContext::log` receives.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let class = classify_log(level, facility, message);
        self.emit(Instant::now(), class, facility, message);
    }

    /// What `ClientContext::error` receives, or an error a consumer's poll returned.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        let class = classify_error(error, reason);
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            format!("{error}: {reason}")
        };
        self.emit(Instant::now(), class, "ERROR", &text);
    }

    /// The text of the last broker, topic, credential or TLS problem reported, if any.
    pub fn last_problem(&self) -> Option<String> {
        self.last_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Logs `text` as `class` says, unless the rate limit holds it back; returns whether it
    /// was logged.
    fn emit(&self, now: Instant, class: Classification, facility: &str, text: &str) -> bool {
        if class.kind.is_problem() {
            *self
                .last_problem
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(text.to_owned());
        }
        let suppressed = if class.severity == Severity::Debug {
            0
        } else {
            let key = (
                class.kind,
                (class.kind == Kind::Other).then(|| facility.to_owned()),
            );
            let verdict = self
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .check(key, now);
            match verdict {
                Some(n) => n,
                None => return false,
            }
        };
        let client = self.client.as_str();
        let kind = class.kind.label();
        macro_rules! line {
            ($macro:ident) => {
                if suppressed > 0 {
                    $macro!(
                        target: "librdkafka", client, kind, facility, suppressed,
                        "{text} ({suppressed} similar line(s) suppressed in the last {}s)",
                        RATE_LIMIT_WINDOW.as_secs()
                    )
                } else {
                    $macro!(target: "librdkafka", client, kind, facility, "{text}")
                }
            };
        }
        match class.severity {
            Severity::Debug => line!(debug),
            Severity::Info => line!(info),
            Severity::Warn => line!(warn),
            Severity::Error => line!(error),
        }
        true
    }
}

/// A client context that only logs (see the module docs): for producers and consumers that
/// need no callbacks of their own.
#[derive(Debug)]
pub struct LoggingContext {
    log: ClientLog,
}

impl LoggingContext {
    pub fn new(client: impl Into<String>) -> Self {
        Self {
            log: ClientLog::new(client),
        }
    }

    pub fn client_log(&self) -> &ClientLog {
        &self.log
    }
}

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }
}

impl ConsumerContext for LoggingContext {}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_kind(level: RDKafkaLogLevel, facility: &str, message: &str) -> (Kind, Severity) {
        let c = classify_log(level, facility, message);
        (c.kind, c.severity)
    }

    #[test]
    fn a_restarting_broker_is_a_warning_not_an_error() {
        let lines = [
            (
                "FAIL",
                "127.0.0.1:39092/bootstrap: Connect to ipv4#127.0.0.1:39092 failed: Connection \
                 refused (after 0ms in state CONNECT)",
            ),
            (
                "FAIL",
                "127.0.0.1:39092/1: Disconnected (after 11ms in state UP, 1 identical error(s) \
                 suppressed)",
            ),
            ("ERROR", "1/1 brokers are down"),
            (
                "FAIL",
                "kafka:9092/bootstrap: Failed to resolve 'kafka:9092': Name or service not known",
            ),
            (
                "FAIL",
                "127.0.0.1:39092/1: Disconnected while requesting ApiVersion: might be caused by \
                 incorrect security.protocol configuration (connecting to a SSL listener?) or \
                 broker version is < 0.10 (see api.version.request) (after 2ms in state \
                 APIVERSION_QUERY)",
            ),
            (
                "REQTMOUT",
                "127.0.0.1:39092/1: Timed out ProduceRequest in flight (after 30001ms)",
            ),
        ];
        for (facility, message) in lines {
            assert_eq!(
                log_kind(RDKafkaLogLevel::Error, facility, message),
                (Kind::BrokerDown, Severity::Warn),
                "{message}"
            );
        }
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            let c = classify_error(&KafkaError::Global(code), "127.0.0.1:39092/1: Disconnected");
            assert_eq!((c.kind, c.severity), (Kind::BrokerDown, Severity::Warn));
        }
    }

    #[test]
    fn missing_topics_and_partition_ends_are_not_errors() {
        let c = classify_error(
            &KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition),
            "Subscribed topic not available: analytics.jumps: Broker: Unknown topic or partition",
        );
        assert_eq!((c.kind, c.severity), (Kind::UnknownTopic, Severity::Warn));
        let c = classify_error(&KafkaError::PartitionEOF(3), "");
        assert_eq!((c.kind, c.severity), (Kind::PartitionEof, Severity::Debug));
        assert_eq!(
            log_kind(
                RDKafkaLogLevel::Notice,
                "CGRPOP",
                "Group \"g\" heartbeat error response in state up: Broker: Group rebalance in \
                 progress"
            ),
            (Kind::Coordination, Severity::Debug)
        );
    }

    #[test]
    fn what_a_person_must_fix_is_an_error() {
        let cases = [
            (
                "FAIL",
                "127.0.0.1:9093/bootstrap: SASL authentication error: Authentication failed: \
                 Invalid username or password",
                Kind::Authentication,
            ),
            (
                "FAIL",
                "127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL \
                 routines::certificate verify failed: broker certificate could not be verified",
                Kind::Ssl,
            ),
            (
                "CONFWARN",
                "Configuration property session.timeout.ms is a consumer property and will be \
                 ignored by this producer instance",
                Kind::Config,
            ),
            (
                "ERROR",
                "Fatal error: Broker: Producer attempted an operation with an old epoch",
                Kind::Fatal,
            ),
        ];
        for (facility, message, kind) in cases {
            let (found, severity) = log_kind(RDKafkaLogLevel::Error, facility, message);
            assert_eq!((found, severity), (kind, Severity::Error), "{message}");
            assert!(found.needs_a_person());
        }
        let c = classify_error(
            &KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed),
            "Broker: Topic authorization failed",
        );
        assert_eq!((c.kind, c.severity), (Kind::Authorization, Severity::Error));
        let c = classify_error(
            &KafkaError::Global(RDKafkaErrorCode::SSL),
            "handshake failed",
        );
        assert_eq!(c.kind, Kind::Ssl);
        // A handshake cut short by the broker going away is the broker's absence.
        let c = classify_error(
            &KafkaError::Global(RDKafkaErrorCode::SSL),
            "SSL handshake failed: Connection reset by peer",
        );
        assert_eq!(c.kind, Kind::BrokerDown);
    }

    #[test]
    fn unknown_reports_keep_their_level_but_never_reach_error() {
        assert_eq!(
            log_kind(RDKafkaLogLevel::Error, "XYZ", "something new"),
            (Kind::Other, Severity::Warn)
        );
        assert_eq!(
            log_kind(RDKafkaLogLevel::Info, "XYZ", "something new"),
            (Kind::Other, Severity::Info)
        );
        assert_eq!(
            log_kind(RDKafkaLogLevel::Debug, "XYZ", "something new"),
            (Kind::Other, Severity::Debug)
        );
    }

    #[test]
    fn rate_limiter_emits_once_per_window_and_counts_the_rest() {
        let window = Duration::from_secs(10);
        let mut limiter = RateLimiter::new(window);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            limiter.check("down", at(0)),
            Some(0),
            "the first is emitted"
        );
        assert_eq!(limiter.check("down", at(100)), None);
        assert_eq!(limiter.check("down", at(9_999)), None);
        assert_eq!(limiter.check("ssl", at(5_000)), Some(0), "kinds are apart");
        assert_eq!(
            limiter.check("down", at(10_000)),
            Some(2),
            "a window later, with the count held back"
        );
        assert_eq!(limiter.check("down", at(10_001)), None);
        assert_eq!(limiter.check("down", at(30_000)), Some(1));
        assert_eq!(limiter.check("down", at(45_000)), Some(0));
    }

    #[test]
    fn client_log_suppresses_repeats_and_remembers_the_last_problem() {
        let log = ClientLog::new("test");
        let t0 = Instant::now();
        let refused = classify_log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "Connect to ipv4#127.0.0.1:1 failed: Connection refused",
        );
        assert!(log.emit(t0, refused, "FAIL", "refused 1"));
        assert!(!log.emit(t0 + Duration::from_secs(1), refused, "FAIL", "refused 2"));
        assert_eq!(log.last_problem().as_deref(), Some("refused 2"));
        let eof = classify_error(&KafkaError::PartitionEOF(0), "");
        assert!(
            log.emit(t0, eof, "ERROR", "eof"),
            "DEBUG is never suppressed"
        );
        assert!(log.emit(t0, eof, "ERROR", "eof"));
        assert_eq!(
            log.last_problem().as_deref(),
            Some("refused 2"),
            "the end of a partition is no problem"
        );
        assert!(log.emit(t0 + RATE_LIMIT_WINDOW, refused, "FAIL", "refused 3"));
    }
}
