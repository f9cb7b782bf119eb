//! Dead letters, written one way for every processor: the refused record's key and value as
//! they were, its original headers, then the reason headers ([`crate::dlq_headers`]). A reader
//! that finds a header name twice (a record that was a dead letter once already) takes the
//! last: the newest reason.
//!
//! **The retry rule.** A dead letter stands for a record whose offset is about to be
//! committed: it must reach the topic or the offset must stay uncommitted. librdkafka resends
//! on its own (idempotently) within `message.timeout.ms`; a letter it still fails is sent again
//! after [`retry_delay`] (100 ms doubling to 5 s), for as long as the processor runs — its
//! outage bound, `processing.give_up_after`, ends that — and, once a stop is requested, for at
//! most the shutdown grace: then the writer gives up, the offset is not committed and the
//! record is read again on restart. In the streams runtime the letter is part of the open
//! transaction, so "sent again" is the commit path's abort-and-redo, on the same backoff and
//! bound ([`super::outage`]); the sink awaits each letter's acknowledgement
//! ([`DeadLetterWriter::deliver`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord, Producer};
use tracing::warn;

use super::client::Rebootstrapper;
use super::produce::{SendError, StreamsProducer, lock, send_polling, send_with_backpressure};
use crate::shutdown::Shutdown;

/// How long to wait before retry `attempt` (1 = the first retry): 100 ms doubling to 5 s.
pub fn retry_delay(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(6);
    Duration::from_millis(100 << exponent).min(Duration::from_secs(5))
}

/// How long the sink waits for room in librdkafka's queue before offering a letter again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(100);

/// What goes to the dead-letter topic for one refused record.
pub struct DeadLetter<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The original headers, then the reason.
    pub headers: OwnedHeaders,
}

impl<'a> DeadLetter<'a> {
    /// `original` headers first, as they were (a null value stays null), then `reason`
    /// (from [`crate::dlq_headers::headers`]).
    pub fn new(
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        original: Option<OwnedHeaders>,
        reason: &[(&str, String)],
    ) -> Self {
        let headers = original.unwrap_or_else(|| OwnedHeaders::new_with_capacity(reason.len()));
        let headers = reason.iter().fold(headers, |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        });
        Self {
            key,
            value,
            headers,
        }
    }
}

/// The dead letter could not be written (see the module's retry rule). Either way its offset is
/// not committed, so the record is read again on restart.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(
        "stopping: the dead letter for {topic} was not acknowledged within the shutdown grace \
         of {grace:?} (last error: {last_error}); its record is read again on restart"
    )]
    Grace {
        topic: String,
        grace: Duration,
        last_error: String,
    },
    /// An error no retry can cure: a person must change the broker or the topic.
    #[error(
        "the broker refuses the dead letter for {topic}: {error}; check the topic's ACLs and \
         its max.message.bytes, then restart (the record is read again)"
    )]
    Refused { topic: String, error: KafkaError },
}

/// Errors of a dead-letter send that retrying cannot cure.
fn is_permanent(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::TopicAuthorizationFailed
                | Code::ClusterAuthorizationFailed
                | Code::InvalidRecord
        )
    )
}

/// Writes dead letters to one topic.
#[derive(Debug, Clone)]
pub struct DeadLetterWriter {
    topic: String,
    /// When a `deliver` first saw the stop: the grace runs from there for every letter (and
    /// every clone), so a batch of letters waits one grace in all, not one each.
    stop_seen: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl DeadLetterWriter {
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            stop_seen: Arc::default(),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Enqueues `letter` on the runtime's (transactional) producer; a failure, now or in the
    /// delivery report, fails the commit (see the module docs).
    pub(crate) fn enqueue(
        &self,
        producer: &StreamsProducer,
        letter: DeadLetter<'_>,
    ) -> Result<(), KafkaError> {
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).headers(letter.headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if let Some(value) = letter.value {
            record = record.payload(value);
        }
        send_polling(producer, record)
    }

    /// Sends `letter` until the broker acknowledges it, by the module's retry rule: `Err` only
    /// once `shutdown_grace` has passed since `shutdown` was requested. `brokers` (the
    /// producer's `bootstrap.servers`) is given back to a producer left without any
    /// ([`crate::Rebootstrapper`]).
    pub async fn deliver<C: ClientContext + 'static>(
        &self,
        producer: &FutureProducer<C>,
        brokers: &str,
        letter: &DeadLetter<'_>,
        shutdown: &Shutdown,
        shutdown_grace: Duration,
    ) -> Result<(), DeadLetterError> {
        // Shared by the retries and the give-up branch (a Mutex: the future must be Send).
        let last_error = Mutex::new(String::from("none yet"));
        let retries = async {
            let mut attempt = 0;
            let mut rebootstrapper = Rebootstrapper::default();
            loop {
                match self.send_acknowledged(producer, letter).await {
                    Ok(()) => return None,
                    Err(error) if is_permanent(&error) => {
                        return Some(DeadLetterError::Refused {
                            topic: self.topic.clone(),
                            error,
                        });
                    }
                    Err(error) => {
                        attempt += 1;
                        warn!(%error, topic = %self.topic, attempt, "dead-letter send failed; retrying");
                        *lock(&last_error) = error.to_string();
                        rebootstrapper.failed(producer.client(), brokers);
                        tokio::time::sleep(retry_delay(attempt)).await;
                    }
                }
            }
        };
        tokio::select! {
            refused = retries => refused.map_or(Ok(()), Err),
            () = self.grace_after_stop(shutdown, shutdown_grace) => Err(DeadLetterError::Grace {
                topic: self.topic.clone(),
                grace: shutdown_grace,
                last_error: lock(&last_error).clone(),
            }),
        }
    }

