//! Outages under running processors, as users run them (the real binary): a broker of the
//! test's own (`PrivateBroker`) stopped for 10 s under ingest and under the sink (ridden out:
//! not ready meanwhile, ready again after, nothing lost or doubled downstream), and outages
//! beyond `processing.give_up_after` (the process exits non-zero, an ERROR line naming the
//! cause).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Document, doc};
use tickstream_ingest::synthetic::PriceWalk;
use tickstream_model::topology::SourceConfig;
use tickstream_model::{DecodeOptions, RawTick, RecordFormat, Topology};
use tickstream_sink::RawPriceId;
use tickstream_streams::partitioner::partition_for;

use crate::processes::{Consumed, read_to_end, readyz, start, wait_for_exit, wait_ready};
use crate::sink::sink_mongod::PrivateMongod;
use crate::sink::{Produced, full_ticks, produce_all};
use crate::support::{
    ChildProcess, PrivateBroker, create_topic, free_local_address, kafka_brokers, metric,
    mongodb_uri, producer, require_kafka, require_mongodb, unique_name,
};

/// The tests that run a broker of their own take turns: on a small machine, two JVM brokers
/// restarting at once besides the shared services slow everything past the tests' bounds.
pub(crate) static PRIVATE_BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the broker stays down in the ride-out tests.
const OUTAGE: Duration = Duration::from_secs(10);
/// Start-up, recovery and other waits on an event: generous, never the test's pace.
const EVENT: Duration = Duration::from_secs(30);
const SYMBOLS: [&str; 3] = ["BTCUSDT", "ETHUSDT", "SOLUSDT"];

fn write_topology(dir: &Path, toml: &str) -> (PathBuf, Topology) {
    let topology = Topology::from_str(toml).expect("a valid topology");
    let path = dir.join(format!("{}.toml", topology.application_id));
    std::fs::write(&path, toml).expect("write the topology");
    (path, topology)
}

/// Stops the broker (blocking ~2 s) without stalling the runtime's other tasks.
fn broker_down(broker: &PrivateBroker) -> Instant {
    let stopped = Instant::now();
    tokio::task::block_in_place(|| broker.down());
    stopped
}

fn broker_up(broker: &PrivateBroker) {
    tokio::task::block_in_place(|| broker.up());
}

