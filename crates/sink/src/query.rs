//! The questions users ask of what the sink stored (the reference pipeline's queries, plus
//! analytics), as typed results: `tickstream query` renders them, tests compare them.
//!
//! Times are epoch milliseconds. "The last N" means the N newest raw prices of the symbol by
//! event time (ties by `_id`: the same event time, then the record's topic, partition and
//! offset, see `document`).

use futures::TryStreamExt;
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};
use serde::Serialize;
use tickstream_model::{EventKind, Topology};

#[path = "query_candles.rs"]
mod candles;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("MongoDB query failed: {0}")]
    MongoDb(#[from] mongodb::error::Error),
    /// Says what is wrong without quoting the URI (see [`crate::uri`]).
    #[error(transparent)]
    InvalidUri(#[from] crate::uri::InvalidUri),
    #[error("symbol {symbol} is not in the topology (known: {known}); check the spelling")]
    UnknownSymbol { symbol: String, known: String },
    #[error("{symbol:?} is not a symbol: {error}")]
    InvalidSymbol {
        symbol: String,
        error: tickstream_model::SymbolError,
    },
    #[error("interval {interval} has no candles in the topology (known: {known})")]
    UnknownInterval { interval: String, known: String },
    #[error("document in {collection} is not what the sink writes: {problem}")]
    BadDocument { collection: String, problem: String },
}

/// The newest stored price of a symbol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatestPrice {
    pub symbol: String,
    pub price: f64,
    pub ts: i64,
}

/// Min / max / average / count over the last N prices of a symbol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceStats {
    pub symbol: String,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    /// Event time of the oldest and newest price counted.
    pub first_ts: i64,
    pub last_ts: i64,
}

/// A stored jump event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JumpRow {
    pub ts: i64,
    pub from: f64,
    pub to: f64,
    pub change_pct: f64,
    pub threshold_pct: f64,
}

/// The jumps among the last N prices of a symbol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JumpsReport {
    pub symbol: String,
    /// How many prices the range covers (at most N).
    pub prices: u64,
    /// The `--threshold` filter, when given: `|change_pct| >= threshold`.
    pub threshold_pct: Option<f64>,
    /// Oldest first.
    pub jumps: Vec<JumpRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MovingAverageRow {
    pub ts: i64,
    pub mean: f64,
    pub count: i64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolatilityRow {
    pub ts: i64,
    pub stddev: f64,
    pub mean: f64,
    pub count: i64,
}

/// The newest moving average and volatility of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowAnalytics {
    pub window: String,
    pub moving_average: Option<MovingAverageRow>,
    pub volatility: Option<VolatilityRow>,
}

/// Queries over the topology's database.
#[derive(Clone)]
pub struct Queries {
    database: Database,
    topology: Topology,
}

/// Newest first: event time, then `_id` (for raw prices: the event time again, then topic,
/// partition and offset; derived events' `_id`s are unique per time anyway).
fn newest_first() -> Document {
    doc! { "ts": -1, "_id": -1 }
}

/// By hand: the client's options hold the credentials and TLS key password.
impl std::fmt::Debug for Queries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queries")
            .field("database", &self.database.name())
            .finish_non_exhaustive()
    }
}

impl Queries {
    /// A client for `uri`; server selection gives up after 10 s with an error.
    pub async fn connect(uri: &str, topology: &Topology) -> Result<Self, QueryError> {
        let mut options = crate::uri::client_options(uri).await?;
        options
            .server_selection_timeout
            .get_or_insert(std::time::Duration::from_secs(10));
        let client = crate::uri::client(options, uri)?;
        Ok(Self::new(&client, topology))
    }

    pub fn new(client: &mongodb::Client, topology: &Topology) -> Self {
        Self {
            database: client.database(&topology.mongodb.database),
            topology: topology.clone(),
        }
    }

