//! tickstream's data model, shared by every processor (ingest, enrich, sink): the records
//! that travel through Kafka, their JSON codecs and validation, and the topology file.
//!
//! * [`RawTick`]: a price observation on the raw topic, in the full format
//!   (`{"symbol":"BTCUSDT","price":67234.5,"ts":1732390000123,"source":"binance"}`) or the
//!   reference Python pipeline's (`{"symbol": "BTCUSDT", "price": 67234.5}`).
//!   [`RawTick::decode`] validates on the hot path without building a `serde_json::Value`.
//! * [`MovingAverage`], [`Volatility`], [`Jump`]: the derived events enrich emits and sink
//!   stores ([`DerivedEvent`] gives their codec).
//! * [`InvalidRecord`]: why a record was refused — a stable [`code`](InvalidRecord::code) and
//!   a message saying what, where and how to fix it — which the runtime carries to the
//!   dead-letter topic in headers.
//! * [`Topology`]: the validated TOML topology file (symbols, topics, windows, source,
//!   MongoDB names, processing settings); see the [`topology`] module for the schema.
//!
//! Pure logic: no I/O except [`Topology::from_path`] reading the file, and [`clock`] reading
//! the wall clock (the one clock every processor uses).
//!
//! # Example
//!
//! ```
//! use tickstream_model::{DerivedEvent, Jump, RawTick, RecordFormat, Symbol, Topology};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let topology = Topology::from_str(r#"
//!     symbols = ["BTCUSDT", "ETHUSDT"]
//!     [topics]
//!     raw = { BTCUSDT = "btc", ETHUSDT = "eth" }
//! "#)?;
//! assert_eq!(topology.raw_topic_for("ETHUSDT"), Some("eth"));
//! assert_eq!(topology.topics.dead_letter, "tickstream.dlq");
//!
//! // Decode what the reference producer sends; the Kafka timestamp is the event time.
//! let options = topology.decode_options();
//! let tick = RawTick::decode(br#"{"symbol": "BTCUSDT", "price": 67234}"#, &options)?;
//! assert_eq!(tick.price, 67234.0);
//! assert_eq!(tick.event_time(Some(1_732_390_000_123))?, 1_732_390_000_123);
//!
//! // A refused record says why, for the dead-letter headers.
//! let refused = RawTick::decode(br#"{"symbol":"XRPUSDT","price":0.5}"#, &options).unwrap_err();
//! assert_eq!(refused.code(), "unknown_symbol");
//! println!("{refused}"); // symbol XRPUSDT is not one of the topology's symbols: add it …
//!
//! // Encode the full format; derived events have a codec too.
//! let tick = tick.with_ts(1_732_390_000_123).with_source("binance-rest");
//! assert_eq!(
//!     tick.encode(RecordFormat::Full),
//!     br#"{"symbol":"BTCUSDT","price":67234.0,"ts":1732390000123,"source":"binance-rest"}"#
//! );
//! let jump = Jump {
//!     symbol: Symbol::new("BTCUSDT")?,
//!     ts: 1_732_390_000_123,
//!     from: 65_000.0,
//!     to: 67_234.0,
//!     change_pct: (67_234.0 - 65_000.0) / 65_000.0 * 100.0,
//!     threshold_pct: topology.jumps.threshold_pct,
//! };
//! assert_eq!(Jump::decode(&jump.encode())?, jump);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod candle;
pub mod clock;
pub mod derived;
pub mod duration;
mod invalid;
mod json;
mod symbol;
pub mod tick;
pub mod topology;

pub use candle::Candle;
pub use derived::{
    DerivedEvent, EventKind, Jump, MAX_DERIVED_BYTES, MovingAverage, Volatility, WindowBounds,
};
pub use invalid::{InvalidRecord, JsonType};
pub use symbol::{Symbol, SymbolError};
pub use tick::{DecodeOptions, RawTick, RecordFormat};
pub use topology::{Topology, TopologyError};

#[cfg(test)]
mod proptests;
