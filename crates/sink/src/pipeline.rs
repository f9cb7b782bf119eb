//! The sink's loop, written once for both transports ([`crate::input::SinkInput`]): read →
//! batch (latency first: what arrived is written at once while MongoDB is idle; while a write
//! is in flight, the next batch grows up to `batch_size`, for at most `batch_interval`) → bulk
//! write to MongoDB → dead-letter what cannot be stored →
//! commit the batch's offsets, only after MongoDB acknowledged it. A crash anywhere before the
//! commit re-reads the batch; the deterministic `_id`s turn the second write into duplicates,
//! never into second copies.
//!
//! Failures, as visible as the happy path:
//!
//! * MongoDB away: the write is retried with backoff ([`crate::backoff`]), not ready, nothing
//!   committed, for at most `processing.give_up_after`; then the loop stops with [`GaveUp`].
//! * A document MongoDB refuses for its content, or a record that maps to no document: a dead
//!   letter (`mongodb_rejected`, or the mapping's code) with the record's own headers kept.
//! * Partitions revoked (Kafka): what was buffered of them is dropped, uncommitted.
//!
//! Shutdown ([`Shutdown`]), in its documented order: *stop sources* (Kafka: no more polls; the
//! in-process input is read to its end, which its producers close when they stop), *drain*
//! (the in-flight batch is written, MongoDB retried for at most the shutdown grace), *commit*
//! (the last commit waits for the broker while it answers), *close* (leave the group).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tickstream_streams::Shutdown;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::availability::{
    Availability, GaveUp, Retry, WriteTask, wait_or_stop, write_acknowledged,
};
use crate::backoff::Backoff;
use crate::batch::{Batch, DeadLetter, PartitionKey};
use crate::document::DocumentMapper;
use crate::input::{Polled, SinkInput};
use crate::metrics::SinkMetrics;
use crate::writer::{MongoWriter, SinkError, WriteReport};

/// Reason code of documents MongoDB refused for their content.
pub const MONGODB_REJECTED: &str = "mongodb_rejected";

/// With nothing to write for this long, the sink pings MongoDB so readiness stays truthful.
const IDLE_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long an idle ping may take before MongoDB counts as unavailable.
const IDLE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this often, offsets whose commit failed are committed again.
const RECOMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Offsets of written batches are committed at most this often (and at exit), not after every
/// write: under latency-first batching a write can take a few ms, and one offset commit per
/// write cost the broker more CPU than the records did (issue 16). After a crash at most this
/// much more is read again, and the documents' `_id`s make those writes duplicates.
const OFFSET_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// How the loop batches, retries and stops (the transport-free part of the sink's settings).
#[derive(Debug, Clone)]
pub(crate) struct LoopSettings {
    /// The sink's group, named in its dead letters: `<application_id>-sink`.
    pub(crate) application: String,
    pub(crate) batch_size: usize,
    pub(crate) batch_interval: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) shutdown_grace: Duration,
}

/// The loop over one transport; `writer` is `None` when there is no MongoDB to write
/// (`tickstream run` without `--mongodb-uri`): records are then only read and committed.
pub(crate) struct SinkLoop<I> {
    pub(crate) input: I,
    pub(crate) settings: LoopSettings,
    pub(crate) mapper: DocumentMapper,
    pub(crate) writer: Option<MongoWriter>,
    pub(crate) metrics: Arc<SinkMetrics>,
    pub(crate) availability: Arc<Availability>,
}

/// Where the loop stands between turns.
struct Progress {
    /// The batch being filled.
    batch: Batch,
    /// At most one batch is being written while the next one fills: commits stay in offset
    /// order, and reading overlaps the write.
    in_flight: Option<WriteTask>,
    /// The input ended (in-process): nothing more will come.
    ended: bool,
    backoff: Backoff,
    /// The next offset of everything written, per partition: every commit covers it all, so
    /// a commit lost to an outage is made good by the next one.
    written: HashMap<PartitionKey, i64>,
    last_contact: Instant,
    last_recommit: Instant,
    /// `written` moved on since the last commit, which was at `last_commit`.
    commit_pending: bool,
    last_commit: Instant,
}

