//! Raw prices and derived analytics from Kafka into MongoDB, idempotently; the queries users
//! ask of them.
//!
//! Layers, each usable alone:
//!
//! * [`DocumentMapper`] (pure): a Kafka record → the collection and BSON document to store,
//!   with a deterministic `_id` (see [`document`] for the scheme and why), or the reason it
//!   goes to the dead-letter topic.
//! * [`MongoWriter`]: batches of [`SinkDocument`]s → unordered bulk inserts; duplicates (a
//!   replay) are counted, documents MongoDB refuses for their content are reported, an
//!   unreachable MongoDB is an error to retry. No Kafka: `tickstream run` uses it in-process.
//! * The sink's loop (`pipeline`), written once over a small transport trait (`input`):
//!   read → batch by count and time → write → dead-letter (original headers kept, the reason
//!   added) → commit positions after MongoDB acknowledged. Rides out MongoDB and broker
//!   outages (backing off, not ready) for at most `processing.give_up_after`, then stops with
//!   [`GaveUp`]. Two transports:
//!   * [`KafkaSink`] (`tickstream sink`): consumes read_committed, dead-letters to the
//!     dead-letter topic, picks up subscribed topics created after it started within seconds;
//!   * [`InProcessSink`] (`tickstream run`): reads `tickstream_streams::InMemoryBroker` to the
//!     end of its topics, every record shown to a [`RecordObserver`] (the JSON Lines files).
//! * [`Queries`]: latest prices, stats, jumps and analytics as typed results.

mod availability;
pub mod backoff;
mod batch;
pub mod document;
mod in_process;
mod input;
mod kafka;
mod metrics;
mod pipeline;
pub mod query;
pub mod uri;
mod writer;

pub use availability::GaveUp;
pub use document::{DocumentMapper, MappingError, RawPriceId, SinkDocument, raw_price_id};
pub use in_process::{InProcessSink, RecordObserver};
pub use kafka::{KafkaSink, SinkConfig};
pub use metrics::SinkMetrics;
pub use pipeline::MONGODB_REJECTED;
pub use query::{Queries, QueryError};
pub use uri::{InvalidUri, MongoUri, redact_uri};
pub use writer::{MongoWriter, RejectedDocument, SinkError, WriteReport};
