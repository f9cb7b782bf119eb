//! The Kafka transport of the sink's loop ([`crate::pipeline`]): consume (read_committed),
//! commit offsets asynchronously (again once Kafka answers, if a commit was lost), dead letters
//! to the topology's dead-letter topic, and [`KafkaSink`], the `tickstream sink` process.
//!
//! Rebalances: every batch commits as soon as it is written, so what was written is committed
//! before a partition can move. Records of a revoked partition that are buffered but not yet
//! written are dropped from the batch, uncommitted: the partition's new owner re-reads them.
//!
//! Outages: a probe asks the brokers for the subscribed topics' metadata every second. While
//! they do not answer, or a subscribed topic does not exist (yet), the sink is not ready;
//! librdkafka reconnects by itself and consuming resumes where it stopped. A topic created
//! after the sink started is picked up within seconds (`topic.metadata.refresh.interval.ms`).
//! A broker (or MongoDB) outage longer than `processing.give_up_after` stops the sink with an
//! error naming it ([`GaveUp`](crate::GaveUp)).

mod client;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tickstream_model::Topology;
use tickstream_streams::{DeadLetterWriter, Health, LoggingContext, Record, Shutdown};
use tracing::{info, warn};

use crate::availability::Availability;
use crate::batch::{Batch, DeadLetter, PartitionKey};
use crate::document::DocumentMapper;
use crate::input::{Polled, SinkInput};
use crate::metrics::SinkMetrics;
use crate::pipeline::SinkLoop;
use crate::writer::{MongoWriter, SinkError};
pub use client::SinkConfig;
use client::{SinkConsumer, SinkContext, consumer_config, dead_letter_config, watch_kafka};

/// How often the lag gauges are refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// The sink process: Kafka in, MongoDB out.
pub struct KafkaSink {
    config: SinkConfig,
    mapper: DocumentMapper,
    writer: MongoWriter,
    metrics: Arc<SinkMetrics>,
    health: Arc<Health>,
}

/// Aborts the task when dropped: the Kafka probe ends with the sink, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl KafkaSink {
    pub fn new(
        config: SinkConfig,
        topology: &Topology,
        writer: MongoWriter,
        metrics: Arc<SinkMetrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            config,
            mapper: DocumentMapper::new(topology),
            writer,
            metrics,
            health,
        }
    }

    /// Runs until `shutdown` is requested; then writes and commits the in-flight batch and
    /// returns. `Err` when the batch could not be written within the shutdown grace (nothing
    /// is committed then: it is re-read on restart), when Kafka or MongoDB stayed unreachable
    /// for `give_up_after` ([`SinkError::GaveUp`]), or when Kafka cannot be set up.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), SinkError> {
        let availability = Arc::new(Availability::new(
            Arc::clone(&self.health),
            Arc::clone(&self.metrics),
            self.config.give_up_after,
            self.writer.address(),
            &self.config.brokers,
        ));
        let input = KafkaInput::new(&self.config, Arc::clone(&self.metrics), &shutdown)?;
        SinkLoop {
            input,
            settings: self.config.loop_settings(),
            mapper: self.mapper,
            writer: Some(self.writer),
            metrics: self.metrics,
            availability,
        }
        .run(shutdown)
        .await
    }
}

/// The sink's consumer, its dead-letter producer and what watches them.
struct KafkaInput {
    consumer: Arc<SinkConsumer>,
    producer: FutureProducer<LoggingContext>,
    dead_letters: DeadLetterWriter,
    topics: Vec<String>,
    /// `bootstrap.servers`, for the probe's re-bootstrap (`tickstream_streams::Rebootstrapper`).
    brokers: String,
    shutdown_grace: Duration,
    metrics: Arc<SinkMetrics>,
    last_lag_update: Mutex<Option<Instant>>,
    seen_revision: u64,
    /// Bounds the dead-letter retries once stopping (`DeadLetterWriter::deliver`).
    shutdown: Shutdown,
    probe: Option<AbortOnDrop>,
}

