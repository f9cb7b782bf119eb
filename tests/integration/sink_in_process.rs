//! The sink's loop over the in-process transport (`tickstream run`'s sink), against a real
//! mongod: what MongoDB refuses is dead-lettered with the record's own headers, the rest is
//! written once, and the input is released only once MongoDB acknowledged it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use tickstream_model::{RawTick, RecordFormat, Symbol, Topology};
use tickstream_sink::{InProcessSink, MONGODB_REJECTED, MongoWriter, RecordObserver};
use tickstream_streams::{InMemoryBroker, Shutdown, StoredRecord, dlq_headers};

use super::sink_mongod::PrivateMongod;
use crate::support::{PROGRESS_TIMEOUT, unique_name};

/// What the sink showed its observer (`run`'s files, here in memory).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<SeenState>>);

#[derive(Default)]
struct SeenState {
    records: usize,
    dead_letters: Vec<StoredRecord>,
}

impl Seen {
    fn state(&self) -> std::sync::MutexGuard<'_, SeenState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RecordObserver for Seen {
    fn on_record(&mut self, _topic: &str, _record: &StoredRecord) -> std::io::Result<()> {
        self.state().records += 1;
        Ok(())
    }

    fn on_dead_letter(&mut self, letter: &StoredRecord) -> std::io::Result<()> {
        self.state().dead_letters.push(letter.clone());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The test topology of application `app`, `extra` TOML (tables) appended.
fn topology_toml(app: &str, extra: &str) -> String {
    format!(
        r#"
application_id = "{app}"
symbols = ["BTCUSDT", "ETHUSDT"]
[topics]
raw = "{app}.raw"
moving_average = "{app}.ma"
volatility = "{app}.vol"
jumps = "{app}.jumps"
dead_letter = "{app}.dlq"
partitions = 2
[mongodb]
database = "{app}"
batch_size = 100
batch_interval = "50ms"
{extra}
"#
    )
}

fn topology(app: &str) -> Topology {
    Topology::from_str(&topology_toml(app, "")).expect("a valid topology")
}

/// `count` ticks from `first` on (prices below the validator's 1000), keyed by symbol.
fn ticks(first: usize, count: usize) -> Vec<StoredRecord> {
    (first..first + count)
        .map(|i| {
            let symbol = ["BTCUSDT", "ETHUSDT"][i % 2];
            let tick = RawTick::new(Symbol::new(symbol).expect("valid"), 10.0 + i as f64 / 100.0)
                .with_ts(1_700_000_000_000 + i as i64);
            StoredRecord {
                key: Some(symbol.as_bytes().to_vec()),
                value: tick.encode(RecordFormat::Full),
                timestamp: Some(1_700_000_000_000 + i as i64),
                headers: Vec::new(),
            }
        })
        .collect()
}

/// Polls `done` until it holds; fails naming `what` after [`PROGRESS_TIMEOUT`].
async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{what} within {PROGRESS_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_sink_dead_letters_refusals_writes_once_and_releases_after_mongodb_acknowledged()
 {
    const FIRST: usize = 200;
    const SECOND: usize = 100;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mongod = PrivateMongod::start(dir.path()).await;
    // A write to a stopped mongod fails within a second, not the writer's default 5 s.
    let uri = format!("{}&serverSelectionTimeoutMS=1000", mongod.uri());
    let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
    let topology = topology(&unique_name("sink-in-process"));
    let raw = topology.raw_topics()[0].to_owned();
    let db = client.database(&topology.mongodb.database);
    // A validator standing in for any content rule MongoDB enforces.
    db.create_collection("prices")
        .validator(doc! { "price": { "$lt": 1000.0 } })
        .await
        .expect("create the validated collection");
    let prices = db.collection::<Document>("prices");

    let broker = InMemoryBroker::new();
    let mut topics: Vec<String> = vec![raw.clone(), topology.topics.dead_letter.clone()];
    topics.extend(topology.derived_topics().into_iter().map(str::to_owned));
    for topic in &topics {
        broker.create_topic(topic, 2);
    }
    let seen = Seen::default();
    let writer = MongoWriter::connect(&uri, &topology)
        .await
        .expect("a valid URI");
    let sink = InProcessSink::new(Arc::clone(&broker), &topology, Some(writer), seen.clone())
        .expect("the sink's topics exist");
    let metrics = sink.metrics();
    let handle = tokio::spawn(sink.run(Shutdown::new()));

    // First: valid ticks and one MongoDB refuses, which carries a header of its own.
    let mut first = ticks(0, FIRST);
    let refused = RawTick::new(Symbol::new("BTCUSDT").expect("valid"), 5000.0)
        .with_ts(1_700_000_000_000)
        .encode(RecordFormat::Full);
    first.push(StoredRecord {
        key: Some(b"BTCUSDT".to_vec()),
        value: refused.clone(),
        timestamp: Some(1_700_000_000_000),
        headers: vec![("traceparent".to_owned(), "00-abc-01".to_owned())],
    });
    broker.produce_async(&raw, first).await.expect("produce");
    wait_until("the first records released", async || {
        broker.usage(&raw).expect("the topic").records == 0
    })
    .await;
    // Released, hence acknowledged before: every document is there already.
    let stored = prices.count_documents(doc! {}).await.expect("count");
    assert_eq!(stored, FIRST as u64, "released before MongoDB acknowledged");
    {
        let state = seen.state();
        assert_eq!(state.dead_letters.len(), 1, "the refused record only");
        let letter = &state.dead_letters[0];
        assert_eq!(letter.value, refused, "the record unchanged");
        assert_eq!(
            letter.headers[0],
            ("traceparent".to_owned(), "00-abc-01".to_owned()),
            "its own headers first"
        );
        let header = |name: &str| {
            letter
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header(dlq_headers::ERROR_CODE), Some(MONGODB_REJECTED));
        assert_eq!(header(dlq_headers::SOURCE_TOPIC), Some(raw.as_str()));
        let application = format!("{}-sink", topology.application_id);
        assert_eq!(header(dlq_headers::APPLICATION), Some(application.as_str()));
    }

    // Then MongoDB goes away: what is read meanwhile stays in the transport, uncommitted.
    mongod.stop();
    broker
        .produce_async(&raw, ticks(FIRST, SECOND))
        .await
        .expect("produce");
    wait_until(
        "the second records read and their write failed",
        async || seen.state().records == FIRST + 1 + SECOND && metrics.mongodb_up.get() == 0,
    )
    .await;
    assert_eq!(
        broker.usage(&raw).expect("the topic").records,
        SECOND,
        "read but not acknowledged: nothing released"
    );

    // MongoDB is back and the producers end: the sink writes the rest and ends by itself.
    mongod.restart().await;
    for topic in &topics {
        broker.close(topic);
    }
    tokio::time::timeout(PROGRESS_TIMEOUT, handle)
        .await
        .expect("the sink ends with its input")
        .expect("the sink task")
        .expect("a clean end");
    assert_eq!(broker.usage(&raw).expect("the topic").records, 0);
    assert_eq!(
        prices.count_documents(doc! {}).await.expect("count"),
        (FIRST + SECOND) as u64,
        "every valid record, once"
    );
    assert_eq!(seen.state().dead_letters.len(), 1, "no second dead letter");
    mongod.stop();
}

/// `tickstream run --mongodb-uri` over a finite replay: every record of every results file is in
/// MongoDB, once, when `run` has exited 0 by itself.
#[test]
fn tickstream_run_writes_every_result_to_mongodb_before_it_exits() {
    use tickstream_model::EventKind;

    const TICKS: usize = 3_000;
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let client = runtime.block_on(crate::support::require_mongodb());
    let dir = tempfile::tempdir().expect("temp dir");
    let app = unique_name("run-mongodb");
    let replay = dir.path().join("ticks.jsonl");
    let lines: Vec<String> = ticks(0, TICKS)
        .into_iter()
        .map(|t| String::from_utf8(t.value).expect("JSON is UTF-8"))
        .collect();
    std::fs::write(&replay, lines.join("\n") + "\n").expect("write the replay file");
    let source = format!(
        "[[windows]]\nkind = \"count\"\nsize = 20\n\
         [source]\nkind = \"replay\"\npath = \"{}\"\nspeed = \"max\"",
        replay.display()
    );
    let toml = topology_toml(&app, &source);
    let topology_path = dir.path().join("topology.toml");
    std::fs::write(&topology_path, &toml).expect("write the topology");
    let topology = Topology::from_str(&toml).expect("a valid topology");
    let data = dir.path().join("data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(["run", "--source", "topology", "--topology"])
        .arg(&topology_path)
        .arg("--data-dir")
        .arg(&data)
        .args(["--mongodb-uri", &crate::support::mongodb_uri()])
        .output()
        .expect("run tickstream run");
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "run exits 0 at the end of the file:\n{log}"
    );

    let lines_of = |topic: &str| {
        std::fs::read_to_string(data.join(format!("{topic}.jsonl")))
            .unwrap_or_default()
            .lines()
            .count() as u64
    };
    let db = client.database(&app);
    let count = |collection: &str| {
        runtime
            .block_on(async {
                db.collection::<Document>(collection)
                    .count_documents(doc! {})
                    .await
            })
            .expect("count")
    };
    assert_eq!(lines_of(topology.raw_topics()[0]), TICKS as u64);
    assert_eq!(count("prices"), TICKS as u64, "every tick, once:\n{log}");
    for kind in topology.event_kinds() {
        let lines = lines_of(topology.topic(kind));
        assert_eq!(
            count(topology.collection(kind)),
            lines,
            "{kind:?}: MongoDB holds what the file holds"
        );
    }
    assert!(lines_of(topology.topic(EventKind::MovingAverage)) > 0);
    assert_eq!(
        lines_of(&topology.topics.dead_letter),
        0,
        "nothing dead-lettered"
    );
    runtime
        .block_on(async { db.drop().await })
        .expect("drop the test database");
}
