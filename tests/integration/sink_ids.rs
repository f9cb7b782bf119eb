//! The raw price `_id` against a real mongod: exact per record (two raw topics whose names
//! collided in the old 16-bit topic hash, offsets beyond 2^32), idempotent on replay, and
//! sorted by event time first, as the reference consumer's `sort("_id")` queries need.

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use tickstream_model::{RawTick, RecordFormat, Symbol, Topology};
use tickstream_sink::{DocumentMapper, MongoWriter, RawPriceId};
use tickstream_streams::Record;

use crate::support::{require_mongodb, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_price_ids_are_exact_idempotent_and_sort_by_time() {
    let mongo = require_mongodb().await;
    let database = unique_name("sink-ids");
    // FNV-1a-16("prices.raw.38") == FNV-1a-16("prices.raw.51"): the old ids of these two
    // topics' records at one second, partition and offset were equal.
    let topology = Topology::from_str(&format!(
        r#"
        application_id = "{database}"
        symbols = ["BTCUSDT", "ETHUSDT"]
        [topics]
        raw = {{ BTCUSDT = "prices.raw.38", ETHUSDT = "prices.raw.51" }}
        [mongodb]
        database = "{database}"
        "#
    ))
    .expect("a valid topology");
    let mapper = DocumentMapper::new(&topology);
    let writer = MongoWriter::with_client(&mongo, &topology);
    // (topic, partition, offset, event time, price), inserted in this (not the time) order.
    let records: [(&str, i32, i64, i64, f64); 6] = [
        ("prices.raw.38", 0, 7, 1_732_390_000_123, 1.0),
        ("prices.raw.51", 0, 7, 1_732_390_000_123, 2.0),
        ("prices.raw.38", 0, 7 + (1 << 32), 1_732_390_000_500, 3.0),
        ("prices.raw.38", 1, 3, 1_732_389_999_999, 4.0),
        ("prices.raw.51", 2, 1, 1_732_390_002_000, 5.0),
        ("prices.raw.38", 0, 8, 1_732_390_000_124, 6.0),
    ];
    let documents: Vec<_> = records
        .iter()
        .map(|(topic, partition, offset, ts, price)| {
            let symbol = if topic.ends_with("38") {
                "BTCUSDT"
            } else {
                "ETHUSDT"
            };
            let value = RawTick::new(Symbol::new(symbol).expect("valid"), *price)
                .with_ts(*ts)
                .encode(RecordFormat::Full);
            mapper
                .map(&Record {
                    topic,
                    partition: *partition,
                    offset: *offset,
                    timestamp: None,
                    key: Some(symbol.as_bytes()),
                    value: Some(&value),
                })
                .expect("valid records")
        })
        .collect();
    assert!(documents.iter().all(|d| d.collection == "prices"));

    let report = writer.write_batch(&documents).await.expect("MongoDB is up");
    assert_eq!(
        (report.total_written(), report.total_duplicates()),
        (6, 0),
        "every record its own document: {report:?}"
    );
    let replay = writer.write_batch(&documents).await.expect("MongoDB is up");
    assert_eq!(
        (replay.total_written(), replay.total_duplicates()),
        (0, 6),
        "a replay rebuilds the same ids: {replay:?}"
    );

    let prices = mongo.database(&database).collection::<Document>("prices");
    let sorted: Vec<Document> = prices
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read");
    let ids: Vec<RawPriceId> = sorted
        .iter()
        .map(|d| RawPriceId::from_bson(d.get("_id").expect("an _id")).expect("a raw price id"))
        .collect();
    let mut expected: Vec<RawPriceId> = records
        .iter()
        .map(|(topic, partition, offset, ts, _)| RawPriceId::new(topic, *partition, *offset, *ts))
        .collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "MongoDB orders the ids as RawPriceId's Ord does"
    );
    assert!(
        ids.windows(2)
            .all(|w| w[0].event_time_ms <= w[1].event_time_ms),
        "sorting by _id sorts by event time: {ids:?}"
    );
    // The reference consumer's "latest price": the highest _id.
    let latest = prices
        .find_one(doc! {})
        .sort(doc! { "_id": -1 })
        .await
        .expect("find")
        .expect("a document");
    assert_eq!(latest.get_f64("price"), Ok(5.0), "{latest:?}");
    mongo
        .database(&database)
        .drop()
        .await
        .expect("drop the test database");
}