impl KafkaInput {
    fn new(
        config: &SinkConfig,
        metrics: Arc<SinkMetrics>,
        shutdown: &Shutdown,
    ) -> Result<Self, SinkError> {
        let consumer: Arc<SinkConsumer> = consumer_config(config)
            .create_with_context(SinkContext::new())
            .map(Arc::new)?;
        let producer: FutureProducer<LoggingContext> = dead_letter_config(config)
            .create_with_context(LoggingContext::new("sink dead-letter producer"))?;
        Ok(Self {
            consumer,
            producer,
            dead_letters: DeadLetterWriter::new(config.dead_letter_topic.clone()),
            topics: config.topics.clone(),
            brokers: config.brokers.clone(),
            shutdown_grace: config.shutdown_grace,
            metrics,
            last_lag_update: Mutex::new(None),
            seen_revision: 0,
            shutdown: shutdown.clone(),
            probe: None,
        })
    }

    fn assigned(&self) -> std::sync::MutexGuard<'_, HashSet<PartitionKey>> {
        self.consumer
            .context()
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Lag per partition: the high watermark (asked off the async threads, at most every
    /// few seconds) minus the next offset to write.
    fn update_lag(&self, offsets: &HashMap<PartitionKey, i64>) {
        {
            let mut last = self
                .last_lag_update
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < LAG_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let consumer = Arc::clone(&self.consumer);
        let metrics = Arc::clone(&self.metrics);
        let offsets = offsets.clone();
        tokio::task::spawn_blocking(move || {
            for ((topic, partition), next) in offsets {
                if let Ok((_, high)) =
                    consumer.fetch_watermarks(&topic, partition, Duration::from_secs(1))
                {
                    metrics
                        .consumer_lag
                        .with_label_values(&[&topic, &partition.to_string()])
                        .set((high - next).max(0));
                }
            }
        });
    }
}

impl SinkInput for KafkaInput {
    fn start(&mut self, availability: &Arc<Availability>) -> Result<(), SinkError> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&topics)?;
        info!(?topics, "sink subscribed");
        self.probe = Some(AbortOnDrop(tokio::spawn(watch_kafka(
            Arc::clone(&self.consumer),
            self.topics.clone(),
            self.brokers.clone(),
            Arc::clone(availability),
        ))));
        Ok(())
    }

    async fn poll(
        &mut self,
        batch: &mut Batch,
        mapper: Option<&DocumentMapper>,
        batch_size: usize,
    ) -> Result<Polled, SinkError> {
        let mut messages = self.consumer.stream();
        // What librdkafka already fetched joins the batch without another trip through
        // the loop's select! (and its timer) per record.
        let mut next = messages.next().await;
        while let Some(result) = next {
            match result {
                Ok(message) => batch.push(
                    mapper,
                    &Record::from_message(&message),
                    message.headers().map(|headers| headers.detach()),
                ),
                Err(error) => {
                    // A missing topic, a broker away: librdkafka retries.
                    self.consumer.context().log.error(&error, "consuming");
                    break;
                }
            }
            if batch.records >= batch_size {
                break;
            }
            next = messages.next().now_or_never().flatten();
        }
        Ok(Polled::More)
    }

    fn drains_on_stop(&self) -> bool {
        false
    }

    fn assignment_changed(&mut self) -> Option<HashSet<PartitionKey>> {
        let revision = self.consumer.context().revision.load(Ordering::Acquire);
        if revision == self.seen_revision {
            return None;
        }
        self.seen_revision = revision;
        Some(self.assigned().clone())
    }

    fn is_assigned(&self, partition: &PartitionKey) -> bool {
        self.assigned().contains(partition)
    }

