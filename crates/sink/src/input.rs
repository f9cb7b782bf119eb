//! What the sink's loop ([`crate::pipeline`]) reads from, whatever carries the records: Kafka
//! ([`crate::kafka`]) or the in-process transport of `tickstream run` ([`crate::in_process`]).
//!
//! The contract each transport keeps:
//!
//! * **Records in**, with topic, partition, offset, key, value, timestamp (a
//!   `tickstream_streams::Record`) and their own headers, straight into the loop's batch.
//!   [`SinkInput::poll`] is cancel-safe: it takes records only after its last wait, in one
//!   synchronous step, so the loop may drop it for another event without losing any.
//! * **Positions out**: [`SinkInput::commit`] is called only with offsets whose records
//!   MongoDB acknowledged (or that were dead-lettered), never before.
//! * **Dead letters out**: [`SinkInput::dead_letter`] returns once the letter is stored where
//!   this transport keeps dead letters; the offset is committed only after that.
//! * **Assignment**: a transport whose partitions move (Kafka's rebalances) says so; the
//!   loop drops what it buffered of revoked partitions.
//! * **End of input**: a finite in-process topic ends ([`Polled::Ended`]); Kafka never does.
//! * **Readiness**: the transport reports its own availability (Kafka's brokers and topics)
//!   to the sink's [`Availability`] from [`SinkInput::start`] on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::availability::Availability;
use crate::batch::{Batch, DeadLetter, PartitionKey};
use crate::document::DocumentMapper;
use crate::writer::SinkError;

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Polled {
    /// Records were added, or none came within the transport's wait: poll again.
    More,
    /// Every followed topic ended and was read to its end: nothing more will come.
    Ended,
}

/// One transport under the sink's loop (see the module docs).
pub(crate) trait SinkInput: Send {
    /// Starts reading and watching the transport's availability.
    fn start(&mut self, availability: &Arc<Availability>) -> Result<(), SinkError>;

    /// Waits for records, then adds what is available now to `batch` until it holds
    /// `batch_size` records (mapped by `mapper`; positions only without one).
    fn poll<'a>(
        &'a mut self,
        batch: &'a mut Batch,
        mapper: Option<&'a DocumentMapper>,
        batch_size: usize,
    ) -> impl Future<Output = Result<Polled, SinkError>> + Send + 'a;

    /// Whether a shutdown request leaves the input to be read to its end (finite in-process
    /// topics, which their producers close when they stop: `tickstream run` drains) instead of
    /// stopping the reads at once (Kafka: what is not read now is read on the next start).
    fn drains_on_stop(&self) -> bool;

    /// The partitions assigned now, if that changed since the last call.
    fn assignment_changed(&mut self) -> Option<HashSet<PartitionKey>>;

    /// Whether `partition` is still this sink's to commit.
    fn is_assigned(&self, partition: &PartitionKey) -> bool;

    /// Commits `offsets` (the next offset of everything written, per partition); `last` for
    /// the final commit before exiting. `Ok(false)`: the commit failed and is repeated later
    /// (see [`Self::take_commit_failed`]).
    fn commit(&self, offsets: &HashMap<PartitionKey, i64>, last: bool) -> Result<bool, SinkError>;

    /// Whether a commit failed since the last call: everything written is committed again.
    fn take_commit_failed(&self) -> bool;

    /// Stores `letter` where this transport keeps dead letters, with the reason headers of
    /// `application` (the sink's group), and returns once it is stored.
    fn dead_letter<'a>(
        &'a mut self,
        letter: &'a DeadLetter,
        application: &'a str,
    ) -> impl Future<Output = Result<(), SinkError>> + Send + 'a;

    /// Stops reading and leaves (the group), however the loop ended.
    fn close(self, availability: &Availability);
}
