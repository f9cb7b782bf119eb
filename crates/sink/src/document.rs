//! From a Kafka record to the MongoDB document the sink stores: pure, no I/O.
//!
//! # `_id`: deterministic, so a replay never duplicates a document
//!
//! * **Raw prices**: the record's exact position in Kafka, led by its event time, as an
//!   embedded document ([`RawPriceId`]):
//!   `{t: event time (BSON date, ms), topic: "prices.raw", p: partition (int32), o: offset (int64)}`.
//!   Kafka never reuses a (topic, partition, offset), and a replay after a crash reads the
//!   same offsets with the same timestamps, so it rebuilds the same `_id` byte for byte and
//!   MongoDB refuses the copy (duplicate key, E11000). Nothing is truncated or hashed, so two
//!   different records can never meet: not two raw topics feeding one collection, not four
//!   billion offsets apart. (An earlier 12-byte `ObjectId` packed a 16-bit hash of the topic
//!   and the offset's low 32 bits: two topics whose names collide in 16 bits, at the same
//!   second, partition and offset, lost the second record as a "duplicate".)
//!   Why not a content id (symbol, price, ts)? Two genuine ticks may share all three (the
//!   reference format has only the Kafka millisecond timestamp), and one would be lost.
//!   Why `t` first? The reference consumer's queries ("latest", "the last N documents") sort
//!   by `_id`. MongoDB orders embedded documents field by field in their stored order, so
//!   ours sort by event time (to the millisecond), then topic, partition and offset: those
//!   queries keep working unchanged against `fx.btc`, and `_id` stays one small index. (Only
//!   a collection that also holds the reference consumer's own `ObjectId` documents sorts
//!   those after ours: BSON orders every embedded document before every `ObjectId`.)
//! * **Derived events**: their natural key, as a string: `symbol|window|ts` for moving averages
//!   and volatility, `symbol|ts` for jumps, `symbol|interval|start` for candles. Enrich emits at most one event per tick, window and
//!   kind, so the key is unique; an at-least-once enrich that re-emits after a restart produces
//!   the same key, which collapses the copies the Kafka offsets would not.
//!
//! # Documents
//!
//! Raw price: `{_id, symbol, price, ts, source?, qty?, trade_id?, buyer_maker?}` — the reference consumer's `symbol` and
//! `price` (always a double, even for a JSON integer price), plus the event time `ts` as a BSON
//! date and the `source` when the record names one. Derived events: their fields, `ts` a BSON
//! date, counts as 64-bit integers, a window's bounds (`start`/`end`, `first_ts`/`last_ts`) as
//! BSON dates when the event carries them. Candles: their fields, `start`, `end`, `first_ts` and
//! `last_ts` BSON dates, `volume` and `vwap` null without quantities; their collection is a
//! time-series collection (time field `start`, meta field `symbol`), which enforces no unique
//! `_id`, so the writer looks the batch's candles up before inserting them
//! ([`crate::MongoWriter`]).

use std::collections::HashMap;

use mongodb::bson::{Bson, DateTime, Document, RawBson, RawDocumentBuf, doc, rawdoc};
use tickstream_model::{
    Candle, DecodeOptions, DerivedEvent, EventKind, InvalidRecord, Jump, MovingAverage, RawTick,
    Topology, Volatility, WindowBounds,
};
use tickstream_streams::Record;

/// A document ready for MongoDB and the collection it belongs in.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkDocument {
    pub collection: String,
    /// Encoded BSON, built once: the driver sends these bytes as they are.
    pub document: RawDocumentBuf,
}

/// Why a record cannot become a document: it goes to the dead-letter topic with `code` and
/// `message` in its headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MappingError {
    pub code: &'static str,
    pub message: String,
}

impl From<InvalidRecord> for MappingError {
    fn from(invalid: InvalidRecord) -> Self {
        Self {
            code: invalid.code(),
            message: invalid.to_string(),
        }
    }
}

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    RawPrices,
    Derived(EventKind),
}

/// Maps records of the topology's raw and derived topics to documents.
#[derive(Debug, Clone)]
pub struct DocumentMapper {
    topology: Topology,
    decode: DecodeOptions,
    content: HashMap<String, Content>,
}