    /// Completes `grace` after the stop was first seen by this writer; never, if it never comes.
    async fn grace_after_stop(&self, shutdown: &Shutdown, grace: Duration) {
        shutdown.requested().await;
        let seen = *lock(&self.stop_seen).get_or_insert_with(tokio::time::Instant::now);
        tokio::time::sleep_until(seen + grace).await;
    }

    /// One send, waiting for room in the queue and then for the broker's acknowledgement.
    // rdkafka hands a refused record back in its `Err`: that is the large variant.
    #[allow(clippy::result_large_err)]
    async fn send_acknowledged<C: ClientContext + 'static>(
        &self,
        producer: &FutureProducer<C>,
        letter: &DeadLetter<'_>,
    ) -> Result<(), KafkaError> {
        let record = FutureRecord {
            topic: &self.topic,
            partition: None,
            payload: letter.value,
            key: letter.key,
            timestamp: None,
            headers: Some(letter.headers.clone()),
        };
        let delivery = send_with_backpressure(
            record,
            |record| producer.send_result(record),
            || sleep_ok(QUEUE_FULL_WAIT),
        )
        .await
        .map_err(|error| match error {
            SendError::Kafka(error) => error,
            SendError::Waiting(never) => match never {},
        })?;
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(error),
            // The producer went away with the letter still queued.
            Err(_) => Err(KafkaError::Canceled),
        }
    }
}

async fn sleep_ok(delay: Duration) -> Result<(), std::convert::Infallible> {
    tokio::time::sleep(delay).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn retries_back_off_from_100_ms_to_5_s() {
        let delays: Vec<_> = (1..=8).map(|a| retry_delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn the_reason_follows_the_original_headers() {
        let original = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some("t"),
        });
        let reason = [("tickstream.error.code", "bad".to_owned())];
        let letter = DeadLetter::new(None, Some(b"{}"), Some(original), &reason);
        let keys: Vec<_> = letter.headers.iter().map(|h| h.key.to_owned()).collect();
        assert_eq!(keys, ["traceparent", "tickstream.error.code"]);
        assert_eq!(
            DeadLetter::new(None, None, None, &reason).headers.count(),
            1
        );
    }

    #[test]
    fn a_letter_the_broker_refuses_for_good_is_not_retried() {
        use rdkafka::types::RDKafkaErrorCode as Code;
        for code in [Code::MessageSizeTooLarge, Code::TopicAuthorizationFailed] {
            assert!(
                is_permanent(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        for code in [
            Code::BrokerTransportFailure,
            Code::MessageTimedOut,
            Code::QueueFull,
        ] {
            assert!(
                !is_permanent(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
    }

    /// Nothing listens here: every send fails.
    const BROKERS: &str = "127.0.0.1:1";

    #[tokio::test(start_paused = true)]
    async fn a_letter_that_never_gets_through_is_given_up_the_grace_after_the_stop() {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", BROKERS)
            .set("message.timeout.ms", "600000")
            .create()
            .expect("a producer (it connects lazily)");
        let writer = DeadLetterWriter::new("dlq");
        let letter = DeadLetter::new(None, Some(b"v"), None, &[]);
        let shutdown = Shutdown::new();
        let started = tokio::time::Instant::now();
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            shutdown.request();
            std::future::pending::<()>().await
        };
        let result = tokio::select! {
            result = writer.deliver(&producer, BROKERS, &letter, &shutdown, Duration::from_secs(2)) => result,
            () = stopper => unreachable!(),
        };
        let error = result.expect_err("no broker: given up");
        assert!(error.to_string().contains("shutdown grace"), "{error}");
        assert_eq!(
            started.elapsed().as_secs(),
            7,
            "5 s until the stop, then the 2 s grace"
        );
        // A second letter after the grace has run out is given up at once: the grace is one
        // for the whole stop, not one per letter.
        let again = writer
            .deliver(
                &producer,
                BROKERS,
                &letter,
                &shutdown,
                Duration::from_secs(2),
            )
            .await;
        assert!(again.is_err());
        assert_eq!(started.elapsed().as_secs(), 7, "no second grace");
    }
}
