//! What the sink depends on, as the sink sees it: MongoDB, the Kafka cluster, and the topics
//! it subscribed to. The sink is ready while MongoDB acknowledges, the brokers answer and
//! every subscribed topic exists. An outage of MongoDB or Kafka is ridden out (backing off,
//! not ready, nothing committed past what MongoDB acknowledged) for at most
//! `processing.give_up_after`; then the sink stops with [`GaveUp`], naming the cause.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tickstream_streams::{Health, Shutdown};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::batch::Batch;
use crate::metrics::SinkMetrics;
use crate::writer::{MongoWriter, SinkError, WriteReport};

pub(crate) type WriteTask = tokio::task::JoinHandle<Result<(Batch, WriteReport), SinkError>>;

/// A dependency was unreachable for longer than `processing.give_up_after`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} at {address} unreachable for {secs} s ({cause}); giving up after \
     processing.give_up_after = {limit:?}. Nothing is committed past what MongoDB acknowledged: \
     a restart resumes there"
)]
pub struct GaveUp {
    /// `"MongoDB"` or `"Kafka"`.
    pub what: &'static str,
    pub address: String,
    pub secs: u64,
    pub limit: Duration,
    pub cause: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not contacted yet (start-up): not ready, and the give-up clock runs.
    Unknown,
    Up,
    Down,
}

/// One dependency's state and since when it has been unreachable.
#[derive(Debug)]
struct Dependency {
    what: &'static str,
    address: String,
    state: State,
    /// Start of the current outage: the last contact before it (or start-up).
    since: Instant,
    /// The last time it answered.
    last_up: Instant,
}

impl Dependency {
    fn new(what: &'static str, address: String, now: Instant) -> Self {
        Self {
            what,
            address,
            state: State::Unknown,
            since: now,
            last_up: now,
        }
    }

    /// Returns how long the outage that just ended lasted, if one did.
    fn up(&mut self, now: Instant) -> Option<Duration> {
        let ended = (self.state == State::Down).then(|| now.saturating_duration_since(self.since));
        self.state = State::Up;
        self.last_up = now;
        ended
    }

    /// Notes a failure at `now`; `Err` once the outage, timed from the last contact, has
    /// lasted `limit`. `Ok(true)` when this failure starts the outage (or is the first
    /// failure at start-up).
    fn down(&mut self, now: Instant, limit: Duration, cause: &str) -> Result<bool, GaveUp> {
        let started = self.state != State::Down;
        if self.state == State::Up {
            self.since = self.last_up;
        }
        self.state = State::Down;
        let lasted = now.saturating_duration_since(self.since);
        if lasted >= limit {
            return Err(GaveUp {
                what: self.what,
                address: self.address.clone(),
                secs: lasted.as_secs(),
                limit,
                cause: cause.to_owned(),
            });
        }
        Ok(started)
    }
}

#[derive(Debug)]
struct Dependencies {
    mongodb: Dependency,
    kafka: Dependency,
    missing_topics: Vec<String>,
}

/// MongoDB's and Kafka's availability, and from them `/readyz` and `mongodb_up`.
pub(crate) struct Availability {
    health: Arc<Health>,
    metrics: Arc<SinkMetrics>,
    give_up_after: Duration,
    state: Mutex<Dependencies>,
    /// Set once either dependency stayed unreachable for `give_up_after`: the processing loop
    /// (and a dead-letter send waiting on Kafka) stop on it.
    gave_up: watch::Sender<Option<GaveUp>>,
}

impl Availability {
    pub(crate) fn new(
        health: Arc<Health>,
        metrics: Arc<SinkMetrics>,
        give_up_after: Duration,
        mongodb: &str,
        brokers: &str,
    ) -> Self {
        let now = Instant::now();
        health.set_ready(false);
        Self {
            health,
            metrics,
            give_up_after,
            state: Mutex::new(Dependencies {
                mongodb: Dependency::new("MongoDB", mongodb.to_owned(), now),
                kafka: Dependency::new("Kafka", brokers.to_owned(), now),
                missing_topics: Vec::new(),
            }),
            gave_up: watch::Sender::new(None),
        }
    }