impl DocumentMapper {
    pub fn new(topology: &Topology) -> Self {
        let mut content: HashMap<String, Content> = topology
            .raw_topics()
            .into_iter()
            .map(|topic| (topic.to_owned(), Content::RawPrices))
            .collect();
        for kind in topology.event_kinds() {
            content.insert(topology.topic(kind).to_owned(), Content::Derived(kind));
        }
        Self {
            topology: topology.clone(),
            decode: topology.decode_options(),
            content,
        }
    }

    /// The topics the sink consumes: raw first, then derived.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .topology
            .raw_topics()
            .into_iter()
            .map(str::to_owned)
            .collect();
        topics.extend(
            self.topology
                .derived_topics()
                .into_iter()
                .map(str::to_owned),
        );
        topics
    }

    /// The document for `record`, or why there is none.
    pub fn map(&self, record: &Record<'_>) -> Result<SinkDocument, MappingError> {
        let content = self.content.get(record.topic).ok_or_else(|| MappingError {
            code: "unknown_topic",
            message: format!(
                "topic {} is neither a raw nor a derived topic of the topology",
                record.topic
            ),
        })?;
        let value = record.value.unwrap_or_default();
        match *content {
            Content::RawPrices => self.raw_price(record, value),
            Content::Derived(EventKind::MovingAverage) => {
                let event = MovingAverage::decode(value)?;
                let mut document = rawdoc! {
                    "_id": format!("{}|{}|{}", event.symbol.as_str(), event.window, event.ts),
                    "symbol": event.symbol.as_str(),
                    "ts": DateTime::from_millis(event.ts),
                    "window": event.window.as_str(),
                    "mean": event.mean,
                    "count": count(event.count),
                    "min": event.min,
                    "max": event.max,
                };
                document.append("vwap", event.vwap.map_or(RawBson::Null, RawBson::Double));
                append_bounds(&mut document, event.bounds);
                Ok(self.derived(EventKind::MovingAverage, document))
            }
            Content::Derived(EventKind::Volatility) => {
                let event = Volatility::decode(value)?;
                let mut document = rawdoc! {
                    "_id": format!("{}|{}|{}", event.symbol.as_str(), event.window, event.ts),
                    "symbol": event.symbol.as_str(),
                    "ts": DateTime::from_millis(event.ts),
                    "window": event.window.as_str(),
                    "stddev": event.stddev,
                    "mean": event.mean,
                    "count": count(event.count),
                };
                append_bounds(&mut document, event.bounds);
                Ok(self.derived(EventKind::Volatility, document))
            }
            Content::Derived(EventKind::Jump) => {
                let event = Jump::decode(value)?;
                Ok(self.derived(
                    EventKind::Jump,
                    rawdoc! {
                        "_id": format!("{}|{}", event.symbol.as_str(), event.ts),
                        "symbol": event.symbol.as_str(),
                        "ts": DateTime::from_millis(event.ts),
                        "from": event.from,
                        "to": event.to,
                        "change_pct": event.change_pct,
                        "threshold_pct": event.threshold_pct,
                    },
                ))
            }
            Content::Derived(EventKind::Candle) => {
                let candle = Candle::decode(value)?;
                Ok(self.derived(EventKind::Candle, candle_document(&candle)))
            }
        }
    }

    fn raw_price(&self, record: &Record<'_>, value: &[u8]) -> Result<SinkDocument, MappingError> {
        let tick = RawTick::decode(value, &self.decode)?;
        let ts = tick.event_time(record.timestamp)?;
        let collection = self
            .topology
            .prices_collection_for(tick.symbol.as_str())
            .ok_or_else(|| MappingError {
                code: "no_collection",
                message: format!(
                    "symbol {} has no prices collection in the topology: add it to \
                     [mongodb.collections] prices",
                    tick.symbol.as_str()
                ),
            })?;
        let mut document = rawdoc! {
            "_id": RawPriceId::encode(record.topic, record.partition, record.offset, ts),
            "symbol": tick.symbol.as_str(),
            "price": tick.price,
            "ts": DateTime::from_millis(ts),
        };
        if let Some(source) = &tick.source {
            document.append("source", source.as_ref());
        }
        if let Some(qty) = tick.qty {
            document.append("qty", qty);
        }
        if let Some(id) = tick.trade_id {
            // Binance's ids are far below 2^63; BSON has no unsigned integers.
            document.append("trade_id", i64::try_from(id).unwrap_or(i64::MAX));
        }
        if let Some(maker) = tick.buyer_maker {
            document.append("buyer_maker", maker);
        }
        Ok(SinkDocument {
            collection: collection.to_owned(),
            document,
        })
    }

    fn derived(&self, kind: EventKind, document: RawDocumentBuf) -> SinkDocument {
        SinkDocument {
            collection: self.topology.collection(kind).to_owned(),
            document,
        }
    }
}

