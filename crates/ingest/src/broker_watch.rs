//! Whether the broker takes ingest's ticks, for `/readyz`, and when to give up.
//!
//! While the broker is away librdkafka buffers the ticks (up to its queue limits) and resends
//! them, idempotently and in order, once it is back: ingest rides the outage out, the source
//! keeps its pace. Meanwhile ingest is not ready. The broker counts as away when ticks wait
//! and none has been acknowledged for [`STALL`], or when nothing flows and a metadata request
//! goes unanswered. An outage longer than `processing.give_up_after` (timed from the last
//! acknowledgement or answer) is an error naming the broker and the last problem librdkafka
//! reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::error::KafkaResult;
use rdkafka::producer::{Producer, ThreadedProducer};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::kafka::{DeliveryCounter, DeliveryState, SinkError};

/// Ticks waiting with no acknowledgement for this long: the broker does not take them.
pub(crate) const STALL: Duration = Duration::from_secs(5);
/// With no acknowledgement for this long, ask the broker whether it answers.
const PROBE_AFTER: Duration = Duration::from_secs(1);
/// How long a metadata request may take before the broker counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Before the broker first answered, waiting this long is start-up, not worth a warning.
const STARTUP_GRACE: Duration = Duration::from_secs(5);
/// While the outage lasts, a reminder this often.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The broker acknowledges or answers.
    Up,
    /// It does not; `cause` says what was seen.
    Down { cause: String },
}

/// What [`decide`] looks at: pure facts, so the rules are tested without a broker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub(crate) now: Option<Instant>,
    pub(crate) in_flight: i32,
    /// Since when ticks have been waiting without a break (`None` when none waits).
    pub(crate) pending_since: Option<Instant>,
    pub(crate) last_delivery: Option<Instant>,
    pub(crate) last_answer: Option<Instant>,
    /// The last metadata request failed at this time, with this error.
    pub(crate) probe_failed: Option<(Instant, String)>,
}

/// The rules (see the module docs).
pub(crate) fn decide(facts: &Facts) -> Verdict {
    let now = facts.now.unwrap_or_else(Instant::now);
    if facts.in_flight > 0 {
        let waiting_since = match (facts.last_delivery, facts.pending_since) {
            (Some(d), Some(p)) => d.max(p),
            (d, p) => d.or(p).unwrap_or(now),
        };
        let waited = now.saturating_duration_since(waiting_since);
        if waited >= STALL {
            return Verdict::Down {
                cause: format!(
                    "{} tick(s) waiting, none acknowledged for {} s",
                    facts.in_flight,
                    waited.as_secs()
                ),
            };
        }
    }
    if let Some((failed_at, error)) = &facts.probe_failed {
        // An acknowledgement after the failed request proves the broker back.
        if facts.last_delivery.is_none_or(|d| d < *failed_at) {
            return Verdict::Down {
                cause: error.clone(),
            };
        }
    }
    if facts.last_delivery.is_none() && facts.last_answer.is_none() {
        return Verdict::Down {
            cause: "no answer yet".to_owned(),
        };
    }
    Verdict::Up
}

/// Watches one producer; [`BrokerWatch::check`] is called every few hundred milliseconds.
pub struct BrokerWatch {
    producer: ThreadedProducer<DeliveryCounter>,
    state: Arc<DeliveryState>,
    brokers: String,
    probe_topic: Option<String>,
    give_up_after: Duration,
    started: Instant,
    probe: Option<JoinHandle<KafkaResult<()>>>,
    probe_started: Option<Instant>,
    facts: Facts,
    /// Start of the current outage, and when it was last reported.
    down: Option<(Instant, Instant)>,
    /// The broker has answered at least once.
    answered: bool,
    /// Gives the producer its bootstrap brokers again when probes fail.
    rebootstrapper: tickstream_streams::Rebootstrapper,
}

impl BrokerWatch {
    pub(crate) fn new(
        producer: ThreadedProducer<DeliveryCounter>,
        state: Arc<DeliveryState>,
        brokers: String,
        probe_topic: Option<String>,
        give_up_after: Duration,
    ) -> Self {
        Self {
            producer,
            state,
            brokers,
            probe_topic,
            give_up_after,
            started: Instant::now(),
            probe: None,
            probe_started: None,
            facts: Facts::default(),
            rebootstrapper: tickstream_streams::Rebootstrapper::default(),
            down: None,
            answered: false,
        }
    }

