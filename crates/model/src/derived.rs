//! Derived events: what enrich emits onto the analytics topics and sink stores in MongoDB.
//!
//! Every event carries the `symbol`, the event time `ts` of the tick that produced it and
//! (moving average and volatility) the `window` it was computed over, as a stable label:
//! `count:<N>` (the last N ticks) or `time:<span>` (the ticks of the last span of event time;
//! the span in the largest whole unit of `h`, `m`, `s`, `ms`: `time:5m`, `time:90s`).
//!
//! JSON is compact, fields in the documented order; floats are written with the shortest
//! digits that round-trip exactly. [`DerivedEvent::decode`] validates and refuses with the
//! same [`InvalidRecord`] reasons as raw ticks; the `serde` derives (for MongoDB documents)
//! write the same fields but their `Deserialize` does not validate.

use serde::{Deserialize, Serialize};

use crate::invalid::{InvalidRecord, truncate};
use crate::json::{self, ObjectWriter};
use crate::symbol::Symbol;

/// The kinds of derived event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// [`MovingAverage`].
    MovingAverage,
    /// [`Volatility`].
    Volatility,
    /// [`Jump`].
    Jump,
    /// [`crate::Candle`]: only from a topology with `[[candles]]`
    /// ([`crate::Topology::event_kinds`]).
    Candle,
}

impl EventKind {
    /// All kinds, in topic order.
    pub const ALL: [Self; 4] = [
        Self::MovingAverage,
        Self::Volatility,
        Self::Jump,
        Self::Candle,
    ];

    /// Stable name: `moving_average`, `volatility`, `jump`, `candle`.
    pub fn name(self) -> &'static str {
        match self {
            Self::MovingAverage => "moving_average",
            Self::Volatility => "volatility",
            Self::Jump => "jump",
            Self::Candle => "candle",
        }
    }
}

/// What every derived event offers: its identity and its JSON codec.
pub trait DerivedEvent: Sized {
    /// Which kind this is.
    const KIND: EventKind;

    /// The symbol the event is about.
    fn symbol(&self) -> Symbol;

    /// Event time (epoch ms) of the tick that produced the event.
    fn ts(&self) -> i64;

    /// The window label, for windowed events.
    fn window(&self) -> Option<&str>;

    /// Appends the compact JSON encoding to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);

    /// The compact JSON encoding.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        self.encode_into(&mut out);
        out
    }

    /// Decodes and validates; unknown fields are ignored. Records above
    /// [`MAX_DERIVED_BYTES`] are refused as `oversized`.
    fn decode(bytes: &[u8]) -> Result<Self, InvalidRecord>;
}

/// Size limit for decoding a derived event: 4 KiB (they are about 150 bytes).
pub const MAX_DERIVED_BYTES: usize = 4096;

/// The moving average (arithmetic mean) of a symbol's prices over one window, with the
/// window's extremes, emitted after every tick once the window holds its minimum count.
///
/// | field | JSON type | meaning |
/// |---|---|---|
/// | `symbol` | string | trading pair |
/// | `ts` | integer | event time (epoch ms) of the tick that produced it |
/// | `window` | string | window label, `count:20` or `time:5m` |
/// | `mean` | number | arithmetic mean of the window's prices |
/// | `count` | integer >= 1 | number of prices in the window |
/// | `min` | number | lowest price in the window |
/// | `max` | number | highest price in the window |
/// | `vwap` | number or null | Σ price·qty / Σ qty over the window's ticks that carry a quantity; null when none does |
/// | `start`, `end` | integer | time windows: the event-time span `[start, end)` covered ([`WindowBounds`]) |
/// | `first_ts`, `last_ts` | integer | count windows: event times of the oldest and newest tick held |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovingAverage {
    /// Trading pair.
    pub symbol: Symbol,
    /// Event time (epoch ms) of the tick that produced the event.
    pub ts: i64,
    /// Window label (`count:20`, `time:5m`).
    pub window: String,
    /// Arithmetic mean of the window's prices.
    pub mean: f64,
    /// Number of prices in the window.
    pub count: u64,
    /// Lowest price in the window.
    pub min: f64,
    /// Highest price in the window.
    pub max: f64,
    /// Volume-weighted average price of the window's ticks that carry a quantity.
    pub vwap: Option<f64>,
    /// What the window covers in event time, when known.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<WindowBounds>,
}

/// The event times a windowed event covers: written as `start`/`end` for a time window,
/// `first_ts`/`last_ts` for a count window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WindowBounds {
    /// A time window's span `[start, end)`: `end` one past the symbol's newest event time,
    /// `end - start` the window's span.
    Time {
        /// Epoch ms, inclusive.
        start: i64,
        /// Epoch ms, exclusive.
        end: i64,
    },
    /// A count window's oldest and newest tick (arrival order; with late ticks not
    /// necessarily its earliest and latest event time).
    Count {
        /// Event time of the oldest tick held.
        first_ts: i64,
        /// Event time of the newest tick held.
        last_ts: i64,
    },
}

