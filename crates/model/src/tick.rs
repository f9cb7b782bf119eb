//! The raw tick: one price observation of one symbol, as ingest produces it onto the raw
//! topic, and its JSON codec.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::invalid::InvalidRecord;
use crate::json::{self, ObjectWriter};
use crate::symbol::Symbol;

/// How ingest writes raw ticks; consumers accept both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// `{"symbol":"BTCUSDT","price":67234.5,"ts":1732390000123,"source":"binance"}`:
    /// compact, with the event time and the source when known.
    #[default]
    Full,
    /// `{"symbol": "BTCUSDT", "price": 67234.5}`: exactly what the reference Python producer
    /// sends (`json.dumps` of those two keys, with its `", "` and `": "` separators), so its
    /// consumers see byte-identical records. No event time: consumers use the Kafka message
    /// timestamp.
    Reference,
}

/// One price observation.
///
/// JSON (see [`RecordFormat`]):
///
/// | field | JSON type | required | meaning |
/// |---|---|---|---|
/// | `symbol` | string | yes | trading pair, e.g. `BTCUSDT` (see [`Symbol`] for the rules) |
/// | `price` | number | yes | last price, finite and > 0; integers (`67234`) are accepted |
/// | `ts` | integer | no | event time, epoch milliseconds, >= 0; absent or `null`: the Kafka message timestamp is the event time ([`RawTick::event_time`]) |
/// | `source` | string | no | where the price came from: `binance-rest`, `binance-ws`, `replay`, `synthetic`… |
/// | `qty` | number | no | traded quantity, finite and >= 0 (trades carry one, ticker prices do not) |
/// | `trade_id` | integer | no | the exchange's trade id, >= 0 (Binance: consecutive per symbol) |
/// | `buyer_maker` | boolean | no | whether the buyer was the maker (Binance's `m`: the trade hit a bid) |
///
/// Any other field is ignored. Decode with [`RawTick::decode`] (validating), encode with
/// [`RawTick::encode`]. `Serialize` writes the full format's fields (for MongoDB documents).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawTick {
    /// The trading pair.
    pub symbol: Symbol,
    /// The price (quote currency per unit).
    pub price: f64,
    /// Event time in epoch milliseconds, when the record carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// Where the price came from. Well-known names are borrowed, not allocated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Cow<'static, str>>,
    /// The traded quantity (base currency), when the source knows it (a trade does; a ticker
    /// price does not): finite and >= 0. Candles sum it into volume and VWAP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qty: Option<f64>,
    /// The exchange's id of the trade, when the tick is one (Binance: consecutive per symbol,
    /// so a gap shows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_id: Option<u64>,
    /// Whether the trade's buyer was the maker (it hit a resting bid: a sell aggressor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_maker: Option<bool>,
}

/// Limits and pinned symbols for [`RawTick::decode`]. Build once, share (`&self`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    max_bytes: usize,
    /// Sorted and deduplicated; `None` accepts any valid symbol.
    pinned: Option<Box<[Symbol]>>,
}

impl DecodeOptions {
    /// Default record size limit: 1 KiB. A full-format tick is about 80 bytes and the
    /// reference format about 40; 1 KiB leaves room for producers that add a few fields of
    /// their own, and stops a runaway producer (a whole order book in one record) early,
    /// before parsing.
    pub const DEFAULT_MAX_BYTES: usize = 1024;

    /// The defaults: 1 KiB, any symbol.
    pub fn new() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            pinned: None,
        }
    }

    /// Records larger than `max_bytes` are refused as `oversized` without being parsed.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Only these symbols are accepted; others are refused as `unknown_symbol`.
    #[must_use]
    pub fn with_pinned_symbols(mut self, symbols: impl IntoIterator<Item = Symbol>) -> Self {
        let mut pinned: Vec<Symbol> = symbols.into_iter().collect();
        pinned.sort_unstable();
        pinned.dedup();
        self.pinned = Some(pinned.into_boxed_slice());
        self
    }

    /// The record size limit in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The pinned symbols, sorted; `None` when any symbol is accepted.
    pub fn pinned_symbols(&self) -> Option<&[Symbol]> {
        self.pinned.as_deref()
    }

    /// Shorthand for [`RawTick::decode`].
    pub fn decode(&self, bytes: &[u8]) -> Result<RawTick, InvalidRecord> {
        RawTick::decode(bytes, self)
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self::new()
    }
}

const FIELDS: [&str; 7] = [
    "symbol",
    "price",
    "ts",
    "source",
    "qty",
    "trade_id",
    "buyer_maker",
];

impl RawTick {
    /// A tick without event time or source.
    pub fn new(symbol: Symbol, price: f64) -> Self {
        Self {
            symbol,
            price,
            ts: None,
            source: None,
            qty: None,
            trade_id: None,
            buyer_maker: None,
        }
    }

    /// The same tick as an exchange trade: its id and whether the buyer was the maker.
    #[must_use]
    pub fn with_trade(mut self, trade_id: u64, buyer_maker: bool) -> Self {
        self.trade_id = Some(trade_id);
        self.buyer_maker = Some(buyer_maker);
        self
    }

    /// The same tick with event time `ts` (epoch milliseconds).
    #[must_use]
    pub fn with_ts(mut self, ts: i64) -> Self {
        self.ts = Some(ts);
        self
    }

    /// The same tick with a traded quantity.
    #[must_use]
    pub fn with_qty(mut self, qty: f64) -> Self {
        self.qty = Some(qty);
        self
    }