    /// Whether ingest is ready (the broker takes ticks); `Err` once the broker has been
    /// unreachable for `give_up_after`. Runs the metadata request in the background, so it
    /// never blocks.
    pub(crate) fn check(&mut self) -> Result<bool, SinkError> {
        let now = Instant::now();
        if self.probe.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(outcome) = self.probe.take().and_then(FutureExt::now_or_never)
        {
            match outcome {
                Ok(Ok(())) => {
                    self.rebootstrapper.answered();
                    self.facts.last_answer = Some(now);
                    self.facts.probe_failed = None;
                }
                Ok(Err(error)) => {
                    // A producer left without brokers would never find them again by itself.
                    self.rebootstrapper
                        .failed(self.producer.client(), &self.brokers);
                    let cause = match self.state.log.last_problem() {
                        Some(problem) => format!("{error}; last report: {problem}"),
                        None => error.to_string(),
                    };
                    self.facts.probe_failed = Some((self.probe_started.unwrap_or(now), cause));
                }
                Err(error) => {
                    self.facts.probe_failed = Some((now, format!("metadata probe failed: {error}")))
                }
            }
        }
        self.facts.now = Some(now);
        self.facts.in_flight = self.producer.in_flight_count();
        self.facts.last_delivery = self.state.last_delivery();
        if self.facts.in_flight == 0 {
            self.facts.pending_since = None;
        } else {
            self.facts.pending_since.get_or_insert(now);
        }
        let contact = self.facts.last_delivery.max(self.facts.last_answer);
        if self.probe.is_none()
            && contact.is_none_or(|c| now.saturating_duration_since(c) >= PROBE_AFTER)
        {
            self.start_probe(now);
        }
        match decide(&self.facts) {
            Verdict::Up => {
                if let Some((since, _)) = self.down.take() {
                    info!(
                        brokers = %self.brokers,
                        outage_secs = now.saturating_duration_since(since).as_secs(),
                        "Kafka takes ticks again; buffered ticks are being delivered"
                    );
                } else if !self.answered {
                    info!(brokers = %self.brokers, "Kafka answers");
                }
                self.answered = true;
                Ok(true)
            }
            Verdict::Down { mut cause } => {
                if !cause.contains("last report")
                    && let Some(problem) = self.state.log.last_problem()
                {
                    cause = format!("{cause}; last report: {problem}");
                }
                let since = contact.unwrap_or(self.started);
                let lasted = now.saturating_duration_since(since);
                if lasted >= self.give_up_after {
                    return Err(SinkError::GaveUp {
                        brokers: self.brokers.clone(),
                        secs: lasted.as_secs(),
                        limit: self.give_up_after,
                        cause,
                        in_flight: self.facts.in_flight,
                    });
                }
                match &mut self.down {
                    // A broker still starting (docker compose up) is no outage yet.
                    None if !self.answered && lasted < STARTUP_GRACE => {}
                    None => {
                        warn!(
                            brokers = %self.brokers,
                            %cause,
                            buffered = self.facts.in_flight,
                            give_up_after = ?self.give_up_after,
                            "Kafka unreachable: buffering ticks, not ready"
                        );
                        self.down = Some((since, now));
                    }
                    Some((_, reported))
                        if now.saturating_duration_since(*reported) >= REMIND_EVERY =>
                    {
                        warn!(
                            brokers = %self.brokers,
                            %cause,
                            buffered = self.facts.in_flight,
                            outage_secs = lasted.as_secs(),
                            gives_up_in_secs = self.give_up_after.saturating_sub(lasted).as_secs(),
                            "Kafka still unreachable: buffering ticks, not ready"
                        );
                        *reported = now;
                    }
                    Some(_) => {}
                }
                Ok(false)
            }
        }
    }

    fn start_probe(&mut self, now: Instant) {
        let producer = self.producer.clone();
        let topic = self.probe_topic.clone();
        self.probe_started = Some(now);
        self.probe = Some(tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(topic.as_deref(), PROBE_TIMEOUT)
                .map(|_| ())
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Option<Instant> {
        Some(t0 + Duration::from_millis(ms))
    }

    #[test]
    fn flowing_acknowledgements_are_up() {
        let t0 = Instant::now();
        let facts = Facts {
            now: at(t0, 10_000),
            in_flight: 3,
            pending_since: at(t0, 0),
            last_delivery: at(t0, 9_990),
            ..Facts::default()
        };
        assert_eq!(decide(&facts), Verdict::Up);
    }

    #[test]
    fn ticks_waiting_without_acknowledgement_are_down_after_the_stall() {
        let t0 = Instant::now();
        let mut facts = Facts {
            now: at(t0, 10_000),
            in_flight: 7,
            pending_since: at(t0, 0),
            last_delivery: at(t0, 6_000),
            last_answer: at(t0, 9_000),
            ..Facts::default()
        };
        assert_eq!(decide(&facts), Verdict::Up, "4 s without: not yet");
        facts.now = at(t0, 11_000);
        assert!(
            matches!(decide(&facts), Verdict::Down { cause } if cause.contains("7 tick(s) waiting")),
            "5 s without an acknowledgement, even with metadata answers"
        );
        // After a long idle spell, the first waiting ticks are not stalled at once.
        let facts = Facts {
            now: at(t0, 60_500),
            in_flight: 1,
            pending_since: at(t0, 60_000),
            last_delivery: at(t0, 1_000),
            last_answer: at(t0, 60_000),
            ..Facts::default()
        };
        assert_eq!(decide(&facts), Verdict::Up);
    }

    #[test]
    fn an_unanswered_probe_is_down_until_something_gets_through() {
        let t0 = Instant::now();
        let mut facts = Facts {
            now: at(t0, 5_000),
            last_delivery: at(t0, 1_000),
            probe_failed: Some((t0 + Duration::from_millis(2_000), "refused".to_owned())),
            ..Facts::default()
        };
        assert_eq!(
            decide(&facts),
            Verdict::Down {
                cause: "refused".to_owned()
            }
        );
        facts.last_delivery = at(t0, 4_000);
        assert_eq!(decide(&facts), Verdict::Up, "an acknowledgement since");
        let never = Facts {
            now: at(t0, 1),
            ..Facts::default()
        };
        assert!(
            matches!(decide(&never), Verdict::Down { .. }),
            "not before the first answer"
        );
    }
}
