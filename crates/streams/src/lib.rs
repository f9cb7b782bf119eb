//! A Kafka Streams-style runtime for stateful stream processors, in the vocabulary Kafka
//! Streams users know: a **processor** handles one record at a time; a **task** runs one
//! processor instance per input partition (co-partitioned inputs share it); each task owns a
//! **state store** — a typed write cache over a local sled tree, backed by a compacted
//! **changelog** topic and restored from it when the local copy is missing or untrustworthy;
//! the **processing guarantee** is exactly-once by default (outputs, changelog writes and input
//! offsets commit in one Kafka transaction every **commit interval**). Records a processor
//! rejects go to a **dead-letter topic** with the reason in headers, and never stop the task.
//!
//! Processors are plain Rust and testable without Kafka:
//!
//! ```
//! use tickstream_streams::{
//!     KeyValueStore, ProcessError, Processor, ProcessorContext, Record, Rejection, TaskId,
//! };
//!
//! /// Counts records per key and emits the running count.
//! struct Counting;
//!
//! impl Processor for Counting {
//!     type State = u64;
//!
//!     fn process(&mut self, record: &Record<'_>, ctx: &mut ProcessorContext<'_, u64>) -> Result<(), ProcessError> {
//!         let key = record.key.ok_or_else(|| Rejection::new("missing_key", "records need a key"))?;
//!         let count = ctx.store().get(key)?.copied().unwrap_or(0) + 1;
//!         ctx.store().put(key, count)?;
//!         ctx.send("counts", Some(key), count.to_string().as_bytes());
//!         Ok(())
//!     }
//! }
//!
//! let mut store = KeyValueStore::in_memory("counts");
//! let mut emitted = Vec::new();
//! let mut ctx = ProcessorContext::new(TaskId(0), &mut store, &mut emitted);
//! let record = Record { topic: "words", partition: 0, offset: 0, timestamp: None, key: Some(b"tick"), value: None };
//! Counting.process(&record, &mut ctx)?;
//! Counting.process(&record, &mut ctx)?;
//! assert_eq!(emitted.last().map(|(_, _, v)| v.as_slice()), Some(&b"2"[..]));
//! # Ok::<(), ProcessError>(())
//! ```
//!
//! On Kafka, [`KafkaStreams`] runs the same processor; [`run_until_shutdown`] adds `/metrics`,
//! `/healthz`, `/readyz` and stops it when the process's [`Shutdown`] is requested (on
//! SIGTERM/SIGINT: [`Shutdown::request_on_signals`]).

mod client_log;
mod config;
#[cfg(any(test, feature = "testing"))]
mod counting;
pub mod dlq_headers;
mod http;
mod kafka;
mod memory;
mod metrics;
pub mod partitioner;
pub mod private_fs;
mod processor;
mod runner;
mod shutdown;
mod store;
mod stream_loop;
mod task;

pub use client_log::{
    Classification, ClientLog, Kind as ClientLogKind, LoggingContext, RATE_LIMIT_WINDOW,
    RateLimiter, Severity, classify_error, classify_log,
};
pub use config::{
    ConfigError, DENIED_KAFKA_SETTINGS, KafkaSettingError, KafkaSettings, ProcessingGuarantee,
    RepartitionPolicy, StreamsConfig,
};
/// Test fixture (feature `testing`): the per-key counter the runtime's tests and benchmarks run.
#[cfg(any(test, feature = "testing"))]
pub use counting::CountingProcessor;
pub use http::{Endpoints, bind as bind_http};
pub use kafka::client::{FETCH_QUEUE_BACKOFF, Rebootstrapper, client_config, kafka_millis};
pub use kafka::dead_letter::{DeadLetter, DeadLetterError, DeadLetterWriter, retry_delay};
pub use kafka::produce::{SendError, send_with_backpressure};
pub use kafka::record::OwnedRecord;
pub use kafka::{
    ExistingTopic, KafkaStreams, ProcessorFactory, StreamsError, TopicRole, TopicSpec, TopicState,
    create_topics, describe_topics,
};
pub use memory::{
    Fetched, InMemoryBroker, InMemoryStreams, MemoryError, StoredRecord, TopicCapacity, TopicUsage,
};
pub use metrics::{Health, MetricsRegistry, StreamsMetrics};
pub use processor::{
    Collector, Emitted, ProcessError, Processor, ProcessorContext, PunctuationType, Record,
    Rejection, TaskId,
};
pub use runner::run_until_shutdown;
pub use shutdown::Shutdown;
pub use store::{KeyValueStore, Logged, StateCodec, StateDir, StoreError};