/// The volatility of a symbol's prices over one window: the **population** standard
/// deviation (divide by n), as the reference computes it, with the mean it is taken around.
///
/// | field | JSON type | meaning |
/// |---|---|---|
/// | `symbol` | string | trading pair |
/// | `ts` | integer | event time (epoch ms) of the tick that produced it |
/// | `window` | string | window label, `count:20` or `time:5m` |
/// | `stddev` | number >= 0 | population standard deviation of the window's prices |
/// | `mean` | number | arithmetic mean of the window's prices |
/// | `count` | integer >= 1 | number of prices in the window |
/// | `start`, `end` / `first_ts`, `last_ts` | integer | as for [`MovingAverage`] |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volatility {
    /// Trading pair.
    pub symbol: Symbol,
    /// Event time (epoch ms) of the tick that produced the event.
    pub ts: i64,
    /// Window label (`count:20`, `time:5m`).
    pub window: String,
    /// Population standard deviation of the window's prices.
    pub stddev: f64,
    /// Arithmetic mean of the window's prices.
    pub mean: f64,
    /// Number of prices in the window.
    pub count: u64,
    /// What the window covers in event time, when known.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<WindowBounds>,
}

/// A price jump: consecutive ticks of a symbol whose relative change
/// `(to - from) / from` exceeds the threshold in absolute value.
///
/// | field | JSON type | meaning |
/// |---|---|---|
/// | `symbol` | string | trading pair |
/// | `ts` | integer | event time (epoch ms) of the tick that jumped (the one priced `to`) |
/// | `from` | number > 0 | the previous tick's price |
/// | `to` | number > 0 | this tick's price |
/// | `change_pct` | number | `(to - from) / from * 100`; negative for a drop |
/// | `threshold_pct` | number in (0, 100] | the threshold in force, percent |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jump {
    /// Trading pair.
    pub symbol: Symbol,
    /// Event time (epoch ms) of the tick priced `to`.
    pub ts: i64,
    /// The previous tick's price.
    pub from: f64,
    /// This tick's price.
    pub to: f64,
    /// Relative change in percent, signed.
    pub change_pct: f64,
    /// The threshold in force, percent.
    pub threshold_pct: f64,
}

pub(crate) const TS: &str = "an integer of epoch milliseconds >= 0";

pub(crate) fn symbol(raw: Option<&str>) -> Result<Symbol, InvalidRecord> {
    let raw = json::required(raw, "symbol", "a JSON string")?;
    Ok(Symbol::new(&json::string(raw, "symbol")?)?)
}

pub(crate) fn ts(raw: Option<&str>) -> Result<i64, InvalidRecord> {
    json::non_negative_i64(json::required(raw, "ts", TS)?, "ts", TS)
}

pub(crate) fn window(raw: Option<&str>) -> Result<String, InvalidRecord> {
    let raw = json::required(raw, "window", "a JSON string")?;
    let label = json::string(raw, "window")?;
    if label.is_empty() || label.len() > 64 {
        return Err(InvalidRecord::InvalidValue {
            field: "window",
            expected: "a window label of 1 to 64 bytes, such as \"count:20\"",
            found: format!("{:?}", truncate(&label, 64)),
        });
    }
    Ok(label.into_owned())
}

pub(crate) fn finite(raw: Option<&str>, field: &'static str) -> Result<f64, InvalidRecord> {
    json::finite(json::required(raw, field, "a JSON number")?, field)
}

pub(crate) fn count(raw: Option<&str>) -> Result<u64, InvalidRecord> {
    json::positive_u64(json::required(raw, "count", "a JSON integer")?, "count")
}

pub(crate) fn price(raw: Option<&str>, field: &'static str) -> Result<f64, InvalidRecord> {
    let v = finite(raw, field)?;
    if v <= 0.0 {
        return Err(InvalidRecord::NonPositivePrice { field, price: v });
    }
    Ok(v)
}

/// The optional bounds fields `[start, end, first_ts, last_ts]`: both of a pair or neither,
/// and not both pairs; a time span must not be empty.
fn bounds(raw: [Option<&str>; 4]) -> Result<Option<WindowBounds>, InvalidRecord> {
    let time = |raw: Option<&str>, field: &'static str| {
        json::optional(raw)
            .map(|v| json::non_negative_i64(v, field, TS))
            .transpose()
    };
    let [start, end, first, last] = [
        time(raw[0], "start")?,
        time(raw[1], "end")?,
        time(raw[2], "first_ts")?,
        time(raw[3], "last_ts")?,
    ];
    let invalid = |field, expected: &'static str| {
        Err(InvalidRecord::InvalidValue {
            field,
            expected,
            found: format!("{start:?}..{end:?}, {first:?}..{last:?}"),
        })
    };
    match (start, end, first, last) {
        (None, None, None, None) => Ok(None),
        (Some(start), Some(end), None, None) if end > start => {
            Ok(Some(WindowBounds::Time { start, end }))
        }
        (Some(_), Some(_), None, None) => invalid("end", "after start"),
        (None, None, Some(first_ts), Some(last_ts)) => {
            Ok(Some(WindowBounds::Count { first_ts, last_ts }))
        }
        _ => invalid(
            "start",
            "start and end (a time window) or first_ts and last_ts (a count window), or neither",
        ),
    }
}