    /// Asynchronously while running (the writes are already acknowledged; a lost commit only
    /// means a re-read batch, i.e. duplicates, and is repeated once Kafka answers),
    /// synchronously for the last batch before exiting. A failure is logged, not fatal.
    fn commit(&self, offsets: &HashMap<PartitionKey, i64>, last: bool) -> Result<bool, SinkError> {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*next))
            {
                warn!(%error, %topic, partition, "cannot build the offset commit");
                return Ok(false);
            }
        }
        let result = match last {
            true => tokio::task::block_in_place(|| self.consumer.commit(&list, CommitMode::Sync)),
            false => self.consumer.commit(&list, CommitMode::Async),
        };
        match result {
            Ok(()) => {
                self.update_lag(offsets);
                Ok(true)
            }
            Err(error) => {
                let context = self.consumer.context();
                context.commit_failed.store(true, Ordering::Release);
                context.log.error(
                    &error,
                    "offset commit failed; the offsets are committed again once Kafka answers",
                );
                Ok(false)
            }
        }
    }

    fn take_commit_failed(&self) -> bool {
        self.consumer
            .context()
            .commit_failed
            .swap(false, Ordering::AcqRel)
    }

    /// By the one retry rule (`tickstream_streams::DeadLetterWriter::deliver`), until the
    /// broker acknowledges the letter or — once stopping — the shutdown grace has passed.
    async fn dead_letter(
        &mut self,
        letter: &DeadLetter,
        application: &str,
    ) -> Result<(), SinkError> {
        let outgoing = outgoing(letter, application);
        self.dead_letters
            .deliver(
                &self.producer,
                &self.brokers,
                &outgoing,
                &self.shutdown,
                self.shutdown_grace,
            )
            .await
            .map_err(|error| SinkError::Config(error.to_string()))
    }

    fn close(self, availability: &Availability) {
        drop(self.probe);
        if !availability.kafka_is_up() {
            // Closing a consumer leaves its group, which takes a broker: with none answering,
            // librdkafka's close (run on drop) would never return and the process never exit.
            // The broker drops the member after its session timeout instead.
            info!("Kafka unreachable: exiting without leaving the consumer group");
            std::mem::forget(self.consumer);
        }
    }
}

/// What goes to the dead-letter topic for `letter`: its bytes, its original headers, then the
/// sink's reason (see `tickstream_streams::DeadLetter`).
fn outgoing<'a>(letter: &'a DeadLetter, application: &str) -> tickstream_streams::DeadLetter<'a> {
    tickstream_streams::DeadLetter::new(
        letter.record.key.as_deref(),
        letter.record.value.as_deref(),
        letter.record.headers.clone(),
        &letter.reason(application),
    )
}

#[cfg(test)]
fn dead_letter_headers(letter: &DeadLetter, application: &str) -> rdkafka::message::OwnedHeaders {
    outgoing(letter, application).headers
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, Headers, OwnedHeaders};

    use tickstream_streams::dlq_headers;

    use super::*;

    /// Each header's name and value, as text.
    fn header_list(headers: &OwnedHeaders) -> Vec<(String, Option<String>)> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let mut list = Vec::with_capacity(headers.count());
        for header in headers.iter() {
            list.push((header.key.to_owned(), header.value.map(text)));
        }
        list
    }

    fn letter(headers: Option<OwnedHeaders>) -> DeadLetter {
        DeadLetter {
            record: tickstream_streams::OwnedRecord {
                topic: "prices.raw".into(),
                partition: 2,
                offset: 41,
                timestamp: None,
                key: None,
                value: Some(b"{}".to_vec()),
                headers,
            },
            code: "missing_field".to_owned(),
            message: "no price".to_owned(),
        }
    }

    #[test]
    fn dead_letters_keep_the_original_headers_before_the_reason() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some("00-abc-01"),
            })
            .insert(Header::<&[u8]> {
                key: "empty",
                value: None,
            });
        let headers = header_list(&dead_letter_headers(&letter(Some(original)), "app-sink"));
        assert_eq!(
            headers[..2],
            [
                ("traceparent".to_owned(), Some("00-abc-01".to_owned())),
                ("empty".to_owned(), None),
            ],
            "the original headers first, as they were (a null value stays null)"
        );
        assert_eq!(
            headers[2..],
            [
                (dlq_headers::ERROR_CODE, "missing_field"),
                (dlq_headers::ERROR_MESSAGE, "no price"),
                (dlq_headers::SOURCE_TOPIC, "prices.raw"),
                (dlq_headers::SOURCE_PARTITION, "2"),
                (dlq_headers::SOURCE_OFFSET, "41"),
                (dlq_headers::APPLICATION, "app-sink"),
            ]
            .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
        );
        assert_eq!(
            header_list(&dead_letter_headers(&letter(None), "app-sink")).len(),
            6,
            "a record without headers gets the reason only"
        );
    }
}