impl<I: SinkInput> SinkLoop<I> {
    /// Runs until the input ended (in-process) or `shutdown` is requested, then writes and
    /// commits what was read and closes the input. `Err` when the last batch could not be
    /// written within the shutdown grace (it is not committed: re-read on restart), when a
    /// dependency stayed unreachable for `give_up_after` ([`SinkError::GaveUp`]), or when the
    /// transport failed.
    pub(crate) async fn run(mut self, shutdown: Shutdown) -> Result<(), SinkError> {
        let outcome = match self.input.start(&self.availability) {
            Ok(()) => self.process(&shutdown).await,
            Err(error) => Err(error),
        };
        self.input.close(&self.availability);
        outcome
    }

    async fn process(&mut self, shutdown: &Shutdown) -> Result<(), SinkError> {
        let mut gave_up_rx = self.availability.gave_up();
        let mut backoff = Backoff::new(
            self.settings.backoff_initial,
            self.settings.backoff_max,
            u64::from(std::process::id()) ^ now_nanos(),
        );
        let drains = self.input.drains_on_stop();
        if !self.ensure_indexes(&mut backoff, shutdown).await? {
            // Nothing was read: Kafka re-reads it all on the next start; an in-process input
            // would be lost, which is no clean end.
            return match drains {
                false => Ok(()),
                true => Err(SinkError::Config(
                    "stopping before MongoDB ever answered: nothing was written".to_owned(),
                )),
            };
        }
        let mut progress = Progress {
            batch: Batch::default(),
            in_flight: None,
            ended: false,
            backoff,
            written: HashMap::new(),
            last_contact: Instant::now(),
            last_recommit: Instant::now(),
            commit_pending: false,
            last_commit: Instant::now(),
        };
        loop {
            self.availability.heartbeat();
            check_gave_up(&gave_up_rx)?;
            // Step 1 of the shutdown order, stop sources: Kafka is not polled any more; an
            // in-process input is read on to its end (its producers close it as they stop).
            let stopping = shutdown.is_requested() && !drains;
            if !stopping && !progress.ended {
                self.read(&mut progress, shutdown, &mut gave_up_rx).await?;
            }
            if let Some(assigned) = self.input.assignment_changed() {
                progress.batch.retain_assigned(&assigned);
                progress.written.retain(|key, _| assigned.contains(key));
            }
            self.recommit_if_due(&mut progress)?;
            self.commit_if_due(&mut progress, false, shutdown)?;
            let finishing = stopping || progress.ended;
            self.write_if_due(&mut progress, finishing, shutdown)
                .await?;
            if finishing {
                // Steps 2 and 3: drain (the last batch written) and commit.
                if let Some(task) = progress.in_flight.take() {
                    self.finish(task.await, shutdown, &mut progress).await?;
                }
                self.commit_if_due(&mut progress, true, shutdown)?;
                match progress.ended {
                    true => info!("sink input ended: everything read is written and committed"),
                    false => info!("sink stopped: in-flight batch written and committed"),
                }
                return Ok(());
            }
        }
    }

