//! `candles`: the stored candles of one symbol and interval.

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use serde::Serialize;
use tickstream_model::EventKind;

use super::{Queries, QueryError, Reader};

/// A stored candle (see `tickstream_model::Candle` for the fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandleRow {
    pub symbol: String,
    pub interval: String,
    pub start: i64,
    pub end: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub trades: i64,
    pub volume: Option<f64>,
    pub vwap: Option<f64>,
    pub first_ts: i64,
    pub last_ts: i64,
}

impl Queries {
    /// The `last` newest stored candles of `symbol` and `interval` (a `[[candles]]` label such
    /// as `1m`), oldest first.
    pub async fn candles(
        &self,
        symbol: &str,
        interval: &str,
        last: u64,
    ) -> Result<Vec<CandleRow>, QueryError> {
        self.prices_collection(symbol)?;
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
        let mut rows: Vec<CandleRow> = Vec::new();
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
            rows.push(CandleRow {
                symbol: symbol.to_owned(),
                interval: interval.to_owned(),
                start: read.date("start")?,
                end: read.date("end")?,
                open: read.f64("open")?,
                high: read.f64("high")?,
                low: read.f64("low")?,
                close: read.f64("close")?,
                trades: read.i64("trades")?,
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