    /// Fires (with the cause) once the sink has given up on MongoDB or Kafka.
    pub(crate) fn gave_up(&self) -> watch::Receiver<Option<GaveUp>> {
        self.gave_up.subscribe()
    }

    fn note(&self, outcome: Result<bool, GaveUp>) -> Result<bool, GaveUp> {
        if let Err(gave_up) = &outcome {
            self.gave_up.send_if_modified(|current| {
                let first = current.is_none();
                if first {
                    *current = Some(gave_up.clone());
                }
                first
            });
        }
        outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Dependencies> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The processing loop turned (backing off counts: the sink works as intended).
    pub(crate) fn heartbeat(&self) {
        self.health.heartbeat();
    }

    fn refresh(&self, state: &Dependencies) {
        self.health.set_ready(
            state.mongodb.state == State::Up
                && state.kafka.state == State::Up
                && state.missing_topics.is_empty(),
        );
    }

    pub(crate) fn mongodb_up(&self) {
        let mut state = self.lock();
        if state.mongodb.state != State::Up {
            match state.mongodb.up(Instant::now()) {
                Some(lasted) => info!(
                    outage_secs = lasted.as_secs(),
                    "MongoDB acknowledges writes again"
                ),
                None => info!("MongoDB acknowledges writes"),
            }
        }
        self.metrics.mongodb_up.set(1);
        self.refresh(&state);
    }

    /// MongoDB failed with `error`: not ready; `Err` once that has lasted `give_up_after`.
    pub(crate) fn mongodb_down(&self, error: &SinkError) -> Result<(), GaveUp> {
        let mut state = self.lock();
        self.metrics.mongodb_up.set(0);
        let outcome = self.note(state.mongodb.down(
            Instant::now(),
            self.give_up_after,
            &error.to_string(),
        ));
        self.refresh(&state);
        if outcome.as_ref().is_ok_and(|started| *started) {
            warn!(
                %error,
                give_up_after = ?self.give_up_after,
                "MongoDB unavailable: backing off, not ready; nothing is committed meanwhile"
            );
        }
        outcome.map(|_| ())
    }

    /// The brokers answered; `missing` subscribed topics do not exist (yet).
    pub(crate) fn kafka_up(&self, missing: Vec<String>) {
        let mut state = self.lock();
        if state.kafka.state != State::Up {
            match state.kafka.up(Instant::now()) {
                Some(lasted) => info!(
                    brokers = %state.kafka.address,
                    outage_secs = lasted.as_secs(),
                    "Kafka answers again"
                ),
                None => info!(brokers = %state.kafka.address, "Kafka answers"),
            }
        }
        if missing != state.missing_topics {
            if missing.is_empty() {
                info!("every subscribed topic exists");
            } else {
                warn!(
                    topics = ?missing,
                    "subscribed topic(s) do not exist (yet): not ready; the sink reads them \
                     within seconds of their creation"
                );
            }
            state.missing_topics = missing;
        }
        self.refresh(&state);
    }

    /// The brokers did not answer (`cause`): not ready; `Err` once that has lasted
    /// `give_up_after`.
    pub(crate) fn kafka_down(&self, cause: &str) -> Result<(), GaveUp> {
        let mut state = self.lock();
        let outcome = self.note(state.kafka.down(Instant::now(), self.give_up_after, cause));
        self.refresh(&state);
        if outcome.as_ref().is_ok_and(|started| *started) {
            warn!(
                brokers = %state.kafka.address,
                %cause,
                give_up_after = ?self.give_up_after,
                "Kafka unreachable: waiting for it, not ready; nothing is lost meanwhile"
            );
        }
        outcome.map(|_| ())
    }

    /// The input is the in-process transport, there as long as the process is: only MongoDB
    /// decides readiness, and no Kafka outage is ever timed.
    pub(crate) fn transport_always_up(&self) {
        let mut state = self.lock();
        state.kafka.up(Instant::now());
        self.refresh(&state);
    }

    pub(crate) fn kafka_is_up(&self) -> bool {
        self.lock().kafka.state == State::Up
    }
}

/// What a write needs to retry while MongoDB is down.
pub(crate) struct Retry {
    pub(crate) metrics: Arc<SinkMetrics>,
    pub(crate) availability: Arc<Availability>,
    pub(crate) shutdown: Shutdown,
    pub(crate) shutdown_grace: Duration,
    pub(crate) backoff: Backoff,
}

/// Writes `batch` until MongoDB acknowledges it, backing off (with jitter) meanwhile and
/// reporting MongoDB down and the sink not ready. Gives up when stopping and the shutdown
/// grace has passed, or when MongoDB stayed unreachable for `give_up_after`: the batch is then
/// uncommitted and re-read on restart.
pub(crate) async fn write_acknowledged(
    writer: MongoWriter,
    batch: Batch,
    mut retry: Retry,
) -> Result<(Batch, WriteReport), SinkError> {
    let started = Instant::now();
    let mut stop_deadline: Option<Instant> = None;
    loop {
        match writer.write_batch(&batch.documents).await {
            Ok(report) => {
                retry.availability.mongodb_up();
                retry
                    .metrics
                    .batch_duration
                    .observe(started.elapsed().as_secs_f64());
                return Ok((batch, report));
            }
            Err(error) => {
                retry.availability.mongodb_down(&error)?;
                retry.availability.heartbeat();
                if retry.shutdown.is_requested() {
                    let deadline =
                        *stop_deadline.get_or_insert(Instant::now() + retry.shutdown_grace);
                    if Instant::now() >= deadline {
                        return Err(SinkError::Config(format!(
                            "stopping: MongoDB stayed unavailable for the shutdown grace of \
                             {:?}; the in-flight batch of {} records is not committed and \
                             will be re-read on restart ({error})",
                            retry.shutdown_grace, batch.records
                        )));
                    }
                }
                tokio::time::sleep(retry.backoff.next_delay()).await;
            }
        }
    }
}

/// Sleeps `delay`; true when a stop was requested (before or meanwhile).
pub(crate) async fn wait_or_stop(delay: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        () = shutdown.requested() => true,
        () = tokio::time::sleep(delay) => shutdown.is_requested(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_timed_from_the_last_contact_and_ends_with_a_success() {
        let limit = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut kafka = Dependency::new("Kafka", "b:9092".to_owned(), t0);
        assert_eq!(
            kafka.down(at(1), limit, "refused"),
            Ok(true),
            "start-up failure"
        );
        assert_eq!(
            kafka.up(at(2)),
            Some(Duration::from_secs(2)),
            "timed from the start"
        );
        assert_eq!(kafka.up(at(3)), None, "no outage to end");
        assert_eq!(kafka.up(at(99)), None);
        assert_eq!(
            kafka.down(at(101), limit, "refused"),
            Ok(true),
            "outage starts"
        );
        assert_eq!(kafka.down(at(108), limit, "refused"), Ok(false));
        let gave_up = kafka
            .down(at(109), limit, "Connection refused")
            .expect_err("10 s since the last contact");
        assert_eq!((gave_up.secs, gave_up.what), (10, "Kafka"));
        let message = gave_up.to_string();
        assert!(
            message.contains("Kafka at b:9092 unreachable for 10 s (Connection refused)"),
            "{message}"
        );
        let mut mongodb = Dependency::new("MongoDB", "m:27017".to_owned(), t0);
        mongodb.down(at(1), limit, "x").expect("within the limit");
        assert!(
            mongodb.down(at(10), limit, "x").is_err(),
            "never reached at start-up: the clock runs from the start"
        );
        mongodb.up(at(11));
        mongodb.up(at(48));
        assert_eq!(mongodb.down(at(50), limit, "x"), Ok(true));
        assert_eq!(mongodb.up(at(55)), Some(Duration::from_secs(7)));
    }
}