/// Holds the outage until `OUTAGE` has passed since `stopped`, checking every 100 ms that the
/// process keeps running and says it is not ready (the duration is what is being tested, not
/// a synchronisation).
async fn ride_out(stopped: Instant, process: &mut ChildProcess, metrics: std::net::SocketAddr) {
    while stopped.elapsed() < OUTAGE {
        process.assert_running();
        assert_eq!(
            readyz(metrics),
            Some(503),
            "/readyz during the outage; log:\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number in the ingest's last "every tick acknowledged delivered=N" line.
fn delivered_in_log(log: &Path) -> u64 {
    let text = std::fs::read_to_string(log).expect("read the ingest log");
    text.lines()
        .rev()
        .find(|line| line.contains("every tick acknowledged"))
        .and_then(|line| line.split("delivered=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no delivered= count in the ingest log:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rides_out_a_broker_outage_and_every_tick_lands_once() {
    let _turn = PRIVATE_BROKER.lock().await;
    let broker = tokio::task::block_in_place(PrivateBroker::start);
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().expect("temp dir");
    let app = unique_name("ingest-outage");
    let raw = format!("{app}.raw");
    create_topic(&brokers, &raw, 3).await;
    let (path, topology) = write_topology(
        dir.path(),
        &format!(
            r#"
application_id = "{app}"
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
[topics]
raw = "{raw}"
compression = {{ raw = "gzip" }}
[source]
kind = "synthetic"
seed = 7
ticks_per_second = 40
[processing]
give_up_after = "2m"
"#
        ),
    );
    let metrics = free_local_address();
    let log = dir.path().join("ingest.log");
    let mut ingest = start("ingest", &path, &brokers, None, metrics, &log);
    wait_ready(metrics, true, &mut ingest, EVENT).await;
    let produced = |m| metric(m, "tickstream_ingest_ticks_produced_total", "BTCUSDT");
    let started = Instant::now();
    while produced(metrics).unwrap_or(0.0) < 10.0 {
        ingest.assert_running();
        assert!(
            started.elapsed() < EVENT,
            "no ticks acknowledged before the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let down_ms = tickstream_ingest::metrics::now_ms();
    let stopped = broker_down(&broker);
    let noticed = wait_ready(metrics, false, &mut ingest, EVENT).await;
    eprintln!("ingest not ready {noticed:?} after the broker stopped");
    ride_out(stopped, &mut ingest, metrics).await;
    let up_ms = tickstream_ingest::metrics::now_ms();
    broker_up(&broker);
    let recovered = wait_ready(metrics, true, &mut ingest, EVENT).await;
    eprintln!("ingest ready again {recovered:?} after the broker answered");
    ingest.assert_running();
    let status = ingest.terminate();
    assert!(status.success(), "SIGTERM → flush → exit 0, got {status}");

    let delivered = delivered_in_log(&log);
    let records = read_to_end(&brokers, &raw, 3);
    assert_eq!(
        records.len() as u64,
        delivered,
        "as many records as acknowledged ticks"
    );
    // The walk is seeded: the n-th tick of each symbol has a known price. Every symbol's
    // records, in offset order, must be exactly its first ticks: none missing, none twice.
    let SourceConfig::Synthetic(config) = &topology.source else {
        panic!("a synthetic source");
    };
    let mut walk = PriceWalk::new(&topology.symbols, config);
    let decode = DecodeOptions::new();
    let round_trip = |symbol, price| {
        decode
            .decode(&RawTick::new(symbol, price).encode(RecordFormat::Full))
            .expect("a valid tick")
            .price
    };
    let mut expected: HashMap<String, Vec<f64>> = HashMap::new();
    for _ in 0..records.len() + SYMBOLS.len() {
        let (symbol, price) = walk.next_tick();
        expected
            .entry(symbol.as_str().to_owned())
            .or_default()
            .push(round_trip(symbol, price));
    }
    let mut seen: HashMap<String, Vec<f64>> = HashMap::new();
    let mut during_outage = 0;
    for Consumed {
        partition,
        key,
        value,
        ..
    } in &records
    {
        let tick = decode.decode(value).expect("a valid raw tick");
        let key = key.clone().expect("keyed by symbol");
        assert_eq!(key, tick.symbol.as_str(), "key = symbol");
        assert_eq!(
            *partition,
            partition_for(key.as_bytes(), 3),
            "Kafka's default (murmur2) partition for {key}"
        );
        if tick.ts.is_some_and(|ts| ts > down_ms && ts < up_ms) {
            during_outage += 1;
        }
        seen.entry(key).or_default().push(tick.price);
    }
    for symbol in SYMBOLS {
        let got = seen.get(symbol).map(Vec::as_slice).unwrap_or_default();
        let want = &expected[symbol];
        assert!(
            got.len() <= want.len(),
            "{symbol}: {} records, more than its turns",
            got.len()
        );
        let first_difference = got.iter().zip(want).position(|(a, b)| a != b);
        assert_eq!(
            first_difference,
            None,
            "{symbol}: {} records, not the walk's first ticks in order",
            got.len()
        );
    }
    let counts: Vec<usize> = SYMBOLS.iter().map(|s| seen[*s].len()).collect();
    assert!(
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1,
        "the symbols take turns, so no tick between two delivered ones is missing: {counts:?}"
    );
    assert!(
        during_outage >= 100,
        "the source kept its pace while the broker was away: only {during_outage} ticks \
         stamped during the outage (~40/s expected)"
    );
}

/// Polls until `collection` holds at least `count` documents, within `limit`.
async fn wait_for_count(
    collection: &Collection<Document>,
    count: u64,
    process: &mut ChildProcess,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let stored = collection.count_documents(doc! {}).await.expect("count");
        if stored >= count {
            return;
        }
        process.assert_running();
        assert!(
            started.elapsed() < limit,
            "{stored} of {count} documents after {limit:?}; log:\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A topology whose every topic exists on `brokers`; its analytics topics are empty.
async fn sink_topology(
    dir: &Path,
    brokers: &str,
    prefix: &str,
    give_up_after: &str,
) -> (PathBuf, Topology) {
    let app = unique_name(prefix);
    let (path, topology) = write_topology(
        dir,
        &format!(
            r#"
application_id = "{app}"
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
[topics]
raw = "{app}.raw"
moving_average = "{app}.ma"
volatility = "{app}.vol"
jumps = "{app}.jumps"
dead_letter = "{app}.dlq"
[source]
kind = "synthetic"
ticks_per_second = 20
[mongodb]
database = "{app}"
batch_interval = "100ms"
[processing]
give_up_after = "{give_up_after}"
"#
        ),
    );
    for topic in ["raw", "ma", "vol", "jumps", "dlq"] {
        let partitions = if topic == "raw" { 2 } else { 1 };
        create_topic(brokers, &format!("{app}.{topic}"), partitions).await;
    }
    (path, topology)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_rides_out_a_broker_outage_and_stores_every_record_once() {
    const CHUNKS: u64 = 40;
    const CHUNK: u64 = 100;
    let mongo = require_mongodb().await;
    let _turn = PRIVATE_BROKER.lock().await;
    let broker = tokio::task::block_in_place(PrivateBroker::start);
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, topology) = sink_topology(dir.path(), &brokers, "sink-outage", "2m").await;
    let raw = topology.raw_topics()[0].to_owned();
    let prices = mongo
        .database(&topology.mongodb.database)
        .collection::<Document>("prices");

    let metrics = free_local_address();
    let mut sink = start(
        "sink",
        &path,
        &brokers,
        Some(&mongodb_uri()),
        metrics,
        &dir.path().join("sink.log"),
    );
    wait_ready(metrics, true, &mut sink, EVENT).await;
    // Records keep coming through the outage: a chunk every 250 ms; the test's own producer
    // buffers what it cannot deliver meanwhile.
    let stream_producer = producer(&brokers, &[("message.timeout.ms", "120000")]);
    let stream_topic = raw.clone();
    let stream = tokio::spawn(async move {
        let mut produced: Vec<Produced> = Vec::new();
        for chunk in 0..CHUNKS {
            let ticks = full_ticks(&stream_topic, chunk * CHUNK, CHUNK, 1_700_000_000_000);
            produced.extend(produce_all(&stream_producer, ticks).await);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        produced
    });
    wait_for_count(&prices, 5 * CHUNK, &mut sink, EVENT).await;

    let stopped = broker_down(&broker);
    let noticed = wait_ready(metrics, false, &mut sink, EVENT).await;
    eprintln!("sink not ready {noticed:?} after the broker stopped");
    ride_out(stopped, &mut sink, metrics).await;
    broker_up(&broker);
    let recovered = wait_ready(metrics, true, &mut sink, EVENT).await;
    eprintln!("sink ready again {recovered:?} after the broker answered");

    let produced = stream.await.expect("the producing task");
    assert_eq!(produced.len() as u64, CHUNKS * CHUNK);
    // What the topic holds is what the sink must store: every record there, once.
    let decode = DecodeOptions::new();
    let expected: HashSet<RawPriceId> = read_to_end(&brokers, &raw, 2)
        .iter()
        .map(|r| {
            let ts = decode
                .decode(&r.value)
                .expect("a valid tick")
                .ts
                .expect("full ticks carry ts");
            RawPriceId::new(&raw, r.partition, r.offset, ts)
        })
        .collect();
    let acknowledged: HashSet<RawPriceId> = produced.iter().map(Produced::id).collect();
    assert!(
        acknowledged.is_subset(&expected),
        "every record the test's producer had acknowledged is in the topic"
    );
    if expected.len() != produced.len() {
        // Not the sink's doing: the test's own producer wrote copies across the restart
        // (seen under heavy parallel load). The sink must still store each record once.
        eprintln!(
            "note: the topic holds {} records for {} produced",
            expected.len(),
            produced.len()
        );
    }
    wait_for_count(&prices, expected.len() as u64, &mut sink, EVENT).await;
    sink.assert_running();
    let status = sink.terminate();
    assert!(status.success(), "SIGTERM → exit 0, got {status}");

    let stored: Vec<RawPriceId> = prices
        .find(doc! {})
        .projection(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect::<Vec<Document>>()
        .await
        .expect("read ids")
        .iter()
        .map(|d| RawPriceId::from_bson(d.get("_id").expect("an _id")).expect("a raw price id"))
        .collect();
    let distinct: HashSet<&RawPriceId> = stored.iter().collect();
    assert_eq!(stored.len(), distinct.len(), "no record stored twice");
    assert_eq!(
        distinct,
        expected.iter().collect(),
        "every record of the topic stored, nothing else"
    );
    mongo
        .database(&topology.mongodb.database)
        .drop()
        .await
        .expect("drop the test database");
}

/// The ERROR line a process wrote when it gave up, if any.
fn give_up_line(log: &Path, what: &str) -> Option<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .find(|line| line.contains("ERROR") && line.contains(what))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_beyond_give_up_after_stops_ingest_and_sink_naming_it() {
    let mongo = require_mongodb().await;
    let _turn = PRIVATE_BROKER.lock().await;
    let broker = tokio::task::block_in_place(PrivateBroker::start);
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, topology) = sink_topology(dir.path(), &brokers, "give-up", "10s").await;
    let (ingest_metrics, sink_metrics) = (free_local_address(), free_local_address());
    let ingest_log = dir.path().join("ingest.log");
    let sink_log = dir.path().join("sink.log");
    let mut ingest = start("ingest", &path, &brokers, None, ingest_metrics, &ingest_log);
    let mut sink = start(
        "sink",
        &path,
        &brokers,
        Some(&mongodb_uri()),
        sink_metrics,
        &sink_log,
    );
    wait_ready(ingest_metrics, true, &mut ingest, EVENT).await;
    wait_ready(sink_metrics, true, &mut sink, EVENT).await;

    let stopped = broker_down(&broker);
    let (ingest_status, sink_status) = tokio::join!(
        wait_for_exit(ingest, Duration::from_secs(45)),
        wait_for_exit(sink, Duration::from_secs(45)),
    );
    let took = stopped.elapsed();
    let unreachable = format!("Kafka at {brokers} unreachable for");
    for (what, status, log) in [
        ("ingest", ingest_status, &ingest_log),
        ("sink", sink_status, &sink_log),
    ] {
        assert!(!status.success(), "{what} must exit non-zero, got {status}");
        let line = give_up_line(log, &unreachable).unwrap_or_else(|| {
            panic!(
                "no ERROR line naming {unreachable:?} in the {what} log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        assert!(line.contains("give_up_after"), "{what}: {line}");
    }
    assert!(
        took >= Duration::from_secs(8),
        "gave up after {took:?}: before give_up_after = 10s"
    );
    mongo
        .database(&topology.mongodb.database)
        .drop()
        .await
        .expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_outage_beyond_give_up_after_stops_the_sink_naming_it() {
    let brokers = require_kafka();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mongod = PrivateMongod::start(dir.path()).await;
    let (path, _topology) =
        sink_topology(dir.path(), &kafka_brokers(), "give-up-mongodb", "10s").await;
    let metrics = free_local_address();
    let log = dir.path().join("sink.log");
    let mut sink = start("sink", &path, &brokers, Some(&mongod.uri()), metrics, &log);
    wait_ready(metrics, true, &mut sink, EVENT).await;
    let stopped = Instant::now();
    mongod.stop();
    let status = wait_for_exit(sink, Duration::from_secs(45)).await;
    let took = stopped.elapsed();
    assert!(
        !status.success(),
        "the sink must exit non-zero, got {status}"
    );
    let unreachable = format!("MongoDB at 127.0.0.1:{} unreachable for", mongod.port);
    let line = give_up_line(&log, &unreachable).unwrap_or_else(|| {
        panic!(
            "no ERROR line naming {unreachable:?} in the sink log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(line.contains("give_up_after"), "{line}");
    assert!(took >= Duration::from_secs(9), "gave up after {took:?}");
}
