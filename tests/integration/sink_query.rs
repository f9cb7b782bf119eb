//! `tickstream query --json` against direct MongoDB reads of what the sink stored.

use std::process::Command;

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use rdkafka::consumer::Consumer;
use serde_json::Value;
use tickstream_model::{
    DerivedEvent, EventKind, Jump, MovingAverage, RawTick, RecordFormat, Symbol, Volatility,
};
use tickstream_sink::MongoWriter;
use tickstream_streams::dlq_headers;

use super::{TestTopology, produce_all, spawn_sink, wait_for_documents};
use crate::support::{
    SERVICE_TIMEOUT, consumer, header, mongodb_uri, producer, require_kafka, require_mongodb,
    unique_name,
};

/// The error-code header of the first record on `topic`.
pub async fn dead_letter_code(topic: &str) -> String {
    let reader = consumer(
        &crate::support::kafka_brokers(),
        &unique_name("dlq-reader"),
        "read_committed",
    );
    reader.subscribe(&[topic]).expect("subscribe");
    let message = tokio::time::timeout(SERVICE_TIMEOUT, reader.recv())
        .await
        .expect("a dead letter within the timeout")
        .expect("consume the dead-letter topic");
    header(&message, dlq_headers::ERROR_CODE).expect("an error-code header")
}

