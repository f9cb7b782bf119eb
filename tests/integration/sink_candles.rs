//! Candles into MongoDB: a time-series collection, each candle stored once however often its
//! record is read (a second sink replays the whole topic), and `tickstream query candles`
//! printing what is stored.

use std::process::Command;

use mongodb::bson::{Document, doc};
use tickstream_model::{Candle, DerivedEvent, EventKind, Symbol};
use tickstream_sink::MongoWriter;

use super::{TestTopology, produce_all, spawn_sink, wait_for_documents};
use crate::support::{mongodb_uri, producer, require_kafka, require_mongodb, unique_name};

fn candle(symbol: Symbol, interval: &str, minute: i64, with_qty: bool) -> Candle {
    let length = if interval == "1m" { 60_000 } else { 3_600_000 };
    let start = 1_723_161_240_000 - 1_723_161_240_000 % length + minute * length;
    let open = 61_000.0 + minute as f64;
    Candle {
        symbol,
        interval: interval.to_owned(),
        start,
        end: start + length,
        open,
        high: open + 7.5,
        low: open - 2.25,
        close: open + 1.0,
        trades: 10 + minute as u64,
        volume: with_qty.then_some(0.5 + minute as f64),
        vwap: with_qty.then_some(open + 0.5),
        first_ts: start + 13,
        last_ts: start + length - 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candles_are_stored_once_in_a_time_series_collection_and_queried() {
    let brokers = require_kafka();
    let mongo = require_mongodb().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = unique_name("sink-candles");
    let topology =
        TestTopology::create(dir.path(), &format!("\"{raw}\""), "full", "\"prices\"", 1).await;
    let t = &topology.topology;
    let btc = Symbol::new("BTCUSDT").expect("valid");
    let candles: Vec<Candle> = (0..30)
        .map(|m| candle(btc, "1m", m, m % 3 != 0))
        .chain([candle(btc, "1h", 0, true)])
        .collect();
    let topic = t.topic(EventKind::Candle).to_owned();
    let mut records: Vec<_> = candles
        .iter()
        .map(|c| (topic.clone(), "BTCUSDT".to_owned(), c.encode(), c.end))
        .collect();
    // An at-least-once producer's copy of a candle: stored once all the same.
    records.push(records[4].clone());
    produce_all(&producer(&brokers, &[]), records).await;

    let db = mongo.database(&t.mongodb.database);
    let collection = db.collection::<Document>(t.collection(EventKind::Candle));
    let (stop, handle, _) = spawn_sink(t, MongoWriter::with_client(&mongo, t));
    wait_for_documents(&collection, candles.len() as u64).await;
    stop.request();
    handle.await.expect("the sink task").expect("a clean stop");

    // A second sink (another group) reads every candle again into the same collection.
    let mut replaying = t.clone();
    replaying.application_id = unique_name("sink-replay");
    let (stop, handle, metrics) = spawn_sink(&replaying, MongoWriter::with_client(&mongo, t));
    let replayed = || {
        metrics
            .duplicates
            .with_label_values(&[collection.name()])
            .get()
    };
    let deadline = std::time::Instant::now() + crate::support::PROGRESS_TIMEOUT;
    while replayed() < candles.len() as u64 + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replay's candles were not all recognised as stored ({} of {})",
            replayed(),
            candles.len() + 1
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.request();
    handle.await.expect("the sink task").expect("a clean stop");
    assert_eq!(
        collection.count_documents(doc! {}).await.expect("count"),
        candles.len() as u64,
        "each candle once, after a copy and a full replay"
    );

    let info = db
        .run_command(doc! { "listCollections": 1, "filter": { "name": collection.name() } })
        .await
        .expect("listCollections");
    let entry = info
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|batch| batch.first())
        .and_then(|e| e.as_document())
        .cloned()
        .expect("the candles collection");
    assert_eq!(entry.get_str("type"), Ok("timeseries"), "{entry}");
    let series = entry
        .get_document("options")
        .and_then(|o| o.get_document("timeseries"))
        .expect("time-series options");
    assert_eq!(series.get_str("timeField"), Ok("start"));
    assert_eq!(series.get_str("metaField"), Ok("symbol"));

    // The query: the last 5 one-minute candles, oldest first, as produced.
    let output = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(["query", "--topology"])
        .arg(&topology.path)
        .args([
            "--json",
            "candles",
            "BTCUSDT",
            "--interval",
            "1m",
            "--last",
            "5",
        ])
        .env("TICKSTREAM_MONGODB_URI", mongodb_uri())
        .output()
        .expect("run tickstream query");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    let starts: Vec<i64> = rows
        .iter()
        .map(|r| r["start"].as_i64().expect("start"))
        .collect();
    let want: Vec<i64> = candles[25..30].iter().map(|c| c.start).collect();
    assert_eq!(starts, want);
    for (row, c) in rows.iter().zip(&candles[25..30]) {
        assert_eq!(row["open"].as_f64(), Some(c.open));
        assert_eq!(row["trades"].as_i64(), Some(c.trades as i64));
        assert_eq!(row["volume"].as_f64(), c.volume, "null without quantities");
        assert_eq!(row["vwap"].as_f64(), c.vwap);
        assert_eq!(row["last_ts"].as_i64(), Some(c.last_ts));
    }
    // An interval the topology has no candles for: refused, naming the ones it has.
    let output = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(["query", "--topology"])
        .arg(&topology.path)
        .args(["candles", "BTCUSDT", "--interval", "5m"])
        .env("TICKSTREAM_MONGODB_URI", mongodb_uri())
        .output()
        .expect("run tickstream query");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("5m") && stderr.contains("1m, 1h"),
        "{stderr}"
    );
}