/// A window's bounds as BSON dates: `start`/`end` (time windows) or `first_ts`/`last_ts`
/// (count windows); nothing for an event without them.
fn append_bounds(document: &mut RawDocumentBuf, bounds: Option<WindowBounds>) {
    let (a, b, from, to) = match bounds {
        None => return,
        Some(WindowBounds::Time { start, end }) => ("start", "end", start, end),
        Some(WindowBounds::Count { first_ts, last_ts }) => {
            ("first_ts", "last_ts", first_ts, last_ts)
        }
    };
    document.append(a, DateTime::from_millis(from));
    document.append(b, DateTime::from_millis(to));
}

/// The stored candle: `_id` `symbol|interval|start` (start in epoch ms).
pub(crate) fn candle_document(c: &Candle) -> RawDocumentBuf {
    let optional = |v: Option<f64>| v.map_or(RawBson::Null, RawBson::Double);
    let mut document = rawdoc! {
        "_id": candle_id(c.symbol.as_str(), &c.interval, c.start),
        "symbol": c.symbol.as_str(),
        "interval": c.interval.as_str(),
        "start": DateTime::from_millis(c.start),
        "end": DateTime::from_millis(c.end),
        "open": c.open,
        "high": c.high,
        "low": c.low,
        "close": c.close,
        "trades": count(c.trades),
    };
    document.append("volume", optional(c.volume));
    document.append("vwap", optional(c.vwap));
    document.append("first_ts", DateTime::from_millis(c.first_ts));
    document.append("last_ts", DateTime::from_millis(c.last_ts));
    document
}

/// A candle's `_id`: one per symbol, interval and start.
pub fn candle_id(symbol: &str, interval: &str, start_ms: i64) -> String {
    format!("{symbol}|{interval}|{start_ms}")
}

/// Counts are at most a window's size; BSON has no unsigned integers.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `_id` of a raw price document: where the record sits in Kafka, led by its event time
/// (see the module docs for why this shape). Ordered as MongoDB orders the stored ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawPriceId {
    /// Event time, epoch milliseconds (`t`, a BSON date).
    pub event_time_ms: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl RawPriceId {
    pub fn new(topic: &str, partition: i32, offset: i64, event_time_ms: i64) -> Self {
        Self {
            event_time_ms,
            topic: topic.to_owned(),
            partition,
            offset,
        }
    }

    /// The stored form, built without an intermediate `RawPriceId` on the hot path. The field
    /// order is part of the identity: MongoDB compares embedded documents field by field.
    pub(crate) fn encode(
        topic: &str,
        partition: i32,
        offset: i64,
        event_time_ms: i64,
    ) -> RawDocumentBuf {
        rawdoc! {
            "t": DateTime::from_millis(event_time_ms),
            "topic": topic,
            "p": partition,
            "o": offset,
        }
    }

    /// As a BSON value, e.g. for `doc! { "_id": id.to_bson() }`.
    pub fn to_bson(&self) -> Bson {
        Bson::Document(self.to_document())
    }

    pub fn to_document(&self) -> Document {
        doc! {
            "t": DateTime::from_millis(self.event_time_ms),
            "topic": &self.topic,
            "p": self.partition,
            "o": self.offset,
        }
    }

    /// Reads a stored `_id`; `None` when it is not one the sink wrote.
    pub fn from_bson(id: &Bson) -> Option<Self> {
        let Bson::Document(id) = id else {
            return None;
        };
        if !id.keys().map(String::as_str).eq(["t", "topic", "p", "o"]) {
            return None;
        }
        Some(Self {
            event_time_ms: id.get_datetime("t").ok()?.timestamp_millis(),
            topic: id.get_str("topic").ok()?.to_owned(),
            partition: id.get_i32("p").ok()?,
            offset: id.get_i64("o").ok()?,
        })
    }
}

/// The deterministic `_id` of a raw price document (see the module docs for the layout).
pub fn raw_price_id(topic: &str, partition: i32, offset: i64, event_time_ms: i64) -> RawPriceId {
    RawPriceId::new(topic, partition, offset, event_time_ms)
}

#[cfg(test)]
#[path = "document_tests.rs"]
mod tests;
