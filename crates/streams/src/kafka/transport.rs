//! The Kafka transport under the stream loop (`crate::stream_loop`): the group's consumer
//! polled once per turn for what it has fetched, each record routed through the partition group or the
//! repartition topic (`route.rs`), the commit path of `commit.rs`, and the broker outage
//! watched from here.
//!
//! Per turn ([`StreamsTransport::poll`]):
//!
//! - **poll** the consumer for up to [`POLL_TIMEOUT`], then without waiting for what it has
//!   fetched already, up to [`MAX_RECORDS_PER_TURN`]. Rebalance callbacks run inside it and
//!   take the stream thread's lock (`thread.rs`), which is therefore not held while polling; an
//!   error a callback raised (a restore that failed, a revocation's commit) ends the loop;
//! - **process** each record: into the partition group, then through its task (or forwarded,
//!   or dead-lettered); when the first poll's wait brought nothing, buffered records whose turn
//!   came are processed;
//! - **the outage**: a consumer that reports the brokers unreachable makes the instance not
//!   ready and starts (or extends) the outage, which fails the loop once it outlasts
//!   `processing.give_up_after`; an idle instance learns that the broker is back from a
//!   metadata round trip, at most once a second.
//!
//! Records taken are counted by the thread (`StreamThread::records_taken`): a turn's are the
//! difference. A revocation commits inside a poll without the loop knowing, so the loop may
//! count records committed already and commit early once: harmless.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use tracing::debug;

use super::thread::{StreamThread, StreamsContext};
use super::{StreamsError, client, is_unreachable};
use crate::metrics::{Health, StreamsMetrics};
use crate::processor::Processor;
use crate::stream_loop::{Polled, StreamsTransport};

/// How long one poll waits for a record: also how soon a requested shutdown is seen.
pub(super) const POLL_TIMEOUT: Duration = Duration::from_millis(20);

/// A turn takes every record the consumer has fetched, up to this many (or [`POLL_TIMEOUT`]
/// of processing), before the loop looks at punctuation and the commit: one record per turn
/// paid the loop's per-turn work (the stop check, the clock, the lock) on every record, which
/// held a bare exactly-once pipe to half of what batched consumption gives (issue 16).
const MAX_RECORDS_PER_TURN: usize = 1_000;

/// How often an idle instance in an outage asks the broker whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct KafkaTransport<'a, P: Processor> {
    consumer: &'a BaseConsumer<StreamsContext<P>>,
    metrics: &'a StreamsMetrics,
    health: &'a Health,
    last_probe: Instant,
    rebootstrapper: client::Rebootstrapper,
    /// The thread's count of records taken at the end of the last poll.
    taken: u64,
}

impl<'a, P: Processor> KafkaTransport<'a, P> {
    pub(super) fn new(
        consumer: &'a BaseConsumer<StreamsContext<P>>,
        metrics: &'a StreamsMetrics,
        health: &'a Health,
    ) -> Self {
        Self {
            consumer,
            metrics,
            health,
            last_probe: Instant::now(),
            rebootstrapper: client::Rebootstrapper::default(),
            taken: 0,
        }
    }

    /// While the broker is unreachable: a metadata round trip, at most every
    /// [`PROBE_INTERVAL`], tells whether it is back.
    fn probe_if_out(&mut self, thread: &mut StreamThread<P>) -> Result<(), StreamsError> {
        if !thread.outage.is_on() || self.last_probe.elapsed() < PROBE_INTERVAL {
            return Ok(());
        }
        self.last_probe = Instant::now();
        match self
            .consumer
            .fetch_metadata(None, Duration::from_millis(500))
        {
            Ok(_) => {
                self.rebootstrapper.answered();
                if thread.outage.probe_answered() {
                    self.health.set_ready(true);
                }
                Ok(())
            }
            Err(error) => {
                // A client left without brokers would never find them again by itself.
                self.rebootstrapper
                    .failed(self.consumer.client(), &thread.config.bootstrap_servers);
                thread.outage.failed(
                    &format!(
                        "reaching the brokers at {}",
                        thread.config.bootstrap_servers
                    ),
                    &error,
                )
            }
        }
    }
}

impl<P: Processor> StreamsTransport for KafkaTransport<'_, P> {
    type Error = StreamsError;

    /// Always waits up to [`POLL_TIMEOUT`] for the first record, also when a commit is due
    /// sooner (`_max_wait`), then takes what was fetched for at most that long again: a due
    /// commit waits at most about twice [`POLL_TIMEOUT`].
    fn poll(&mut self, _max_wait: Duration) -> Result<Polled, StreamsError> {
        // The outage probe first: the previous turn's punctuation and commit came after its
        // poll, so the order of calls is poll → process → punctuate → commit → probe.
        {
            let mut thread = self.consumer.context().thread();
            self.probe_if_out(&mut thread)?;
        }
        // Rebalance callbacks run inside poll and take the thread's lock: not held here.
        let mut batch_started: Option<Instant> = None;
        let mut timeout = POLL_TIMEOUT;
        for _ in 0..MAX_RECORDS_PER_TURN {
            let polled = self.consumer.poll(timeout);
            let first = timeout > Duration::ZERO;
            timeout = Duration::ZERO;
            let mut thread = self.consumer.context().thread();
            thread.take_rebalance_error()?;
            match polled {
                Some(Ok(message)) => {
                    let started = Instant::now();
                    let batch = *batch_started.get_or_insert(started);
                    thread.on_message(self.consumer, &message)?;
                    let done = Instant::now();
                    self.metrics
                        .process_seconds
                        .observe((done - started).as_secs_f64());
                    if done - batch >= POLL_TIMEOUT {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                // Nothing came within the poll's wait: buffered records whose turn came go.
                None if first => {
                    thread.drain(self.consumer, true)?;
                    break;
                }
                // Nothing more fetched right now: the next turn waits for it.
                None => break,
                Some(Err(error)) if is_unreachable(&error) => {
                    self.health.set_ready(false);
                    thread.outage.failed("consuming", &error)?;
                    break;
                }
                Some(Err(error)) => {
                    debug!(%error, "consumer error (librdkafka retries)");
                    break;
                }
            }
        }
        let thread = self.consumer.context().thread();
        let taken = thread.records_taken();
        let records = usize::try_from(taken.saturating_sub(self.taken)).unwrap_or(usize::MAX);
        self.taken = taken;
        Ok(Polled {
            records,
            ended: false,
        })
    }

    fn punctuate(&mut self, now_ms: i64) -> Result<(), StreamsError> {
        self.consumer
            .context()
            .thread()
            .punctuate_wall_clock(now_ms)
    }

    fn commit(&mut self) -> Result<(), StreamsError> {
        self.consumer.context().thread().commit(self.consumer)
    }

    /// Not during an outage: a commit would wait it out (the batch is redone from the last
    /// commit by whichever instance owns the partitions next).
    fn can_commit(&self) -> bool {
        !self.consumer.context().thread().outage_is_on()
    }
}