    /// Waits for the first of: records (added to the batch), the in-flight write's end (its
    /// batch is then finished), the batch's interval, a shutdown request, a give-up.
    async fn read(
        &mut self,
        progress: &mut Progress,
        shutdown: &Shutdown,
        gave_up_rx: &mut watch::Receiver<Option<GaveUp>>,
    ) -> Result<(), SinkError> {
        let mut deadline = progress
            .batch
            .started
            .map(|s| s + self.settings.batch_interval)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        if progress.commit_pending {
            deadline = deadline.min(progress.last_commit + OFFSET_COMMIT_INTERVAL);
        }
        let watch_shutdown = !shutdown.is_requested();
        let mapper = self.writer.is_some().then_some(&self.mapper);
        let in_flight = &mut progress.in_flight;
        let joined = tokio::select! {
            joined = async {
                match in_flight.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => Some(joined),
            () = shutdown.requested(), if watch_shutdown => None,
            _ = gave_up_rx.changed() => None,
            () = tokio::time::sleep_until(deadline.into()) => None,
            polled = self.input.poll(&mut progress.batch, mapper, self.settings.batch_size) => {
                progress.ended = polled? == Polled::Ended;
                None
            }
        };
        if let Some(joined) = joined {
            progress.in_flight = None;
            self.finish(joined, shutdown, progress).await?;
            progress.last_contact = Instant::now();
        }
        if progress.batch.is_empty()
            && progress.in_flight.is_none()
            && progress.last_contact.elapsed() >= IDLE_PROBE_INTERVAL
        {
            self.probe_idle().await?;
            progress.last_contact = Instant::now();
        }
        Ok(())
    }

    /// Latency first: starts writing the batch as soon as no write is in flight (MongoDB is
    /// idle, so waiting would only add latency); while one is, the batch grows until it is
    /// full, its interval has passed (a ceiling on how long a record waits, not a floor), or
    /// the loop is finishing — and is written after the previous write was finished, so that
    /// commits keep their order.
    async fn write_if_due(
        &mut self,
        progress: &mut Progress,
        finishing: bool,
        shutdown: &Shutdown,
    ) -> Result<(), SinkError> {
        let batch = &mut progress.batch;
        let due = batch
            .started
            .is_some_and(|s| s.elapsed() >= self.settings.batch_interval);
        if batch.is_empty() {
            batch.started = None;
            return Ok(());
        }
        let idle = progress.in_flight.is_none();
        if !(finishing || idle || due || batch.records >= self.settings.batch_size) {
            return Ok(());
        }
        let full = std::mem::take(batch);
        if let Some(task) = progress.in_flight.take() {
            self.finish(task.await, shutdown, progress).await?;
        }
        progress.in_flight = Some(self.write(full, shutdown, &progress.backoff));
        Ok(())
    }

    /// Creates the indexes first: the queries need them, and it proves MongoDB answers. False
    /// when stopped meanwhile (nothing was read yet).
    async fn ensure_indexes(
        &self,
        backoff: &mut Backoff,
        shutdown: &Shutdown,
    ) -> Result<bool, SinkError> {
        let Some(writer) = &self.writer else {
            return Ok(true);
        };
        let gave_up_rx = self.availability.gave_up();
        loop {
            match writer.ensure_indexes().await {
                Ok(()) => break,
                Err(error) => {
                    self.availability.mongodb_down(&error)?;
                    self.availability.heartbeat();
                    if wait_or_stop(backoff.next_delay(), shutdown).await {
                        return Ok(false);
                    }
                    check_gave_up(&gave_up_rx)?;
                }
            }
        }
        backoff.reset();
        self.availability.mongodb_up();
        Ok(true)
    }

    /// Starts writing `batch`; without MongoDB it is "written" as it is.
    fn write(&self, batch: Batch, shutdown: &Shutdown, backoff: &Backoff) -> WriteTask {
        let Some(writer) = &self.writer else {
            return tokio::spawn(async move { Ok((batch, WriteReport::default())) });
        };
        tokio::spawn(write_acknowledged(
            writer.clone(),
            batch,
            Retry {
                metrics: Arc::clone(&self.metrics),
                availability: Arc::clone(&self.availability),
                shutdown: shutdown.clone(),
                shutdown_grace: self.settings.shutdown_grace,
                backoff: backoff.clone(),
            },
        ))
    }

    /// A commit lost to an outage is made good once the transport answers, even if no record
    /// follows (at most once a second: a commit that keeps failing is not hammered).
    fn recommit_if_due(&self, progress: &mut Progress) -> Result<(), SinkError> {
        if self.availability.kafka_is_up()
            && !progress.written.is_empty()
            && progress.last_recommit.elapsed() >= RECOMMIT_INTERVAL
            && self.input.take_commit_failed()
        {
            progress.last_recommit = Instant::now();
            if self.input.commit(&progress.written, false)? {
                self.metrics.commits.inc();
            }
        }
        Ok(())
    }

    /// With nothing to write, nothing else would notice MongoDB leaving (or coming back):
    /// ask it, so `/readyz` and `mongodb_up` tell the truth while idle too.
    async fn probe_idle(&self) -> Result<(), SinkError> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        let availability = &self.availability;
        match tokio::time::timeout(IDLE_PROBE_TIMEOUT, writer.ping()).await {
            Ok(Ok(())) => availability.mongodb_up(),
            Ok(Err(error)) => availability.mongodb_down(&error)?,
            Err(_) => availability.mongodb_down(&SinkError::Config(format!(
                "no answer to a ping within {IDLE_PROBE_TIMEOUT:?}"
            )))?,
        }
        Ok(())
    }

