//! Dead letters of the sink keep the original record's Kafka headers, beside the reason
//! headers: for a record the sink cannot map and for one MongoDB refuses.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tickstream_model::{RawTick, RecordFormat, Symbol};
use tickstream_streams::dlq_headers;

use crate::sink::{TestTopology, spawn_sink, wait_for_documents};
use crate::support::{
    SERVICE_TIMEOUT, consumer, kafka_brokers, producer, require_kafka, require_mongodb, unique_name,
};

type HeaderList = Vec<(String, Option<String>)>;

fn header_list(headers: Option<&impl Headers>) -> HeaderList {
    headers
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn owned(list: &[(&str, Option<&str>)]) -> HeaderList {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_the_original_headers_and_add_the_reason() {
    let brokers = require_kafka();
    let mongo = require_mongodb().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = unique_name("sink-dlq-headers");
    let topology =
        TestTopology::create(dir.path(), &format!("\"{raw}\""), "full", "\"prices\"", 1).await;
    let db = mongo.database(&topology.topology.mongodb.database);
    // A validator standing in for any content rule MongoDB enforces.
    db.create_collection("prices")
        .validator(doc! { "price": { "$lt": 1000.0 } })
        .await
        .expect("create the validated collection");

    let tick = |price: f64| {
        RawTick::new(Symbol::new("BTCUSDT").expect("valid"), price)
            .with_ts(1_700_000_000_000)
            .encode(RecordFormat::Full)
    };
    let originals: [Vec<(&str, Option<&str>)>; 3] = [
        vec![("traceparent", Some("00-aa-01"))],
        vec![
            ("traceparent", Some("00-bb-01")),
            ("producer", Some("kafka-python")),
            ("nothing", None),
        ],
        vec![("traceparent", Some("00-cc-01"))],
    ];
    // Stored; not JSON (refused by the sink); refused by MongoDB's validator.
    let values: [Vec<u8>; 3] = [tick(10.0), b"not json".to_vec(), tick(5000.0)];
    let producer = producer(&brokers, &[]);
    for (value, headers) in values.iter().zip(&originals) {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, &(key, value)| {
                all.insert(Header {
                    key,
                    value: value.map(str::as_bytes),
                })
            });
        producer
            .send(
                FutureRecord::to(&raw)
                    .key("BTCUSDT")
                    .payload(value)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {raw} failed: {e}"));
    }

    let writer = tickstream_sink::MongoWriter::with_client(&mongo, &topology.topology);
    let (stop, handle, _metrics) = spawn_sink(&topology.topology, writer);
    wait_for_documents(&db.collection::<Document>("prices"), 1).await;

    let dlq = &topology.topology.topics.dead_letter;
    let reader = consumer(
        &kafka_brokers(),
        &unique_name("dlq-reader"),
        "read_committed",
    );
    reader.subscribe(&[dlq]).expect("subscribe");
    let mut dead = Vec::new();
    while dead.len() < 2 {
        let message = tokio::time::timeout(SERVICE_TIMEOUT, reader.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} dead letter(s) on {dlq}", dead.len()))
            .expect("consume the dead-letter topic");
        dead.push((
            message.payload().map(<[u8]>::to_vec),
            header_list(message.headers()),
        ));
    }
    dead.sort_by_key(|(_, headers)| headers[0].1.clone());
    for ((value, headers), (index, code)) in dead
        .iter()
        .zip([(1, "not_json"), (2, tickstream_sink::MONGODB_REJECTED)])
    {
        assert_eq!(
            value.as_deref(),
            Some(values[index].as_slice()),
            "the original bytes"
        );
        let kept = originals[index].len();
        assert_eq!(
            headers[..kept],
            owned(&originals[index])[..],
            "the original headers, in order, a null value still null"
        );
        let reason: HeaderList = headers[kept..].to_vec();
        let offset = index.to_string();
        let expected = owned(&[
            (dlq_headers::ERROR_CODE, Some(code)),
            (dlq_headers::SOURCE_TOPIC, Some(raw.as_str())),
            (dlq_headers::SOURCE_PARTITION, Some("0")),
            (dlq_headers::SOURCE_OFFSET, Some(offset.as_str())),
        ]);
        for pair in expected {
            assert!(reason.contains(&pair), "{pair:?} missing from {reason:?}");
        }
        assert_eq!(
            reason.len(),
            6,
            "nothing else but the six reason headers: {reason:?}"
        );
    }
    stop.request();
    handle.await.expect("the sink task").expect("a clean stop");
    db.drop().await.expect("drop the test database");
}
