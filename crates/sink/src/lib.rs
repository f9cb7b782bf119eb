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
//! * [`KafkaSink`]: consume (read_committed) → batch by count and time → write → dead-letter
//!   (original headers kept, the reason added) → commit offsets after MongoDB acknowledged.
//!   Rides out MongoDB and broker outages (backing off, not ready) for at most
//!   `processing.give_up_after`, then stops with [`GaveUp`]; picks up subscribed topics
//!   created after it started within seconds.
//! * [`Queries`]: latest prices, stats, jumps and analytics as typed results.

mod availability;
pub mod backoff;
mod batch;
pub mod document;
mod kafka;
mod metrics;
pub mod query;
pub mod uri;
mod writer;

pub use availability::GaveUp;
pub use document::{DocumentMapper, MappingError, RawPriceId, SinkDocument, raw_price_id};
pub use kafka::{KafkaSink, MONGODB_REJECTED, SinkConfig};
pub use metrics::SinkMetrics;
pub use query::{Queries, QueryError};
pub use uri::{InvalidUri, MongoUri, redact_uri};
pub use writer::{MongoWriter, RejectedDocument, SinkError, WriteReport};