    fn prices_collection(&self, symbol: &str) -> Result<mongodb::Collection<Document>, QueryError> {
        let name = self.topology.prices_collection_for(symbol).ok_or_else(|| {
            QueryError::UnknownSymbol {
                symbol: symbol.to_owned(),
                known: self
                    .topology
                    .symbols
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?;
        Ok(self.database.collection(name))
    }

    /// The newest price of every configured symbol that has one.
    pub async fn latest(&self) -> Result<Vec<LatestPrice>, QueryError> {
        let mut latest = Vec::new();
        for symbol in &self.topology.symbols {
            let collection = self.prices_collection(symbol.as_str())?;
            let found = collection
                .find_one(doc! { "symbol": symbol.as_str() })
                .sort(newest_first())
                .await?;
            if let Some(document) = found {
                let read = Reader::new(collection.name(), &document);
                latest.push(LatestPrice {
                    symbol: symbol.as_str().to_owned(),
                    price: read.f64("price")?,
                    ts: read.ts()?,
                });
            }
        }
        Ok(latest)
    }

    /// Min / max / average / count over the last `last` prices; `None` without any.
    pub async fn stats(&self, symbol: &str, last: u64) -> Result<Option<PriceStats>, QueryError> {
        let collection = self.prices_collection(symbol)?;
        let pipeline = [
            doc! { "$match": { "symbol": symbol } },
            doc! { "$sort": newest_first() },
            doc! { "$limit": i64::try_from(last.max(1)).unwrap_or(i64::MAX) },
            doc! { "$group": {
                "_id": Bson::Null,
                "count": { "$sum": 1 },
                "min": { "$min": "$price" },
                "max": { "$max": "$price" },
                "avg": { "$avg": "$price" },
                "first_ts": { "$min": "$ts" },
                "last_ts": { "$max": "$ts" },
            } },
        ];
        let mut cursor = collection.aggregate(pipeline).await?;
        let Some(document) = cursor.try_next().await? else {
            return Ok(None);
        };
        let read = Reader::new(collection.name(), &document);
        Ok(Some(PriceStats {
            symbol: symbol.to_owned(),
            count: u64::try_from(read.i64("count")?).unwrap_or(0),
            min: read.f64("min")?,
            max: read.f64("max")?,
            avg: read.f64("avg")?,
            first_ts: read.date("first_ts")?,
            last_ts: read.date("last_ts")?,
        }))
    }

    /// The stored jump events among the last `last` prices (a jump belongs to the tick that
    /// ends it, so the oldest price in range starts none), optionally only those with
    /// `|change_pct| >= threshold_pct`.
    pub async fn jumps(
        &self,
        symbol: &str,
        last: u64,
        threshold_pct: Option<f64>,
    ) -> Result<JumpsReport, QueryError> {
        let prices = self.prices_collection(symbol)?;
        let range: Vec<Document> = prices
            .find(doc! { "symbol": symbol })
            .sort(newest_first())
            .limit(i64::try_from(last.max(1)).unwrap_or(i64::MAX))
            .projection(doc! { "ts": 1 })
            .await?
            .try_collect()
            .await?;
        let mut report = JumpsReport {
            symbol: symbol.to_owned(),
            prices: range.len() as u64,
            threshold_pct,
            jumps: Vec::new(),
        };
        let (Some(newest), Some(oldest)) = (range.first(), range.last()) else {
            return Ok(report);
        };
        let newest = Reader::new(prices.name(), newest).ts()?;
        let oldest = Reader::new(prices.name(), oldest).ts()?;
        let mut filter = doc! {
            "symbol": symbol,
            "ts": { "$gt": mongodb::bson::DateTime::from_millis(oldest),
                    "$lte": mongodb::bson::DateTime::from_millis(newest) },
        };
        if let Some(threshold) = threshold_pct {
            filter.insert(
                "$or",
                vec![
                    doc! { "change_pct": { "$gte": threshold } },
                    doc! { "change_pct": { "$lte": -threshold } },
                ],
            );
        }
        let jumps = self
            .database
            .collection::<Document>(self.topology.collection(EventKind::Jump));
        let mut cursor = jumps.find(filter).sort(doc! { "ts": 1, "_id": 1 }).await?;
        while let Some(document) = cursor.try_next().await? {
            let read = Reader::new(jumps.name(), &document);
            report.jumps.push(JumpRow {
                ts: read.ts()?,
                from: read.f64("from")?,
                to: read.f64("to")?,
                change_pct: read.f64("change_pct")?,
                threshold_pct: read.f64("threshold_pct")?,
            });
        }
        Ok(report)
    }

    /// The newest moving average and volatility of every configured window.
    pub async fn analytics(&self, symbol: &str) -> Result<Vec<WindowAnalytics>, QueryError> {
        self.prices_collection(symbol)?;
        let averages = self
            .database
            .collection::<Document>(self.topology.collection(EventKind::MovingAverage));
        let volatility = self
            .database
            .collection::<Document>(self.topology.collection(EventKind::Volatility));
        let mut rows = Vec::new();
        for window in &self.topology.windows {
            let window = window.label();
            let filter = doc! { "symbol": symbol, "window": &window };
            let moving_average = match averages
                .find_one(filter.clone())
                .sort(newest_first())
                .await?
            {
                Some(document) => {
                    let read = Reader::new(averages.name(), &document);
                    Some(MovingAverageRow {
                        ts: read.ts()?,
                        mean: read.f64("mean")?,
                        count: read.i64("count")?,
                        min: read.f64("min")?,
                        max: read.f64("max")?,
                    })
                }
                None => None,
            };
            let volatility_row = match volatility.find_one(filter).sort(newest_first()).await? {
                Some(document) => {
                    let read = Reader::new(volatility.name(), &document);
                    Some(VolatilityRow {
                        ts: read.ts()?,
                        stddev: read.f64("stddev")?,
                        mean: read.f64("mean")?,
                        count: read.i64("count")?,
                    })
                }
                None => None,
            };
            rows.push(WindowAnalytics {
                window,
                moving_average,
                volatility: volatility_row,
            });
        }
        Ok(rows)
    }
}

/// Typed field access with errors that name the collection and field.
struct Reader<'a> {
    collection: &'a str,
    document: &'a Document,
}

impl<'a> Reader<'a> {
    fn new(collection: &'a str, document: &'a Document) -> Self {
        Self {
            collection,
            document,
        }
    }

    fn bad(&self, field: &str, expected: &str) -> QueryError {
        QueryError::BadDocument {
            collection: self.collection.to_owned(),
            problem: format!(
                "field {field} should be {expected}, found {:?}",
                self.document.get(field)
            ),
        }
    }

    /// Numbers of any BSON numeric type (documents written by the reference consumer may
    /// hold an integer price).
    fn f64(&self, field: &str) -> Result<f64, QueryError> {
        match self.document.get(field) {
            Some(Bson::Double(x)) => Ok(*x),
            Some(Bson::Int32(x)) => Ok(f64::from(*x)),
            Some(Bson::Int64(x)) => Ok(*x as f64),
            _ => Err(self.bad(field, "a number")),
        }
    }

    fn i64(&self, field: &str) -> Result<i64, QueryError> {
        match self.document.get(field) {
            Some(Bson::Int32(x)) => Ok(i64::from(*x)),
            Some(Bson::Int64(x)) => Ok(*x),
            _ => Err(self.bad(field, "an integer")),
        }
    }

    fn date(&self, field: &str) -> Result<i64, QueryError> {
        match self.document.get(field) {
            Some(Bson::DateTime(t)) => Ok(t.timestamp_millis()),
            _ => Err(self.bad(field, "a date")),
        }
    }

    fn ts(&self) -> Result<i64, QueryError> {
        self.date("ts")
    }
}

/// An epoch-milliseconds time as RFC 3339 (UTC), for people.
pub fn format_ts(ts: i64) -> String {
    mongodb::bson::DateTime::from_millis(ts)
        .try_to_rfc3339_string()
        .unwrap_or_else(|_| ts.to_string())
}
