//! Integration tests of tickstream sink and query against the real services: every record
//! exactly once in MongoDB across SIGKILLs and a MongoDB outage, the seed layout's documents,
//! and `tickstream query --json` against direct reads.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use futures::future::join_all;
use mongodb::Collection;
use mongodb::bson::{Bson, DateTime, Document, doc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tickstream_model::{RawTick, RecordFormat, Symbol, Topology};
use tickstream_sink::{KafkaSink, MongoWriter, RawPriceId, SinkConfig, SinkMetrics, raw_price_id};
use tickstream_streams::{Health, Shutdown};

use crate::support::{
    ChildProcess, PROGRESS_TIMEOUT, create_topic, free_local_address, http_get, kafka_brokers,
    kill_points, mongodb_uri, producer, read_all_committed, require_kafka, require_mongodb,
    unique_name,
};

#[path = "sink_candles.rs"]
mod sink_candles;
#[path = "sink_in_process.rs"]
mod sink_in_process;
#[path = "sink_mongod.rs"]
pub mod sink_mongod;
#[path = "sink_query.rs"]
mod sink_query;

const SYMBOLS: [&str; 3] = ["BTCUSDT", "ETHUSDT", "SOLUSDT"];

/// A topology with unique names, written to a file for the binary.
pub struct TestTopology {
    pub topology: Topology,
    pub path: PathBuf,
}

impl TestTopology {
    /// `raw`/`prices` are TOML values: `"name"` or `{ BTCUSDT = "btc", … }`.
    pub async fn create(
        dir: &Path,
        raw: &str,
        format: &str,
        prices: &str,
        partitions: i32,
    ) -> Self {
        let app = unique_name("sink");
        let toml = format!(
            r#"
application_id = "{app}"
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
[topics]
raw = {raw}
raw_format = "{format}"
moving_average = "{app}.ma"
volatility = "{app}.vol"
jumps = "{app}.jumps"
candles = "{app}.candles"
dead_letter = "{app}.dlq"
[[windows]]
kind = "count"
size = 20
[[windows]]
kind = "time"
span = "5m"
[[candles]]
interval = "1m"
[[candles]]
interval = "1h"
[mongodb]
database = "{app}"
batch_size = 1000
batch_interval = "100ms"
[mongodb.collections]
prices = {prices}
"#
        );
        let path = dir.join(format!("{app}.toml"));
        std::fs::write(&path, &toml).expect("write the topology");
        let topology = Topology::from_str(&toml).expect("a valid topology");
        let brokers = kafka_brokers();
        let mut topics: Vec<String> = topology
            .raw_topics()
            .iter()
            .map(|t| t.to_string())
            .collect();
        topics.extend(topology.derived_topics().into_iter().map(str::to_owned));
        topics.push(topology.topics.dead_letter.clone());
        for topic in &topics {
            create_topic(&brokers, topic, partitions).await;
        }
        Self { topology, path }
    }

    pub fn collection(&self, client: &mongodb::Client, name: &str) -> Collection<Document> {
        client
            .database(&self.topology.mongodb.database)
            .collection(name)
    }
}

/// A record as produced: where it landed and its event time, hence its expected `_id`.
pub struct Produced {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub ts: i64,
}

impl Produced {
    pub fn id(&self) -> RawPriceId {
        raw_price_id(&self.topic, self.partition, self.offset, self.ts)
    }
}

/// Sends `(topic, key, payload, kafka timestamp)` and waits for every delivery.
pub async fn produce_all(
    producer: &FutureProducer,
    records: Vec<(String, String, Vec<u8>, i64)>,
) -> Vec<Produced> {
    let mut pending = Vec::with_capacity(records.len());
    for (topic, key, payload, timestamp) in &records {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .timestamp(*timestamp);
        let delivery = producer
            .send_result(record)
            .unwrap_or_else(|(e, _)| panic!("enqueueing to {topic} failed: {e}"));
        pending.push(delivery);
    }
    let mut produced = Vec::with_capacity(records.len());
    for ((topic, _, _, timestamp), outcome) in records.iter().zip(join_all(pending).await) {
        let delivery = outcome
            .expect("producer dropped before reporting delivery")
            .unwrap_or_else(|(e, _)| panic!("delivery to {topic} failed: {e}"));
        produced.push(Produced {
            topic: topic.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
            ts: *timestamp,
        });
    }
    produced
}

/// Full-format ticks `first..first+count` on one raw topic, symbol round-robin, event time
/// `base_ts + i` (the Kafka timestamp is set apart, so the document must take the record's).
pub fn full_ticks(
    topic: &str,
    first: u64,
    count: u64,
    base_ts: i64,
) -> Vec<(String, String, Vec<u8>, i64)> {
    (first..first + count)
        .map(|i| {
            let symbol = SYMBOLS[(i % 3) as usize];
            let tick = RawTick::new(
                Symbol::new(symbol).expect("valid"),
                100.0 + (i % 997) as f64 / 8.0,
            )
            .with_ts(base_ts + i as i64)
            .with_source("synthetic");
            (
                topic.to_owned(),
                symbol.to_owned(),
                tick.encode(RecordFormat::Full),
                base_ts + i as i64,
            )
        })
        .collect()
}

/// Starts `tickstream sink`. Static group membership makes a restart take its partitions back
/// at once instead of after the dead member's session timeout.
fn start_sink(topology: &TestTopology, uri: &str, metrics: SocketAddr, log: &Path) -> ChildProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tickstream"));
    command
        .arg("sink")
        .arg("--topology")
        .arg(&topology.path)
        .arg("--metrics-addr")
        .arg(metrics.to_string())
        .env("TICKSTREAM_KAFKA_BROKERS", kafka_brokers())
        .env("TICKSTREAM_MONGODB_URI", uri)
        .env(
            "TICKSTREAM_KAFKA_CONFIG_GROUP_INSTANCE_ID",
            format!("{}-sink-0", topology.topology.application_id),
        )
        .env("RUST_LOG", "info");
    ChildProcess::spawn("tickstream sink", command, log)
}

