//! Sink throughput against its ceiling, in the same run on the same mongod:
//!
//! * **ceiling**: a plain loop of `insert_many` (Rust driver, default options) over batches of
//!   the same documents;
//! * **writer**: the same documents through `MongoWriter::write_batch` (unordered, duplicate
//!   and rejection accounting);
//! * **sink**: the whole `KafkaSink` in-process — consume from Kafka (read_committed), map,
//!   write, commit — from start (group join included) until the last document is stored.
//!
//! `cargo bench --bench sink` (needs `make services-up`; TICKSTREAM_MONGODB_URI,
//! TICKSTREAM_KAFKA_BROKERS, TICKSTREAM_BENCH_DOCS (default 100000) choose where and how
//! much). Without `--bench` (as `cargo test --all-targets` runs it) it only maps a few
//! records, needing no service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use mongodb::bson::{Document, doc};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tickstream_model::{RawTick, RecordFormat, Symbol, Topology};
use tickstream_sink::{
    DocumentMapper, KafkaSink, MongoWriter, SinkConfig, SinkDocument, SinkMetrics,
};
use tickstream_streams::{Health, Record, Shutdown};

const BATCH: usize = 1000;
const ROUNDS: usize = 3;

fn topology(name: &str) -> Topology {
    Topology::from_str(&format!(
        r#"
        application_id = "{name}"
        symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        [topics]
        raw = "{name}.raw"
        [mongodb]
        database = "{name}"
        batch_size = {BATCH}
        batch_interval = "100ms"
        "#
    ))
    .expect("a valid topology")
}

fn payloads(count: usize) -> Vec<Vec<u8>> {
    let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"];
    (0..count)
        .map(|i| {
            RawTick::new(
                Symbol::new(symbols[i % 3]).expect("valid"),
                100.0 + (i % 997) as f64 / 8.0,
            )
            .with_ts(1_700_000_000_000 + i as i64)
            .with_source("synthetic")
            .encode(RecordFormat::Full)
        })
        .collect()
}

fn documents(topology: &Topology, payloads: &[Vec<u8>]) -> Vec<SinkDocument> {
    let mapper = DocumentMapper::new(topology);
    let topic = topology.raw_topics()[0].to_owned();
    payloads
        .iter()
        .enumerate()
        .map(|(offset, value)| {
            mapper
                .map(&Record {
                    topic: &topic,
                    partition: 0,
                    offset: offset as i64,
                    timestamp: None,
                    key: None,
                    value: Some(value),
                })
                .expect("valid records")
        })
        .collect()
}

fn unique(prefix: &str) -> String {
    let nanos = tickstream_model::clock::since_epoch().as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

async fn ceiling(client: &mongodb::Client, docs: &[SinkDocument]) -> f64 {
    let db = client.database(&unique("bench-ceiling"));
    let collection = db.collection::<Document>("prices");
    let plain: Vec<Document> = docs
        .iter()
        .map(|d| d.document.to_document().expect("valid BSON"))
        .collect();
    let started = Instant::now();
    for chunk in plain.chunks(BATCH) {
        collection.insert_many(chunk).await.expect("insert_many");
    }
    let rate = docs.len() as f64 / started.elapsed().as_secs_f64();
    db.drop().await.expect("drop");
    rate
}

async fn writer(client: &mongodb::Client, docs: &[SinkDocument]) -> f64 {
    let name = unique("bench-writer");
    let writer = MongoWriter::with_client(client, &topology(&name));
    let started = Instant::now();
    for chunk in docs.chunks(BATCH) {
        let report = writer.write_batch(chunk).await.expect("write_batch");
        assert_eq!(report.total_written(), chunk.len() as u64);
    }
    let rate = docs.len() as f64 / started.elapsed().as_secs_f64();
    writer.database().drop().await.expect("drop");
    rate
}

/// The whole sink's rate from start (group join included) to the last document, and its
/// steady rate from the first stored document on.
async fn whole_sink(client: &mongodb::Client, brokers: &str, payloads: &[Vec<u8>]) -> (f64, f64) {
    let name = unique("bench-sink");
    let topology = topology(&name);
    let topic = topology.raw_topics()[0].to_owned();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let mut topics = vec![topic.clone(), topology.topics.dead_letter.clone()];
    topics.extend(topology.derived_topics().into_iter().map(str::to_owned));
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let deliveries = payloads.iter().map(|p| {
        producer
            .send_result(FutureRecord::<str, [u8]>::to(&topic).payload(p.as_slice()))
            .unwrap_or_else(|_| panic!("enqueue"))
    });
    for delivery in join_all(deliveries.collect::<Vec<_>>()).await {
        delivery.expect("delivered").expect("delivered");
    }

    let config = SinkConfig::from_topology(&topology, brokers);
    let metrics = Arc::new(SinkMetrics::new(&config.group_id));
    let writer = MongoWriter::with_client(client, &topology);
    let collection = writer.database().collection::<Document>("prices");
    let stop = Shutdown::new();
    let started = Instant::now();
    let sink = KafkaSink::new(
        config,
        &topology,
        writer.clone(),
        metrics,
        Arc::new(Health::default()),
    );
    let handle = tokio::spawn(sink.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(300);
    let total = payloads.len() as u64;
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let stored = collection.estimated_document_count().await.unwrap_or(0);
        if stored > 0 && first.is_none() {
            first = Some((Instant::now(), stored));
        }
        if stored >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink did not finish in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let (first_at, first_count) = first.expect("documents were stored");
    let steady = (total - first_count) as f64 / first_at.elapsed().as_secs_f64();
    stop.request();
    handle.await.expect("sink task").expect("clean stop");
    writer.database().drop().await.expect("drop");
    (rate, steady)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        let docs = documents(&topology("smoke"), &payloads(10));
        assert_eq!(docs.len(), 10);
        println!(
            "sink bench smoke run: mapped {} documents (run with --bench to measure)",
            docs.len()
        );
        return;
    }
    let count: usize = std::env::var("TICKSTREAM_BENCH_DOCS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let uri = std::env::var("TICKSTREAM_MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:37017/?replicaSet=rs0".to_owned());
    let brokers =
        std::env::var("TICKSTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:39092".to_owned());
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let client = mongodb::Client::with_uri_str(&uri)
            .await
            .expect("a MongoDB client");
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .unwrap_or_else(|e| panic!("MongoDB at {uri} does not answer ({e}): make services-up"));
        let payloads = payloads(count);
        let docs = documents(&topology("bench"), &payloads);
        let (mut ceilings, mut writers, mut sinks, mut steady) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let c = ceiling(&client, &docs).await;
            let w = writer(&client, &docs).await;
            let (s, st) = whole_sink(&client, &brokers, &payloads).await;
            println!(
                "round {round}: ceiling {c:.0} docs/s, writer {w:.0} docs/s, \
                 sink {s:.0} docs/s (steady {st:.0} docs/s)"
            );
            ceilings.push(c);
            writers.push(w);
            sinks.push(s);
            steady.push(st);
        }
        let (c, w) = (median(ceilings), median(writers));
        let (s, st) = (median(sinks), median(steady));
        println!("{count} documents, batches of {BATCH}, median of {ROUNDS} rounds:");
        println!("  ceiling (insert_many loop): {c:.0} docs/s");
        for (what, rate) in [
            ("MongoWriter::write_batch:  ", w),
            ("KafkaSink, start to end:   ", s),
            ("KafkaSink, steady state:   ", st),
        ] {
            println!(
                "  {what} {rate:.0} docs/s ({:.0} % of the ceiling)",
                100.0 * rate / c
            );
        }
    });
}
