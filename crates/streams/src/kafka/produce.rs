//! The producer side of an instance: delivery reports (which changelog offsets were written,
//! whether anything failed), and the one back-pressured send every producer of every processor
//! goes through: a full librdkafka queue means "wait for room", never a lost record.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};

use crate::client_log::ClientLog;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock already failed the run; the data is still consistent
    // enough to report and shut down.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the producer's delivery reports said since the last commit.
#[derive(Default)]
pub(crate) struct DeliveryLog {
    /// Highest changelog offset written, per partition.
    pub(crate) changelog_end: HashMap<i32, i64>,
    pub(crate) first_error: Option<KafkaError>,
}

pub(crate) struct DeliveryContext {
    changelog: String,
    pub(crate) log: Mutex<DeliveryLog>,
    client_log: ClientLog,
}

impl DeliveryContext {
    pub(crate) fn new(changelog: String) -> Self {
        Self {
            changelog,
            log: Mutex::new(DeliveryLog::default()),
            client_log: ClientLog::new("producer"),
        }
    }
}

crate::forward_client_log!(DeliveryContext, client_log);

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut log = lock(&self.log);
        match result {
            Ok(message) if message.topic() == self.changelog => {
                let end = log
                    .changelog_end
                    .entry(message.partition())
                    .or_insert(message.offset());
                *end = (*end).max(message.offset());
            }
            Ok(_) => {}
            Err((error, _)) => {
                log.first_error.get_or_insert_with(|| error.clone());
            }
        }
    }
}

/// Adds `n` to `topic`'s count. Per-record path: allocates the topic name only the first time.
pub(crate) fn count(counts: &mut HashMap<String, u64>, topic: &str, n: u64) {
    match counts.get_mut(topic) {
        Some(total) => *total += n,
        None => {
            counts.insert(topic.to_owned(), n);
        }
    }
}

pub(crate) type StreamsProducer = BaseProducer<DeliveryContext>;

/// Why a back-pressured send did not enqueue its record.
#[derive(Debug)]
pub enum SendError<E> {
    /// librdkafka refused the record for another reason than a full queue.
    Kafka(KafkaError),
    /// Waiting for room ended with the caller's error (a delivery failure seen meanwhile…).
    Waiting(E),
}

/// Offers `record` to librdkafka through `enqueue` (`producer.send`, `send_result`…); while
/// the queue is full, awaits `wait_for_room` — the caller's way to wait: poll the producer,
/// sleep while a background thread drains it, check for failures — and offers it again.
/// Returns what `enqueue` returned (a delivery future, or nothing).
pub async fn send_with_backpressure<R, T, E, W>(
    mut record: R,
    mut enqueue: impl FnMut(R) -> Result<T, (KafkaError, R)>,
    mut wait_for_room: impl FnMut() -> W,
) -> Result<T, SendError<E>>
where
    W: Future<Output = Result<(), E>>,
{
    loop {
        match enqueue(record) {
            Ok(enqueued) => return Ok(enqueued),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                wait_for_room().await.map_err(SendError::Waiting)?;
            }
            Err((error, _)) => return Err(SendError::Kafka(error)),
        }
    }
}

/// [`send_with_backpressure`] on the processing thread, which has no executor: it waits for
/// room by serving the producer's delivery reports, which never suspends, so one poll of the
/// send runs it to its end.
// rdkafka hands a refused record back in its `Err`: that is the large variant.
#[allow(clippy::result_large_err)]
pub(crate) fn send_polling(
    producer: &StreamsProducer,
    record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    let send = send_with_backpressure(
        record,
        |record| producer.send(record),
        || {
            producer.poll(Duration::from_millis(5));
            std::future::ready(Ok::<(), Infallible>(()))
        },
    );
    match send.now_or_never() {
        Some(Ok(())) => Ok(()),
        Some(Err(SendError::Kafka(error))) => Err(error),
        Some(Err(SendError::Waiting(never))) => match never {},
        // Unreachable (nothing above suspends); refusing the record keeps it from being lost.
        None => Err(KafkaError::Canceled),
    }
}