/// Polls the document count until it reaches `target`; fails with the sink's log if the sink
/// died or the count stopped growing.
async fn wait_for_count(
    collection: &Collection<Document>,
    target: u64,
    sink: &mut ChildProcess,
) -> u64 {
    let mut last = 0;
    let mut last_growth = Instant::now();
    loop {
        let count = collection.count_documents(doc! {}).await.unwrap_or(last);
        if count >= target {
            return count;
        }
        if count > last {
            last = count;
            last_growth = Instant::now();
        }
        sink.assert_running();
        assert!(
            last_growth.elapsed() < PROGRESS_TIMEOUT,
            "documents stuck at {count} of {target}; sink log:\n{}",
            sink.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stored_ids(collection: &Collection<Document>) -> Vec<RawPriceId> {
    collection
        .find(doc! {})
        .projection(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect::<Vec<Document>>()
        .await
        .expect("read ids")
        .iter()
        .map(|d| {
            d.get("_id")
                .and_then(RawPriceId::from_bson)
                .unwrap_or_else(|| panic!("not a raw price _id: {d:?}"))
        })
        .collect()
}

/// Every produced record is stored exactly once: as many documents as records, and the set
/// of `_id`s is exactly the set the records' positions give.
async fn assert_exactly_once(collection: &Collection<Document>, produced: &[Produced]) {
    let ids = stored_ids(collection).await;
    let stored: HashSet<RawPriceId> = ids.iter().cloned().collect();
    let expected: HashSet<RawPriceId> = produced.iter().map(Produced::id).collect();
    assert_eq!(expected.len(), produced.len(), "expected ids are distinct");
    assert_eq!(ids.len(), produced.len(), "one document per record");
    let missing = expected.difference(&stored).count();
    let unexpected = stored.difference(&expected).count();
    assert!(
        missing == 0 && unexpected == 0,
        "{missing} records missing, {unexpected} unexpected documents"
    );
}

async fn wait_for_ready(metrics: SocketAddr, ready: bool, sink: &mut ChildProcess) {
    let want = if ready { 200 } else { 503 };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(metrics, "/readyz").map(|(status, _)| status) != Some(want) {
        sink.assert_running();
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {want}; sink log:\n{}",
            sink.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_sink_stores_every_record_exactly_once() {
    const RECORDS: u64 = 200_000;
    let brokers = require_kafka();
    let mongo = require_mongodb().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = unique_name("sink-raw");
    let topology =
        TestTopology::create(dir.path(), &format!("\"{raw}\""), "full", "\"prices\"", 3).await;
    let producer = producer(&brokers, &[("linger.ms", "20")]);
    let produced = produce_all(&producer, full_ticks(&raw, 0, RECORDS, 1_700_000_000_000)).await;
    let prices = topology.collection(&mongo, "prices");

    let metrics = free_local_address();
    let log = dir.path().join("sink.log");
    let mut sink = start_sink(&topology, &mongodb_uri(), metrics, &log);
    for point in kill_points(RECORDS as usize) {
        let reached = wait_for_count(&prices, point as u64, &mut sink).await;
        sink.kill();
        eprintln!("SIGKILLed the sink at {reached} documents (kill point {point})");
        sink = start_sink(&topology, &mongodb_uri(), metrics, &log);
    }
    wait_for_count(&prices, RECORDS, &mut sink).await;
    let status = sink.terminate();
    assert!(status.success(), "SIGTERM → exit 0, got {status}");
    assert_exactly_once(&prices, &produced).await;
    let indexes = prices.list_index_names().await.expect("list indexes");
    assert!(
        indexes.contains(&"symbol_1_ts_-1".to_owned()),
        "{indexes:?}"
    );
    mongo
        .database(&topology.topology.mongodb.database)
        .drop()
        .await
        .expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sink_reports_mongodb_leaving_and_coming_back() {
    require_kafka();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mongod = sink_mongod::PrivateMongod::start(dir.path()).await;
    let raw = unique_name("sink-idle");
    let topology =
        TestTopology::create(dir.path(), &format!("\"{raw}\""), "full", "\"prices\"", 1).await;
    let metrics = free_local_address();
    let mut sink = start_sink(
        &topology,
        &mongod.uri(),
        metrics,
        &dir.path().join("sink.log"),
    );
    wait_for_ready(metrics, true, &mut sink).await;
    // No record flows: only the sink's own probe can notice.
    mongod.stop();
    wait_for_ready(metrics, false, &mut sink).await;
    mongod.restart().await;
    wait_for_ready(metrics, true, &mut sink).await;
    let status = sink.terminate();
    assert!(status.success(), "SIGTERM → exit 0, got {status}");
    mongod.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_outage_loses_and_doubles_nothing() {
    const CHUNKS: u64 = 40;
    const CHUNK: u64 = 1_000;
    let brokers = require_kafka();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mongod = sink_mongod::PrivateMongod::start(dir.path()).await;
    let client = mongodb::Client::with_uri_str(mongod.uri())
        .await
        .expect("client");
    let raw = unique_name("sink-outage");
    let topology =
        TestTopology::create(dir.path(), &format!("\"{raw}\""), "full", "\"prices\"", 2).await;
    let prices = topology.collection(&client, "prices");

    // The stream keeps flowing through the outage: a chunk every 250 ms for ~10 s.
    let producer = producer(&brokers, &[]);
    let stream_topic = raw.clone();
    let stream = tokio::spawn(async move {
        let mut produced = Vec::new();
        for chunk in 0..CHUNKS {
            let ticks = full_ticks(&stream_topic, chunk * CHUNK, CHUNK, 1_700_000_000_000);
            produced.extend(produce_all(&producer, ticks).await);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        produced
    });

    let metrics = free_local_address();
    let mut sink = start_sink(
        &topology,
        &mongod.uri(),
        metrics,
        &dir.path().join("sink.log"),
    );
    wait_for_count(&prices, 3 * CHUNK, &mut sink).await;
    wait_for_ready(metrics, true, &mut sink).await;

    mongod.stop();
    let stopped = Instant::now();
    wait_for_ready(metrics, false, &mut sink).await;
    // The outage itself lasts 10 s (what is being tested, not a synchronisation).
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed())).await;
    sink.assert_running();
    mongod.restart().await;

    let produced = stream.await.expect("the producing task");
    wait_for_count(&prices, CHUNKS * CHUNK, &mut sink).await;
    wait_for_ready(metrics, true, &mut sink).await;
    let status = sink.terminate();
    assert!(status.success(), "SIGTERM → exit 0, got {status}");
    assert_exactly_once(&prices, &produced).await;
    mongod.stop();
}

/// Runs the sink in-process until the returned token is requested.
pub fn spawn_sink(
    topology: &Topology,
    writer: MongoWriter,
) -> (
    Shutdown,
    tokio::task::JoinHandle<Result<(), tickstream_sink::SinkError>>,
    Arc<SinkMetrics>,
) {
    let config = SinkConfig::from_topology(topology, &kafka_brokers());
    let metrics = Arc::new(SinkMetrics::new(&config.group_id));
    let stop = Shutdown::new();
    let sink = KafkaSink::new(
        config,
        topology,
        writer,
        Arc::clone(&metrics),
        Arc::new(Health::default()),
    );
    let handle = tokio::spawn(sink.run(stop.clone()));
    (stop, handle, metrics)
}

/// Polls until `collection` holds `count` documents (in-process sink).
pub async fn wait_for_documents(collection: &Collection<Document>, count: u64) {
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    loop {
        let stored = collection.count_documents(doc! {}).await.expect("count");
        if stored >= count {
            assert_eq!(
                stored,
                count,
                "more documents than records in {}",
                collection.name()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {stored} of {count} documents after {PROGRESS_TIMEOUT:?}",
            collection.name()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_layout_stores_the_reference_documents() {
    let brokers = require_kafka();
    let mongo = require_mongodb().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let coin = unique_name("coin");
    let raw = format!(
        "{{ BTCUSDT = \"{coin}-btc\", ETHUSDT = \"{coin}-eth\", SOLUSDT = \"{coin}-sol\" }}"
    );
    let topology = TestTopology::create(
        dir.path(),
        &raw,
        "reference",
        r#"{ BTCUSDT = "btc", ETHUSDT = "eth", SOLUSDT = "sol" }"#,
        1,
    )
    .await;
    // Byte for byte what the reference producer's json.dumps writes, an integer price too.
    let sent: Vec<(&str, &str, f64)> = vec![
        ("btc", r#"{"symbol": "BTCUSDT", "price": 67234.5}"#, 67234.5),
        (
            "btc",
            r#"{"symbol": "BTCUSDT", "price": 67240.25}"#,
            67240.25,
        ),
        ("eth", r#"{"symbol": "ETHUSDT", "price": 3100}"#, 3100.0),
        ("sol", r#"{"symbol": "SOLUSDT", "price": 150.125}"#, 150.125),
    ];
    let timestamp = 1_732_390_000_123;
    let mut records: Vec<(String, String, Vec<u8>, i64)> = sent
        .iter()
        .enumerate()
        .map(|(i, (c, json, _))| {
            (
                format!("{coin}-{c}"),
                String::new(),
                json.as_bytes().to_vec(),
                timestamp + i as i64,
            )
        })
        .collect();
    // One the reference's "enhanced" consumer would skip: here it goes to the DLQ.
    records.push((
        format!("{coin}-btc"),
        String::new(),
        br#"{"symbol": "BTCUSDT"}"#.to_vec(),
        timestamp,
    ));
    let producer = producer(&brokers, &[]);
    let produced = produce_all(&producer, records).await;

    let writer = MongoWriter::with_client(&mongo, &topology.topology);
    let (stop, handle, metrics) = spawn_sink(&topology.topology, writer);
    for (i, (collection, _, price)) in sent.iter().enumerate() {
        let expected_count = sent.iter().filter(|(c, _, _)| c == collection).count() as u64;
        let documents = topology.collection(&mongo, collection);
        wait_for_documents(&documents, expected_count).await;
        let document = documents
            .find_one(doc! { "_id": produced[i].id().to_bson() })
            .await
            .expect("find")
            .unwrap_or_else(|| panic!("record {i} is not in {collection}"));
        let symbol = ["BTCUSDT", "ETHUSDT", "SOLUSDT"][["btc", "eth", "sol"]
            .iter()
            .position(|c| c == collection)
            .expect("a coin")];
        assert_eq!(
            document,
            doc! {
                "_id": produced[i].id().to_bson(),
                "symbol": symbol,
                "price": Bson::Double(*price),
                "ts": DateTime::from_millis(produced[i].ts),
            },
            "the reference's fields (symbol, price as a double), plus the event time"
        );
    }
    let dead = read_all_committed(&topology.topology.topics.dead_letter, 1);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1, r#"{"symbol": "BTCUSDT"}"#, "the original bytes");
    let dlq_code = sink_query::dead_letter_code(&topology.topology.topics.dead_letter).await;
    assert_eq!(dlq_code, "missing_field");
    assert_eq!(
        metrics
            .dead_letter_records
            .with_label_values(&["missing_field"])
            .get(),
        1
    );
    stop.request();
    handle.await.expect("the sink task").expect("a clean stop");
    assert!(metrics.commits.get() >= 1);
    mongo
        .database(&topology.topology.mongodb.database)
        .drop()
        .await
        .expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_mongodb_refuses_go_to_the_dead_letter_topic() {
    let brokers = require_kafka();
    let mongo = require_mongodb().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = unique_name("sink-refused");
    let topology =
        TestTopology::create(dir.path(), &format!("\"{raw}\""), "full", "\"prices\"", 1).await;
    let db = mongo.database(&topology.topology.mongodb.database);
    // A validator standing in for any content rule MongoDB enforces.
    db.create_collection("prices")
        .validator(doc! { "price": { "$lt": 1000.0 } })
        .await
        .expect("create the validated collection");

    // The writer alone: a refusal is reported by index, a rewrite counts duplicates.
    let writer = MongoWriter::with_client(&mongo, &topology.topology);
    let mapper = tickstream_sink::DocumentMapper::new(&topology.topology);
    let batch: Vec<_> = full_ticks(&raw, 0, 3, 1_700_000_000_000)
        .iter()
        .enumerate()
        .map(|(i, (_, _, _, ts))| {
            let price = if i == 1 { 5000.0 } else { 10.0 };
            let value = RawTick::new(Symbol::new(SYMBOLS[i]).expect("valid"), price)
                .with_ts(*ts)
                .encode(RecordFormat::Full);
            mapper
                .map(&tickstream_streams::Record {
                    topic: &raw,
                    partition: 0,
                    offset: 1000 + i as i64,
                    timestamp: None,
                    key: None,
                    value: Some(&value),
                })
                .expect("valid records")
        })
        .collect();
    let report = writer.write_batch(&batch).await.expect("MongoDB is up");
    assert_eq!(report.total_written(), 2);
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(
        (report.rejected[0].index, report.rejected[0].code),
        (1, 121)
    );
    let again = writer.write_batch(&batch).await.expect("MongoDB is up");
    assert_eq!(
        (
            again.total_written(),
            again.total_duplicates(),
            again.rejected.len()
        ),
        (0, 2, 1)
    );

    // Through Kafka: the refused record lands on the DLQ with the reason, the others stored.
    let records: Vec<(String, String, Vec<u8>, i64)> = [10.0, 5000.0, 20.0]
        .iter()
        .enumerate()
        .map(|(i, price)| {
            let ts = 1_700_000_100_000 + i as i64;
            let tick = RawTick::new(Symbol::new("BTCUSDT").expect("valid"), *price).with_ts(ts);
            (
                raw.clone(),
                "BTCUSDT".to_owned(),
                tick.encode(RecordFormat::Full),
                ts,
            )
        })
        .collect();
    produce_all(&producer(&brokers, &[]), records).await;
    let (stop, handle, metrics) = spawn_sink(&topology.topology, writer);
    let dlq = &topology.topology.topics.dead_letter;
    assert_eq!(
        sink_query::dead_letter_code(dlq).await,
        tickstream_sink::MONGODB_REJECTED
    );
    wait_for_documents(&db.collection::<Document>("prices"), 4).await;
    let dead = read_all_committed(dlq, 1);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].1.contains("5000"), "the original record: {dead:?}");
    assert_eq!(
        metrics
            .dead_letter_records
            .with_label_values(&[tickstream_sink::MONGODB_REJECTED])
            .get(),
        1
    );
    stop.request();
    handle.await.expect("the sink task").expect("a clean stop");
    db.drop().await.expect("drop the test database");
}
