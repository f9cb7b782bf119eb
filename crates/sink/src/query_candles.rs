//! `candles`: the stored candles of one symbol and interval.

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use tickstream_model::{Candle, EventKind, Symbol};

use super::{Queries, QueryError, Reader};

impl Queries {
    /// The `last` newest stored candles of `symbol` and `interval` (a `[[candles]]` label such
    /// as `1m`), oldest first.
    pub async fn candles(
        &self,
        symbol: &str,
        interval: &str,
        last: u64,
    ) -> Result<Vec<Candle>, QueryError> {
        self.prices_collection(symbol)?;
        let parsed = Symbol::new(symbol).map_err(|error| QueryError::InvalidSymbol {
            symbol: symbol.to_owned(),
            error,
        })?;
        let known: Vec<String> = self.topology.candles.iter().map(|c| c.label()).collect();
        if !known.iter().any(|k| k == interval) {
            return Err(QueryError::UnknownInterval {
                interval: interval.to_owned(),
                known: if known.is_empty() {
                    "none: the topology has no [[candles]]".to_owned()
                } else {
                    known.join(", ")
                },
            });
        }
        let candles = self
            .database
            .collection::<Document>(self.topology.collection(EventKind::Candle));
        let mut rows: Vec<Candle> = Vec::new();
        let mut cursor = candles
            .find(doc! { "symbol": symbol, "interval": interval })
            .sort(doc! { "start": -1 })
            .limit(i64::try_from(last.max(1)).unwrap_or(i64::MAX))
            .await?;
        while let Some(document) = cursor.try_next().await? {
            let read = Reader::new(candles.name(), &document);
            let optional = |field: &str| match document.get(field) {
                None | Some(Bson::Null) => Ok(None),
                Some(_) => read.f64(field).map(Some),
            };
            rows.push(Candle {
                symbol: parsed,
                interval: interval.to_owned(),
                start: read.date("start")?,
                end: read.date("end")?,
                open: read.f64("open")?,
                high: read.f64("high")?,
                low: read.f64("low")?,
                close: read.f64("close")?,
                trades: u64::try_from(read.i64("trades")?)
                    .map_err(|_| read.bad("trades", "a count >= 1"))?,
                volume: optional("volume")?,
                vwap: optional("vwap")?,
                first_ts: read.date("first_ts")?,
                last_ts: read.date("last_ts")?,
            });
        }
        rows.reverse();
        Ok(rows)
    }
}