pub(crate) fn too_big(bytes: &[u8]) -> Result<(), InvalidRecord> {
    if bytes.len() > MAX_DERIVED_BYTES {
        return Err(InvalidRecord::Oversized {
            size: bytes.len(),
            limit: MAX_DERIVED_BYTES,
        });
    }
    Ok(())
}

impl DerivedEvent for MovingAverage {
    const KIND: EventKind = EventKind::MovingAverage;

    fn symbol(&self) -> Symbol {
        self.symbol
    }
    fn ts(&self) -> i64 {
        self.ts
    }
    fn window(&self) -> Option<&str> {
        Some(&self.window)
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        ObjectWriter::new(out, false)
            .str("symbol", self.symbol.as_str())
            .int("ts", self.ts)
            .str("window", &self.window)
            .f64("mean", self.mean)
            .int("count", self.count)
            .f64("min", self.min)
            .f64("max", self.max)
            .opt_f64("vwap", self.vwap)
            .bounds(self.bounds)
            .end();
    }

    fn decode(bytes: &[u8]) -> Result<Self, InvalidRecord> {
        too_big(bytes)?;
        const FIELDS: [&str; 12] = [
            "symbol", "ts", "window", "mean", "count", "min", "max", "vwap", "start", "end",
            "first_ts", "last_ts",
        ];
        let [sym, t, w, mean, n, min, max, vwap, start, end, first, last] =
            json::read_object(bytes, &FIELDS)?;
        Ok(Self {
            symbol: symbol(sym)?,
            ts: ts(t)?,
            window: window(w)?,
            mean: finite(mean, "mean")?,
            count: count(n)?,
            min: finite(min, "min")?,
            max: finite(max, "max")?,
            vwap: json::optional(vwap)
                .map(|v| price(Some(v), "vwap"))
                .transpose()?,
            bounds: bounds([start, end, first, last])?,
        })
    }
}

impl DerivedEvent for Volatility {
    const KIND: EventKind = EventKind::Volatility;

    fn symbol(&self) -> Symbol {
        self.symbol
    }
    fn ts(&self) -> i64 {
        self.ts
    }
    fn window(&self) -> Option<&str> {
        Some(&self.window)
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        ObjectWriter::new(out, false)
            .str("symbol", self.symbol.as_str())
            .int("ts", self.ts)
            .str("window", &self.window)
            .f64("stddev", self.stddev)
            .f64("mean", self.mean)
            .int("count", self.count)
            .bounds(self.bounds)
            .end();
    }

    fn decode(bytes: &[u8]) -> Result<Self, InvalidRecord> {
        too_big(bytes)?;
        const FIELDS: [&str; 10] = [
            "symbol", "ts", "window", "stddev", "mean", "count", "start", "end", "first_ts",
            "last_ts",
        ];
        let [sym, t, w, stddev, mean, n, start, end, first, last] =
            json::read_object(bytes, &FIELDS)?;
        let event = Self {
            symbol: symbol(sym)?,
            ts: ts(t)?,
            window: window(w)?,
            stddev: finite(stddev, "stddev")?,
            mean: finite(mean, "mean")?,
            count: count(n)?,
            bounds: bounds([start, end, first, last])?,
        };
        if event.stddev < 0.0 {
            return Err(InvalidRecord::InvalidValue {
                field: "stddev",
                expected: "a number >= 0",
                found: event.stddev.to_string(),
            });
        }
        Ok(event)
    }
}

impl DerivedEvent for Jump {
    const KIND: EventKind = EventKind::Jump;

    fn symbol(&self) -> Symbol {
        self.symbol
    }
    fn ts(&self) -> i64 {
        self.ts
    }
    fn window(&self) -> Option<&str> {
        None
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        ObjectWriter::new(out, false)
            .str("symbol", self.symbol.as_str())
            .int("ts", self.ts)
            .f64("from", self.from)
            .f64("to", self.to)
            .f64("change_pct", self.change_pct)
            .f64("threshold_pct", self.threshold_pct)
            .end();
    }

    fn decode(bytes: &[u8]) -> Result<Self, InvalidRecord> {
        too_big(bytes)?;
        const FIELDS: [&str; 6] = ["symbol", "ts", "from", "to", "change_pct", "threshold_pct"];
        let [sym, t, from, to, change, threshold] = json::read_object(bytes, &FIELDS)?;
        let event = Self {
            symbol: symbol(sym)?,
            ts: ts(t)?,
            from: price(from, "from")?,
            to: price(to, "to")?,
            change_pct: finite(change, "change_pct")?,
            threshold_pct: finite(threshold, "threshold_pct")?,
        };
        if !(event.threshold_pct > 0.0 && event.threshold_pct <= 100.0) {
            return Err(InvalidRecord::InvalidValue {
                field: "threshold_pct",
                expected: "a percentage in (0, 100]",
                found: event.threshold_pct.to_string(),
            });
        }
        Ok(event)
    }
}

#[cfg(test)]
#[path = "derived_tests.rs"]
mod tests;
