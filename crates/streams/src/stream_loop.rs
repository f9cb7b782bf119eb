//! The stream thread's loop (Kafka Streams' `StreamThread.runOnce`), written once for both
//! transports: **poll → process → punctuate → maybe commit**, until shutdown is requested or
//! the input ends; then a last commit. [`KafkaStreams`](crate::KafkaStreams) runs it over the
//! consumer group and its transaction (`kafka/transport.rs`),
//! [`InMemoryStreams`](crate::InMemoryStreams) over the in-process broker (`memory/streams.rs`).
//!
//! What each step guarantees, on either transport:
//!
//! 1. **Stop check.** [`Shutdown::is_requested`] is looked at before every turn; a turn lasts
//!    at most one poll wait (Kafka: 20 ms; in process: 100 ms) plus the records it took, so a
//!    request is seen that soon. Nothing new is taken after it (*stop sources*).
//! 2. **Heartbeat.** Every turn marks [`Health`] alive: `/healthz` fails only when the loop
//!    itself stops turning (a transport that waits out an outage inside a step beats too).
//! 3. **Poll → process** ([`StreamsTransport::poll`]): the transport takes what input it has
//!    (waiting at most until the next commit is due, and at most its own poll wait, when none
//!    is there), runs every record through its task or routes it elsewhere (repartition topic,
//!    dead letters), and says how many it took and whether its input has ended. Rebalances,
//!    outage probes and readiness are the transport's (Kafka's happen inside its poll).
//! 4. **Punctuate.** Wall-clock punctuations that are due fire, on every turn, also when idle
//!    (stream-time ones fire as records move stream time, inside step 3).
//! 5. **Maybe commit.** A commit is due once [`StreamsConfig::max_uncommitted_records`] were
//!    taken since the last one, or [`StreamsConfig::commit_interval`] has passed since it
//!    ended. [`StreamsTransport::commit`] makes the batch's outputs, state and input positions
//!    durable together, or undoes it (abort, roll back, rewind: the batch is redone) and
//!    returns `Ok` while it can ride that out; an `Err` ends the loop without another commit.
//! 6. **The end.** At the end of every input the processors hear of it
//!    ([`crate::Processor::end_of_input`]: what they held back for more input, they emit now).
//!    On a stop request or the end of every input the loop makes a last commit
//!    of what was processed (*drain*, *commit*), unless the transport says a commit cannot get
//!    through now ([`StreamsTransport::can_commit`]: Kafka during an outage; the work is then
//!    redone from the last commit). Closing (*close*) is the caller's, also after an error.

use std::time::{Duration, Instant};

use tracing::info;

use crate::config::StreamsConfig;
use crate::metrics::Health;
use crate::shutdown::Shutdown;

/// What one poll took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Polled {
    /// Input records taken (processed, forwarded or dead-lettered) in this poll.
    pub(crate) records: usize,
    /// Every input is closed and read to its end: nothing more will come (in process only;
    /// Kafka's topics never end).
    pub(crate) ended: bool,
}

/// One transport under the loop (see the module docs for what the loop expects of each step).
pub(crate) trait StreamsTransport {
    type Error;

    /// Takes the input available now and runs it through the tasks, waiting at most
    /// `max_wait` (the time until a commit is due; capped by the transport's own poll wait,
    /// which Kafka's transport always waits, 20 ms) when there is none.
    fn poll(&mut self, max_wait: Duration) -> Result<Polled, Self::Error>;

    /// Fires the wall-clock punctuations due at `now_ms` (epoch milliseconds).
    fn punctuate(&mut self, now_ms: i64) -> Result<(), Self::Error>;

    /// Every input ended (after the poll that said so): the processors' end of input, whose
    /// outputs the last commit holds. Kafka's topics never end.
    fn end_of_input(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Makes everything processed since the last commit durable, atomically, or undoes it.
    fn commit(&mut self) -> Result<(), Self::Error>;

    /// Whether a commit can get through now (the last one is skipped when it cannot).
    fn can_commit(&self) -> bool {
        true
    }
}

/// Why the loop ended (after its last commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// [`Shutdown`] was requested.
    Requested,
    /// Every input ended and all of it was processed.
    InputEnded,
}

/// The loop's own state: the stop token, the heartbeat and the commit-due rule.
pub(crate) struct StreamLoop<'a> {
    application: String,
    shutdown: &'a Shutdown,
    health: &'a Health,
    commit_interval: Duration,
    max_uncommitted_records: usize,
    /// When the last commit ended: the interval runs from there, so a slow commit does not
    /// make the next one due after a single record.
    last_commit: Instant,
    /// Records taken since the last commit.
    uncommitted: usize,
}

impl<'a> StreamLoop<'a> {
    pub(crate) fn new(config: &StreamsConfig, shutdown: &'a Shutdown, health: &'a Health) -> Self {
        Self {
            application: config.application_id.clone(),
            shutdown,
            health,
            commit_interval: config.commit_interval,
            max_uncommitted_records: config.max_uncommitted_records.max(1),
            last_commit: Instant::now(),
            uncommitted: 0,
        }
    }

    /// Turns until shutdown is requested or the input ends, then commits what was processed
    /// (see the module docs). An error returns at once, without that commit.
    pub(crate) fn run<T: StreamsTransport>(
        mut self,
        transport: &mut T,
    ) -> Result<Stopped, T::Error> {
        let stopped = loop {
            if self.shutdown.is_requested() {
                break Stopped::Requested;
            }
            if self.run_once(transport)? {
                break Stopped::InputEnded;
            }
        };
        let why = match stopped {
            Stopped::Requested => "stop requested",
            Stopped::InputEnded => "every input ended",
        };
        let application = self.application.as_str();
        if transport.can_commit() {
            info!(application, "{why}: committing what was processed");
            transport.commit()?;
            info!(
                application,
                "{why}: what was processed is committed; closing"
            );
        } else {
            info!(
                application,
                "{why}: no last commit, it cannot get through now (the broker is unreachable); \
                 what was processed since the last commit is redone from there"
            );
        }
        Ok(stopped)
    }

    /// One turn: poll → process → punctuate → maybe commit. Returns whether the input ended
    /// (then the last commit is [`Self::run`]'s).
    fn run_once<T: StreamsTransport>(&mut self, transport: &mut T) -> Result<bool, T::Error> {
        self.health.heartbeat();
        let polled = transport.poll(self.until_commit_due())?;
        self.uncommitted = self.uncommitted.saturating_add(polled.records);
        transport.punctuate(tickstream_model::clock::now_ms())?;
        if polled.ended {
            transport.end_of_input()?;
            return Ok(true);
        }
        self.maybe_commit(transport)?;
        Ok(false)
    }

    /// How long until a commit is due: zero once it is.
    fn until_commit_due(&self) -> Duration {
        if self.uncommitted >= self.max_uncommitted_records {
            return Duration::ZERO;
        }
        self.last_commit
            .checked_add(self.commit_interval)
            .map_or(Duration::MAX, |due| {
                due.saturating_duration_since(Instant::now())
            })
    }

    fn maybe_commit<T: StreamsTransport>(&mut self, transport: &mut T) -> Result<(), T::Error> {
        if !self.until_commit_due().is_zero() {
            return Ok(());
        }
        transport.commit()?;
        // Counted from here also when the transport undid the batch: it is taken again.
        self.uncommitted = 0;
        self.last_commit = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
