//! Batches of documents into MongoDB: unordered bulk inserts, duplicates recognised as
//! replays, documents MongoDB refuses for their content reported for the dead-letter topic.
//!
//! Candles go to a time-series collection, which has no unique `_id` index: a replayed candle
//! would be stored twice. So the candles of a batch are looked up first (by symbol, interval
//! and start, which an index covers) and those already stored count as duplicates. That is
//! exact for one writer per symbol — the sink's partition owner, as replays after a crash
//! are — but two sinks writing one symbol's candles at the same instant (the old and new
//! owner of a partition during a rebalance, if the old one is still writing) could both find
//! a candle absent.
//! Independent of Kafka: `tickstream run` writes through it from its in-process transport.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::join_all;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::error::{ErrorKind, InsertManyError};
use mongodb::options::TimeseriesOptions;
use mongodb::{Client, Database, IndexModel};
use tickstream_model::{EventKind, Topology};

use crate::document::SinkDocument;
use crate::uri::{self, InvalidUri};

/// MongoDB's duplicate-key error: the document is already stored (a replay).
const DUPLICATE_KEY: i32 = 11000;
/// `create` of a collection that exists.
const NAMESPACE_EXISTS: i32 = 48;

/// Write error codes that say "not now" (elections, shutdown, timeouts), not "not this
/// document": the batch is retried.
const TRANSIENT_CODES: [i32; 10] = [6, 7, 50, 89, 91, 189, 262, 10107, 11600, 13435];

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Nothing in the batch can be trusted to be stored; retry it (it is idempotent).
    #[error("MongoDB is unavailable: {0}")]
    Unavailable(#[source] mongodb::error::Error),
    /// Says what is wrong without quoting the URI (see [`crate::uri`]).
    #[error(transparent)]
    InvalidUri(#[from] InvalidUri),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Kafka or MongoDB stayed unreachable for `processing.give_up_after`.
    #[error(transparent)]
    GaveUp(#[from] crate::availability::GaveUp),
    /// The in-process transport (`tickstream run`) refused a read or commit.
    #[error("the in-process transport: {0}")]
    InProcess(#[from] tickstream_streams::MemoryError),
    /// What observes the in-process sink's records (`tickstream run`'s files) failed.
    #[error("writing the results: {0}")]
    Output(#[source] std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// A document MongoDB refused for its content (not a duplicate).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedDocument {
    /// Index in the batch given to [`MongoWriter::write_batch`].
    pub index: usize,
    pub code: i32,
    pub message: String,
}

/// What one batch did, per collection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteReport {
    pub written: BTreeMap<String, u64>,
    pub duplicates: BTreeMap<String, u64>,
    pub rejected: Vec<RejectedDocument>,
}

impl WriteReport {
    pub fn total_written(&self) -> u64 {
        self.written.values().sum()
    }

    pub fn total_duplicates(&self) -> u64 {
        self.duplicates.values().sum()
    }
}

/// Writes the topology's documents into its database.
#[derive(Clone)]
pub struct MongoWriter {
    database: Database,
    indexes: Vec<(String, Document)>,
    /// The candles' time-series collection, with `[[candles]]`.
    candles: Option<String>,
    /// Where MongoDB is, for messages: the URI's hosts.
    address: String,
}

/// By hand: the client's options hold the credentials and TLS key password.
impl std::fmt::Debug for MongoWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoWriter")
            .field("database", &self.database.name())
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl MongoWriter {
    /// A client for `uri` (no I/O yet: the driver connects lazily). Server selection gives up
    /// after 5 s so an outage surfaces as an error to back off from, not a 30 s hang.
    pub async fn connect(uri: &str, topology: &Topology) -> Result<Self, SinkError> {
        let mut options = uri::client_options(uri).await?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(5));
        }
        if options.connect_timeout.is_none() {
            options.connect_timeout = Some(Duration::from_secs(5));
        }
        options
            .app_name
            .get_or_insert_with(|| "tickstream-sink".to_owned());
        let address = options
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let client = uri::client(options, uri)?;
        let mut writer = Self::with_client(&client, topology);
        writer.address = address;
        Ok(writer)
    }

    /// A writer on an existing client (tests, `tickstream run`).
    pub fn with_client(client: &Client, topology: &Topology) -> Self {
        let mut indexes: Vec<(String, Document)> = topology
            .mongodb
            .collections
            .prices
            .names()
            .into_iter()
            .map(|c| (c.to_owned(), doc! { "symbol": 1, "ts": -1 }))
            .collect();
        for kind in [EventKind::MovingAverage, EventKind::Volatility] {
            indexes.push((
                topology.collection(kind).to_owned(),
                doc! { "symbol": 1, "window": 1, "ts": -1 },
            ));
        }
        indexes.push((
            topology.collection(EventKind::Jump).to_owned(),
            doc! { "symbol": 1, "ts": -1 },
        ));
        let candles = (!topology.candles.is_empty())
            .then(|| topology.collection(EventKind::Candle).to_owned());
        if let Some(candles) = &candles {
            indexes.push((
                candles.clone(),
                doc! { "symbol": 1, "interval": 1, "start": -1 },
            ));
        }
        Self {
            database: client.database(&topology.mongodb.database),
            indexes,
            candles,
            address: "the client's MongoDB".to_owned(),
        }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Where MongoDB is (the URI's hosts, no credentials), for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Creates the candles' time-series collection (if absent) and the indexes the queries
    /// need; creating an existing index is a no-op. A candles collection that already exists
    /// as a regular one is kept: its unique `_id` then refuses replays by itself.
    pub async fn ensure_indexes(&self) -> Result<(), SinkError> {
        if let Some(candles) = &self.candles {
            let created = self
                .database
                .create_collection(candles)
                .timeseries(
                    TimeseriesOptions::builder()
                        .time_field("start".to_owned())
                        .meta_field(Some("symbol".to_owned()))
                        .build(),
                )
                .await;
            match created {
                Ok(()) => {}
                Err(error) if command_code(&error) == Some(NAMESPACE_EXISTS) => {}
                Err(error) => return Err(SinkError::Unavailable(error)),
            }
        }
        for (collection, keys) in &self.indexes {
            self.database
                .collection::<Document>(collection)
                .create_index(IndexModel::builder().keys(keys.clone()).build())
                .await
                .map_err(SinkError::Unavailable)?;
        }
        Ok(())
    }

    /// Whether MongoDB answers.
    pub async fn ping(&self) -> Result<(), SinkError> {
        self.database
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(SinkError::Unavailable)
    }

    /// Inserts `batch`, unordered, one bulk insert per collection (concurrently). Documents
    /// already stored count as duplicates; documents refused for their content are reported.
    /// `Err(Unavailable)` means the batch must be retried: writing it again is harmless.
    pub async fn write_batch(&self, batch: &[SinkDocument]) -> Result<WriteReport, SinkError> {
        let mut by_collection: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, document) in batch.iter().enumerate() {
            by_collection
                .entry(document.collection.as_str())
                .or_default()
                .push(index);
        }
        let mut stored_candles = 0;
        if let Some(candles) = self.candles.as_deref()
            && let Some(indices) = by_collection.get_mut(candles)
        {
            let before = indices.len();
            self.drop_stored_candles(candles, batch, indices).await?;
            stored_candles = (before - indices.len()) as u64;
            if indices.is_empty() {
                by_collection.remove(candles);
            }
        }
        let writes = by_collection
            .iter()
            .map(|(collection, indices)| async move {
                let result = self
                    .database
                    .collection::<RawDocumentBuf>(collection)
                    .insert_many(indices.iter().map(|i| &batch[*i].document))
                    .ordered(false)
                    .await;
                (*collection, indices, result)
            });
        let mut report = WriteReport::default();
        for (collection, indices, result) in join_all(writes).await {
            let outcome = match result {
                Ok(_) => CollectionOutcome::default(),
                Err(error) => classify(error)?,
            };
            let failed = outcome.duplicates + outcome.rejected.len() as u64;
            report
                .written
                .insert(collection.to_owned(), indices.len() as u64 - failed);
            if outcome.duplicates > 0 {
                report
                    .duplicates
                    .insert(collection.to_owned(), outcome.duplicates);
            }
            report
                .rejected
                .extend(outcome.rejected.into_iter().map(|mut r| {
                    r.index = indices[r.index];
                    r
                }));
        }
        if stored_candles > 0
            && let Some(candles) = &self.candles
        {
            *report.duplicates.entry(candles.clone()).or_default() += stored_candles;
            report.written.entry(candles.clone()).or_default();
        }
        report.rejected.sort_by_key(|r| r.index);
        Ok(report)
    }

    /// Removes from `indices` the candles of `batch` already stored in `collection`, and the
    /// second of two copies within the batch.
    async fn drop_stored_candles(
        &self,
        collection: &str,
        batch: &[SinkDocument],
        indices: &mut Vec<usize>,
    ) -> Result<(), SinkError> {
        let key = |i: usize| {
            let d = &batch[i].document;
            Some((
                d.get_str("symbol").ok()?,
                d.get_str("interval").ok()?,
                d.get_datetime("start").ok()?,
                d.get_str("_id").ok()?,
            ))
        };
        let filters: Vec<Document> = indices
            .iter()
            .filter_map(|i| key(*i))
            .map(|(symbol, interval, start, _)| {
                doc! { "symbol": symbol, "interval": interval, "start": start }
            })
            .collect();
        if filters.is_empty() {
            return Ok(());
        }
        let mut stored: std::collections::HashSet<String> = self
            .database
            .collection::<Document>(collection)
            .find(doc! { "$or": filters })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(SinkError::Unavailable)?
            .try_filter_map(|d| async move {
                Ok(match d.get("_id") {
                    Some(Bson::String(id)) => Some(id.clone()),
                    _ => None,
                })
            })
            .try_collect()
            .await
            .map_err(SinkError::Unavailable)?;
        // `insert` is false for an id already stored, or already kept from this batch.
        indices.retain(|i| key(*i).is_none_or(|(.., id)| stored.insert(id.to_owned())));
        Ok(())
    }
}

/// The server's error code of a failed command, if it was one.
fn command_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(command) => Some(command.code),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct CollectionOutcome {
    duplicates: u64,
    /// `index` relative to the collection's own insert.
    rejected: Vec<RejectedDocument>,
}

/// Splits an insert's failure into duplicates and refused documents, or says the whole
/// insert must be retried.
fn classify(error: mongodb::error::Error) -> Result<CollectionOutcome, SinkError> {
    let ErrorKind::InsertMany(InsertManyError {
        write_errors,
        write_concern_error,
        ..
    }) = error.kind.as_ref()
    else {
        return Err(SinkError::Unavailable(error));
    };
    if write_concern_error.is_some() {
        return Err(SinkError::Unavailable(error));
    }
    let mut outcome = CollectionOutcome::default();
    for write_error in write_errors.iter().flatten() {
        if write_error.code == DUPLICATE_KEY {
            outcome.duplicates += 1;
        } else if TRANSIENT_CODES.contains(&write_error.code) {
            return Err(SinkError::Unavailable(error));
        } else {
            outcome.rejected.push(RejectedDocument {
                index: write_error.index,
                code: write_error.code,
                message: format!(
                    "MongoDB refused the document: {} (code {}{})",
                    write_error.message,
                    write_error.code,
                    write_error
                        .code_name
                        .as_deref()
                        .map(|name| format!(", {name}"))
                        .unwrap_or_default()
                ),
            });
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_neither_credentials_nor_option_values() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let topology =
            tickstream_model::Topology::from_str(include_str!("../../../topologies/default.toml"))
                .expect("the default topology");
        let uri = "mongodb://u:S3cretPW@127.0.0.1:1/?appName=S3cretPW";
        let writer = runtime
            .block_on(MongoWriter::connect(uri, &topology))
            .expect("a valid URI");
        let debug = format!("{writer:?}");
        assert!(!debug.contains("S3cretPW"), "{debug}");
        assert!(debug.contains("127.0.0.1:1"), "{debug}");
    }
}