    /// After a batch's write was acknowledged: counts, dead-letters and commits it.
    async fn finish(
        &mut self,
        joined: Result<Result<(Batch, WriteReport), SinkError>, tokio::task::JoinError>,
        shutdown: &Shutdown,
        progress: &mut Progress,
    ) -> Result<(), SinkError> {
        let (batch, report) = joined
            .map_err(|e| SinkError::Config(format!("the MongoDB write task failed: {e}")))??;
        self.count(&report);
        let mut dead_letters = batch.dead_letters;
        for rejected in &report.rejected {
            dead_letters.push(DeadLetter::refused(
                &batch.origins[rejected.index],
                &rejected.message,
            ));
        }
        self.dead_letter(&dead_letters).await?;
        // Only partitions still assigned: a revoked one has a new owner, whose commits a
        // stale offset of ours must not overwrite (it re-reads what we wrote: duplicates).
        for (key, next) in batch.offsets {
            if self.input.is_assigned(&key) {
                let committed = progress.written.entry(key).or_insert(next);
                *committed = (*committed).max(next);
            }
        }
        progress.commit_pending = true;
        self.commit_if_due(progress, false, shutdown)
    }

    /// Commits the offsets of everything written once [`OFFSET_COMMIT_INTERVAL`] has passed
    /// since the last commit, or now with `finishing`. The last commit before exiting waits
    /// for the broker's answer, unless there is no broker to answer (a synchronous commit
    /// would then hang the exit).
    fn commit_if_due(
        &self,
        progress: &mut Progress,
        finishing: bool,
        shutdown: &Shutdown,
    ) -> Result<(), SinkError> {
        if !progress.commit_pending
            || !(finishing || progress.last_commit.elapsed() >= OFFSET_COMMIT_INTERVAL)
        {
            return Ok(());
        }
        progress.commit_pending = false;
        progress.last_commit = Instant::now();
        let last = shutdown.is_requested() && self.availability.kafka_is_up();
        if self.input.commit(&progress.written, last)? {
            self.metrics.commits.inc();
        }
        Ok(())
    }

    fn count(&self, report: &WriteReport) {
        for (collection, n) in &report.written {
            self.metrics
                .documents_written
                .with_label_values(&[collection])
                .inc_by(*n);
        }
        for (collection, n) in &report.duplicates {
            self.metrics
                .duplicates
                .with_label_values(&[collection])
                .inc_by(*n);
        }
        debug!(
            written = report.total_written(),
            duplicates = report.total_duplicates(),
            rejected = report.rejected.len(),
            "batch written"
        );
    }

    /// Stores every dead letter and waits until each is stored: a record whose offset is
    /// committed must be either in MongoDB or a dead letter. While the transport cannot take
    /// them (Kafka away) this waits, alive and not ready, until it can, the sink gives up
    /// (`give_up_after`), or — once stopping — the shutdown grace has passed (the transport's
    /// retry rule, `tickstream_streams::DeadLetterWriter`): the batch is then not committed.
    async fn dead_letter(&mut self, dead_letters: &[DeadLetter]) -> Result<(), SinkError> {
        let mut gave_up_rx = self.availability.gave_up();
        for letter in dead_letters {
            let deliver = self.input.dead_letter(letter, &self.settings.application);
            tokio::pin!(deliver);
            let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    delivered = &mut deliver => break delivered?,
                    _ = heartbeat.tick() => self.availability.heartbeat(),
                    _ = gave_up_rx.changed() => check_gave_up(&gave_up_rx)?,
                }
            }
            self.metrics
                .dead_letter_records
                .with_label_values(&[&letter.code])
                .inc();
            warn!(
                topic = %letter.record.topic,
                partition = letter.record.partition,
                offset = letter.record.offset,
                code = %letter.code,
                reason = %letter.message,
                "record sent to the dead-letter topic"
            );
        }
        Ok(())
    }
}

/// `Err` once a dependency stayed unreachable for `give_up_after`.
fn check_gave_up(gave_up_rx: &watch::Receiver<Option<GaveUp>>) -> Result<(), SinkError> {
    match gave_up_rx.borrow().as_ref() {
        Some(gave_up) => Err(SinkError::GaveUp(gave_up.clone())),
        None => Ok(()),
    }
}

fn now_nanos() -> u64 {
    tickstream_model::clock::since_epoch().as_nanos() as u64
}