fn query(topology: &TestTopology, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .arg("query")
        .arg("--topology")
        .arg(&topology.path)
        .arg("--json")
        .args(args)
        .env("TICKSTREAM_MONGODB_URI", mongodb_uri())
        .output()
        .expect("run tickstream query");
    assert!(
        output.status.success(),
        "tickstream query {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "query {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// A seeded walk with a jump (±2.5–4 %) every 17 ticks.
fn walk(count: usize, seed: u64) -> Vec<f64> {
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f64 / 10_000.0
    };
    let mut price = 67_000.0;
    (0..count)
        .map(|i| {
            let step = if i > 0 && i % 17 == 0 {
                (0.025 + 0.015 * next()) * if next() < 0.5 { -1.0 } else { 1.0 }
            } else {
                (next() - 0.5) * 0.01
            };
            price *= 1.0 + step;
            price
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_outputs_match_direct_reads() {
    let brokers = require_kafka();
    let mongo = require_mongodb().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = unique_name("sink-query");
    let topology =
        TestTopology::create(dir.path(), &format!("\"{raw}\""), "full", "\"prices\"", 1).await;
    let t = &topology.topology;
    let base = 1_732_390_000_000_i64;
    let btc = Symbol::new("BTCUSDT").expect("valid");
    let prices = walk(300, 7);
    let mut records = Vec::new();
    let mut jumps = 0;
    for (i, price) in prices.iter().enumerate() {
        let ts = base + i as i64 * 1000;
        let tick = RawTick::new(btc, *price).with_ts(ts);
        records.push((
            raw.clone(),
            "BTCUSDT".to_owned(),
            tick.encode(RecordFormat::Full),
            ts,
        ));
        if i > 0 {
            let change = (price - prices[i - 1]) / prices[i - 1];
            if change.abs() > 0.02 {
                jumps += 1;
                let jump = Jump {
                    symbol: btc,
                    ts,
                    from: prices[i - 1],
                    to: *price,
                    change_pct: change * 100.0,
                    threshold_pct: 2.0,
                };
                records.push((
                    t.topic(EventKind::Jump).to_owned(),
                    "BTCUSDT".to_owned(),
                    jump.encode(),
                    ts,
                ));
            }
        }
        for window in ["count:20", "time:5m"] {
            if i % 50 == 49 {
                let average = MovingAverage {
                    symbol: btc,
                    ts,
                    window: window.into(),
                    mean: *price,
                    count: 20,
                    min: price * 0.99,
                    max: price * 1.01,
                    vwap: None,
                    bounds: None,
                };
                let volatility = Volatility {
                    symbol: btc,
                    ts,
                    window: window.into(),
                    stddev: price * 0.001,
                    mean: *price,
                    count: 20,
                    bounds: None,
                };
                records.push((
                    t.topic(EventKind::MovingAverage).to_owned(),
                    "BTCUSDT".to_owned(),
                    average.encode(),
                    ts,
                ));
                records.push((
                    t.topic(EventKind::Volatility).to_owned(),
                    "BTCUSDT".to_owned(),
                    volatility.encode(),
                    ts,
                ));
            }
        }
    }
    let eth = RawTick::new(Symbol::new("ETHUSDT").expect("valid"), 3100.5).with_ts(base + 5);
    records.push((
        raw.clone(),
        "ETHUSDT".to_owned(),
        eth.encode(RecordFormat::Full),
        base + 5,
    ));
    produce_all(&producer(&brokers, &[]), records).await;

    let (stop, handle, _metrics) = spawn_sink(t, MongoWriter::with_client(&mongo, t));
    let db = mongo.database(&t.mongodb.database);
    wait_for_documents(&db.collection::<Document>("prices"), 301).await;
    wait_for_documents(&db.collection::<Document>("jumps"), jumps).await;
    wait_for_documents(&db.collection::<Document>("moving_averages"), 12).await;
    wait_for_documents(&db.collection::<Document>("volatility"), 12).await;
    stop.request();
    handle.await.expect("the sink task").expect("a clean stop");

    // latest: the newest document per symbol, read directly.
    let latest = query(&topology, &["latest"]);
    let rows = latest.as_array().expect("an array");
    assert_eq!(rows.len(), 2, "{latest}");
    for row in rows {
        let symbol = row["symbol"].as_str().expect("symbol");
        let newest = db
            .collection::<Document>("prices")
            .find_one(doc! { "symbol": symbol })
            .sort(doc! { "ts": -1 })
            .await
            .expect("find")
            .expect("a price");
        assert_eq!(
            row["price"].as_f64(),
            newest.get_f64("price").ok(),
            "{symbol}"
        );
        assert_eq!(
            row["ts"].as_i64(),
            Some(newest.get_datetime("ts").expect("ts").timestamp_millis())
        );
    }

    // stats over the last 50: recomputed from the documents.
    let stored: Vec<Document> = db
        .collection::<Document>("prices")
        .find(doc! { "symbol": "BTCUSDT" })
        .sort(doc! { "ts": -1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read");
    let stored_prices: Vec<f64> = stored
        .iter()
        .map(|d| d.get_f64("price").expect("price"))
        .collect();
    let last50 = &stored_prices[..50];
    let stats = query(&topology, &["stats", "BTCUSDT", "--last", "50"]);
    assert_eq!(stats["count"].as_u64(), Some(50));
    assert_eq!(
        stats["min"].as_f64(),
        last50.iter().copied().reduce(f64::min)
    );
    assert_eq!(
        stats["max"].as_f64(),
        last50.iter().copied().reduce(f64::max)
    );
    assert!(
        close(
            stats["avg"].as_f64().expect("avg"),
            last50.iter().sum::<f64>() / 50.0
        ),
        "{stats}"
    );

    // jumps: the stored events equal a recomputation over consecutive stored prices.
    for (last, threshold) in [(100_usize, None), (300, None), (300, Some(3.0))] {
        let mut args = vec![
            "jumps".to_owned(),
            "BTCUSDT".to_owned(),
            "--last".to_owned(),
            last.to_string(),
        ];
        if let Some(threshold) = threshold {
            args.extend(["--threshold".to_owned(), threshold.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = query(&topology, &args);
        let mut window: Vec<(i64, f64)> = stored[..last.min(stored.len())]
            .iter()
            .map(|d| {
                (
                    d.get_datetime("ts").expect("ts").timestamp_millis(),
                    d.get_f64("price").expect("price"),
                )
            })
            .collect();
        window.reverse();
        let recomputed: Vec<(i64, f64)> = window
            .windows(2)
            .map(|pair| (pair[1].0, (pair[1].1 - pair[0].1) / pair[0].1 * 100.0))
            .filter(|(_, pct)| pct.abs() > 2.0 && threshold.is_none_or(|t| pct.abs() >= t))
            .collect();
        let reported: Vec<(i64, f64)> = report["jumps"]
            .as_array()
            .expect("jumps")
            .iter()
            .map(|j| {
                (
                    j["ts"].as_i64().expect("ts"),
                    j["change_pct"].as_f64().expect("change_pct"),
                )
            })
            .collect();
        assert!(
            !recomputed.is_empty(),
            "the walk has jumps in the last {last}"
        );
        assert_eq!(
            reported.len(),
            recomputed.len(),
            "last {last}, threshold {threshold:?}: {report}"
        );
        for (r, e) in reported.iter().zip(&recomputed) {
            assert!(r.0 == e.0 && close(r.1, e.1), "{r:?} vs {e:?}");
        }
    }

    // analytics: the newest moving average and volatility per window.
    let analytics = query(&topology, &["analytics", "BTCUSDT"]);
    let rows = analytics.as_array().expect("an array");
    assert_eq!(rows.len(), 2);
    for row in rows {
        let window = row["window"].as_str().expect("window");
        for (collection, field, value) in [
            ("moving_averages", "moving_average", "mean"),
            ("volatility", "volatility", "stddev"),
        ] {
            let newest = db
                .collection::<Document>(collection)
                .find_one(doc! { "symbol": "BTCUSDT", "window": window })
                .sort(doc! { "ts": -1 })
                .await
                .expect("find")
                .expect("an event");
            assert_eq!(
                row[field][value].as_f64(),
                newest.get_f64(value).ok(),
                "{window} {collection}"
            );
            assert_eq!(
                row[field]["ts"].as_i64(),
                Some(newest.get_datetime("ts").expect("ts").timestamp_millis())
            );
        }
    }
    db.drop().await.expect("drop the test database");
}