    /// The same tick with a source name.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Cow<'static, str>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Decodes and validates a raw tick in either [`RecordFormat`] (any JSON layout; unknown
    /// fields ignored; `ts`/`source` may be absent or `null`). Checked in this order, first
    /// failure wins:
    ///
    /// 1. size: `oversized` (before any parsing);
    /// 2. syntax: `not_json`, `not_object`, `duplicate_field` (a known field twice), or
    ///    `non_finite_price` for a bare `NaN`/`Infinity`/`-Infinity` price as Python's
    ///    `json.dumps` writes it;
    /// 3. `symbol`: `missing_field`, `mistyped_field`, `empty_symbol`, `invalid_symbol`;
    /// 4. `price`: `missing_field`, `mistyped_field` (e.g. a string `"67234.5"`),
    ///    `non_finite_price` (e.g. `1e999`), `non_positive_price`;
    /// 5. `ts`: `mistyped_field`, `invalid_value` (not an integer, or negative);
    ///    `source`: `mistyped_field`; `qty`: `mistyped_field`, `invalid_value` (not finite,
    ///    or negative); `trade_id`: `mistyped_field`, `invalid_value` (not an integer >= 0);
    ///    `buyer_maker`: `mistyped_field`;
    /// 6. `unknown_symbol` when symbols are pinned.
    ///
    /// Reads the object with serde_json, a field at a time; never builds a
    /// `serde_json::Value`. Allocates only for a `source` outside the well-known names and
    /// for strings written with JSON escapes.
    pub fn decode(bytes: &[u8], options: &DecodeOptions) -> Result<Self, InvalidRecord> {
        if bytes.len() > options.max_bytes {
            return Err(InvalidRecord::Oversized {
                size: bytes.len(),
                limit: options.max_bytes,
            });
        }
        let [symbol, price, ts, source, qty, trade_id, buyer_maker] =
            json::read_object(bytes, &FIELDS)?;

        let symbol = json::required(symbol, "symbol", "a JSON string")?;
        let symbol = Symbol::new(&json::string(symbol, "symbol")?)?;

        let raw_price = json::required(price, "price", "a JSON number")?;
        let price = json::number(raw_price, "price")?;
        if !price.is_finite() {
            return Err(json::non_finite("price", raw_price));
        }
        if price <= 0.0 {
            return Err(InvalidRecord::NonPositivePrice {
                field: "price",
                price,
            });
        }

        let ts = json::optional(ts)
            .map(|ts| json::non_negative_i64(ts, "ts", "an integer of epoch milliseconds >= 0"))
            .transpose()?;
        let source = json::optional(source)
            .map(|s| json::string(s, "source").map(intern))
            .transpose()?;
        let qty = json::optional(qty).map(decode_qty).transpose()?;
        let trade_id = json::optional(trade_id)
            .map(|id| json::non_negative_i64(id, "trade_id", "an integer >= 0").map(|id| id as u64))
            .transpose()?;
        let buyer_maker = json::optional(buyer_maker)
            .map(|b| json::boolean(b, "buyer_maker"))
            .transpose()?;

        if let Some(pinned) = &options.pinned
            && pinned.binary_search(&symbol).is_err()
        {
            return Err(InvalidRecord::UnknownSymbol { symbol });
        }
        Ok(Self {
            symbol,
            price,
            ts,
            source,
            qty,
            trade_id,
            buyer_maker,
        })
    }

    /// Encodes in `format` (see [`RecordFormat`]). Prices round-trip exactly through
    /// [`RawTick::decode`].
    pub fn encode(&self, format: RecordFormat) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        self.encode_into(format, &mut out);
        out
    }

    /// Appends the encoding to `out` (reuse one buffer on hot paths).
    pub fn encode_into(&self, format: RecordFormat, out: &mut Vec<u8>) {
        let python = format == RecordFormat::Reference;
        let mut w = ObjectWriter::new(out, python);
        w.str("symbol", self.symbol.as_str())
            .f64("price", self.price);
        if format == RecordFormat::Full {
            if let Some(ts) = self.ts {
                w.int("ts", ts);
            }
            if let Some(source) = &self.source {
                w.str("source", source);
            }
            if let Some(qty) = self.qty {
                w.f64("qty", qty);
            }
            if let Some(id) = self.trade_id {
                w.int("trade_id", id);
            }
            if let Some(maker) = self.buyer_maker {
                w.bool("buyer_maker", maker);
            }
        }
        w.end();
    }

    /// The tick's event time: its `ts`, else the Kafka message timestamp (`kafka_ts`,
    /// epoch ms; negative values mean "none", as Kafka uses -1). `missing_event_time` when
    /// neither is known.
    pub fn event_time(&self, kafka_ts: Option<i64>) -> Result<i64, InvalidRecord> {
        self.ts
            .or(kafka_ts.filter(|t| *t >= 0))
            .ok_or(InvalidRecord::MissingEventTime)
    }
}

/// A quantity: a finite JSON number >= 0.
fn decode_qty(raw: &str) -> Result<f64, InvalidRecord> {
    const EXPECTED: &str = "a finite number >= 0";
    let qty = json::finite(raw, "qty")?;
    if qty < 0.0 {
        return Err(InvalidRecord::InvalidValue {
            field: "qty",
            expected: EXPECTED,
            found: crate::invalid::truncate(raw, 64),
        });
    }
    Ok(qty)
}

/// Well-known source names are shared `'static` strings: no allocation per tick.
fn intern(s: Cow<'_, str>) -> Cow<'static, str> {
    const KNOWN: [&str; 6] = [
        "binance",
        "binance-rest",
        "binance-ws",
        "replay",
        "synthetic",
        "reference",
    ];
    match KNOWN.iter().find(|k| **k == s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.into_owned()),
    }
}

#[cfg(test)]
#[path = "tick_tests.rs"]
mod tests;
