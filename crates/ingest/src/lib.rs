//! Market-data sources turned into raw tick records on Kafka: the library behind
//! `tickstream ingest`.
//!
//! Two halves that know nothing of each other:
//!
//! - **sources** ([`Source`]): Binance REST (one batched request per interval, with the
//!   [`politeness`] rules: 429/418 `Retry-After`, used-weight tracking, backoff with jitter,
//!   a circuit breaker, timeouts), Binance WebSocket combined streams (reconnect with backoff,
//!   gaps reported, never filled), a JSON Lines replay, and a seeded synthetic random walk;
//!   whatever the network sends is bounded first ([`limits`]: size caps, a handshake
//!   deadline, a clamped `Retry-After`, unlisted symbols dropped);
//! - **the transports** ([`TickTransport`]): Kafka ([`KafkaTickSink`]: idempotent producer,
//!   `acks=all`, key = symbol in Kafka's default (murmur2) partition, topic, record format and
//!   compression from the topology; a broker outage is ridden out (ticks buffered, not ready)
//!   for at most `processing.give_up_after`), and the in-process transport of `tickstream run`
//!   ([`MemoryTickSink`]), placing ticks the same way.
//!
//! [`pipeline::run`] joins them: the one produce loop, for the `ingest` processor over Kafka
//! and for `tickstream run` over the in-process transport.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use tickstream_ingest::{IngestMetrics, Source};
//! let topology = tickstream_model::Topology::default(); // synthetic source
//! let metrics = IngestMetrics::new(&topology.application_id);
//! let mut source = Source::from_topology(&topology, &metrics)?;
//! while let Some(ticks) = source.next_batch().await? {
//!     println!("{} ticks, first {:?}", ticks.len(), ticks[0]);
//! }
//! # Ok(()) }
//! ```

pub mod binance;
mod broker_watch;
pub mod kafka;
pub mod limits;
mod memory;
pub mod metrics;
pub mod pipeline;
pub mod politeness;
pub mod replay;
pub mod rest;
pub mod rng;
pub mod source;
pub mod synthetic;
mod transport;
pub mod ws;

pub use broker_watch::BrokerWatch;
pub use kafka::{KafkaTickSink, SinkError};
pub use memory::{AlwaysReady, MemoryTickSink};
pub use metrics::{IngestMetrics, WaitReason};
pub use pipeline::{IngestError, Stopped, run};
pub use politeness::{Backoff, BreakerState, CircuitBreaker, WeightTracker};
pub use source::{Politeness, Source, SourceError, binance_reachable};
pub use transport::{TickTransport, TransportWatch};
