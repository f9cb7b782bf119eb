//! Candles: the OHLCV summary of one symbol over one interval, emitted once when it closes.

use serde::{Deserialize, Serialize};

use crate::derived::{DerivedEvent, EventKind, TS, finite, price, symbol, too_big};
use crate::invalid::{InvalidRecord, truncate};
use crate::json::{self, ObjectWriter};
use crate::symbol::Symbol;

/// One closed candle: a symbol's ticks with event time in `[start, end)`, `end - start` being
/// the interval, aligned to the epoch. Emitted once, when event time passed `end + grace` or the
/// symbol went quiet (see the topology's `[[candles]]`); an interval without ticks has none.
///
/// | field | JSON type | meaning |
/// |---|---|---|
/// | `symbol` | string | trading pair |
/// | `interval` | string | the interval's label: `1m`, `15s`, `4h`, `1d` |
/// | `start` | integer | epoch ms, inclusive |
/// | `end` | integer | epoch ms, exclusive (`start` + interval) |
/// | `open` | number > 0 | price of the tick with the earliest event time (ties: first to arrive) |
/// | `high` | number > 0 | highest price |
/// | `low` | number > 0 | lowest price |
/// | `close` | number > 0 | price of the tick with the latest event time (ties: last to arrive) |
/// | `trades` | integer >= 1 | ticks counted |
/// | `volume` | number >= 0 or null | Σ qty of the ticks that carry one; null if none does |
/// | `vwap` | number > 0 or null | Σ price·qty / Σ qty; null without quantities or with Σ qty = 0 |
/// | `first_ts` | integer | earliest event time counted |
/// | `last_ts` | integer | latest event time counted |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candle {
    /// Trading pair.
    pub symbol: Symbol,
    /// Interval label (`1m`).
    pub interval: String,
    /// Epoch ms, inclusive.
    pub start: i64,
    /// Epoch ms, exclusive.
    pub end: i64,
    /// First price.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Last price.
    pub close: f64,
    /// Ticks counted.
    pub trades: u64,
    /// Σ qty, when ticks carried quantities.
    pub volume: Option<f64>,
    /// Volume-weighted average price, when there is volume.
    pub vwap: Option<f64>,
    /// Earliest event time counted.
    pub first_ts: i64,
    /// Latest event time counted.
    pub last_ts: i64,
}

impl DerivedEvent for Candle {
    const KIND: EventKind = EventKind::Candle;

    fn symbol(&self) -> Symbol {
        self.symbol
    }
    /// The candle's `start`.
    fn ts(&self) -> i64 {
        self.start
    }
    /// The interval label.
    fn window(&self) -> Option<&str> {
        Some(&self.interval)
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        ObjectWriter::new(out, false)
            .str("symbol", self.symbol.as_str())
            .str("interval", &self.interval)
            .int("start", self.start)
            .int("end", self.end)
            .f64("open", self.open)
            .f64("high", self.high)
            .f64("low", self.low)
            .f64("close", self.close)
            .int("trades", self.trades)
            .opt_f64("volume", self.volume)
            .opt_f64("vwap", self.vwap)
            .int("first_ts", self.first_ts)
            .int("last_ts", self.last_ts)
            .end();
    }

    fn decode(bytes: &[u8]) -> Result<Self, InvalidRecord> {
        too_big(bytes)?;
        const FIELDS: [&str; 13] = [
            "symbol", "interval", "start", "end", "open", "high", "low", "close", "trades",
            "volume", "vwap", "first_ts", "last_ts",
        ];
        let [sym, iv, s, e, o, h, l, c, n, vol, vw, first, last] =
            json::read_object(bytes, &FIELDS)?;
        let time = |raw: Option<&str>, field: &'static str| {
            json::non_negative_i64(json::required(raw, field, TS)?, field, TS)
        };
        let candle = Self {
            symbol: symbol(sym)?,
            interval: interval(iv)?,
            start: time(s, "start")?,
            end: time(e, "end")?,
            open: price(o, "open")?,
            high: price(h, "high")?,
            low: price(l, "low")?,
            close: price(c, "close")?,
            trades: json::positive_u64(json::required(n, "trades", "a JSON integer")?, "trades")?,
            volume: json::optional(vol)
                .map(|v| finite(Some(v), "volume"))
                .transpose()?,
            vwap: json::optional(vw)
                .map(|v| price(Some(v), "vwap"))
                .transpose()?,
            first_ts: time(first, "first_ts")?,
            last_ts: time(last, "last_ts")?,
        };
        candle.check()?;
        Ok(candle)
    }
}

impl Candle {
    /// What a decoded candle must satisfy beyond its fields' types.
    fn check(&self) -> Result<(), InvalidRecord> {
        let bad = |field, expected, found: String| {
            Err(InvalidRecord::InvalidValue {
                field,
                expected,
                found,
            })
        };
        if self.end <= self.start {
            return bad("end", "after start", self.end.to_string());
        }
        if !(self.start..self.end).contains(&self.first_ts) || self.last_ts < self.first_ts {
            return bad(
                "first_ts",
                "start <= first_ts <= last_ts < end",
                format!("{}..{}", self.first_ts, self.last_ts),
            );
        }
        if self.last_ts >= self.end {
            return bad("last_ts", "before end", self.last_ts.to_string());
        }
        if self.volume.is_some_and(|v| v < 0.0) {
            return bad("volume", "a number >= 0", format!("{:?}", self.volume));
        }
        Ok(())
    }
}

fn interval(raw: Option<&str>) -> Result<String, InvalidRecord> {
    let raw = json::required(raw, "interval", "a JSON string")?;
    let label = json::string(raw, "interval")?;
    if label.is_empty() || label.len() > 16 {
        return Err(InvalidRecord::InvalidValue {
            field: "interval",
            expected: "an interval label of 1 to 16 bytes, such as \"1m\"",
            found: format!("{:?}", truncate(&label, 16)),
        });
    }
    Ok(label.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle() -> Candle {
        Candle {
            symbol: Symbol::from_static("BTCUSDT"),
            interval: "1m".to_owned(),
            start: 1_723_161_240_000,
            end: 1_723_161_300_000,
            open: 61_000.5,
            high: 61_010.0,
            low: 60_990.25,
            close: 61_001.0,
            trades: 42,
            volume: Some(1.25),
            vwap: Some(61_000.75),
            first_ts: 1_723_161_240_013,
            last_ts: 1_723_161_299_990,
        }
    }

    #[test]
    fn round_trips_with_and_without_volume() {
        let with = candle();
        assert_eq!(Candle::decode(&with.encode()), Ok(with.clone()));
        let without = Candle {
            volume: None,
            vwap: None,
            ..with
        };
        let bytes = without.encode();
        assert!(
            String::from_utf8_lossy(&bytes).contains(r#""volume":null,"vwap":null"#),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(Candle::decode(&bytes), Ok(without));
    }

    #[test]
    fn an_inconsistent_candle_is_refused_naming_the_field() {
        let field = |c: Candle| match Candle::decode(&c.encode()) {
            Err(InvalidRecord::InvalidValue { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let c = candle();
        assert_eq!(
            field(Candle {
                end: c.start,
                ..c.clone()
            }),
            "end"
        );
        assert_eq!(
            field(Candle {
                last_ts: c.end,
                ..c.clone()
            }),
            "last_ts"
        );
        assert_eq!(
            field(Candle {
                first_ts: c.start - 1,
                ..c.clone()
            }),
            "first_ts"
        );
        assert_eq!(
            field(Candle {
                volume: Some(-1.0),
                ..c
            }),
            "volume"
        );
    }
}
