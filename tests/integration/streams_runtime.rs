//! The streams runtime against the real broker: exactly-once through SIGKILLs, restore after
//! losing local state, two instances splitting and handing over partitions, and dead-lettering.
//!
//! The application (`counting_app`) emits `value-i@count` per input `value-i`; inputs use key
//! `key-(i % KEYS)`, so input `i` is the `i / KEYS + 1`-th of its key: every expected output is
//! known in closed form, and any lost, doubled or mis-restored record fails the comparison.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::counting_app::{App, AppSettings};
use crate::support::{
    create_topic, kafka_brokers, produce_keyed, producer, require_kafka, unique_name,
};

const KEYS: u32 = 100;
/// How long any wait for the application's output may take.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(180);

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(future)
}

fn free_local_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
}

/// Topics and settings of one test's application.
fn settings(prefix: &str, state_dir: &Path, partitions: i32) -> AppSettings {
    let brokers = kafka_brokers();
    let settings = AppSettings {
        application_id: unique_name(prefix),
        input: unique_name(&format!("{prefix}-in")),
        output: unique_name(&format!("{prefix}-out")),
        state_dir: state_dir.to_owned(),
        exactly_once: true,
        http: free_local_address(),
    };
    block_on(create_topic(&brokers, &settings.input, partitions));
    block_on(create_topic(&brokers, &settings.output, partitions));
    settings
}

fn produce(topic: &str, values: Range<u32>) {
    let brokers = kafka_brokers();
    block_on(produce_keyed(&producer(&brokers, &[]), topic, values, KEYS));
}

/// `value-i` ↦ `i / KEYS + 1` for every input of `values`.
fn expected(values: Range<u32>) -> HashMap<String, u64> {
    values
        .map(|i| (format!("value-{i}"), u64::from(i / KEYS) + 1))
        .collect()
}

fn read_committed_consumer(topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        // assign() needs a group id; this reader never joins the group nor commits.
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer config");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// Follows the committed output while the application works, to time the kills.
struct Progress {
    consumer: BaseConsumer,
    seen: usize,
}

impl Progress {
    fn new(topic: &str, partitions: i32) -> Self {
        Self {
            consumer: read_committed_consumer(topic, partitions),
            seen: 0,
        }
    }

    /// Returns once at least `count` committed outputs exist; fails with the app's log if the
    /// output stops growing.
    fn wait_for(&mut self, count: usize, app: &mut App) {
        let mut last_growth = Instant::now();
        while self.seen < count {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(_)) => {
                    self.seen += 1;
                    last_growth = Instant::now();
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    app.assert_running();
                    assert!(
                        last_growth.elapsed() < PROGRESS_TIMEOUT,
                        "output stuck at {} of {count} for {PROGRESS_TIMEOUT:?}; app log:\n{}",
                        self.seen,
                        app.log_tail()
                    );
                }
                Some(Err(error)) => panic!("reading the output failed: {error}"),
            }
        }
    }
}

/// Every committed record of `topic`, read from the beginning to the end of each partition.
fn read_all_committed(topic: &str, partitions: i32) -> Vec<(String, String)> {
    let consumer = read_committed_consumer(topic, partitions);
    let mut at_end = HashSet::new();
    let mut records = Vec::new();
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while at_end.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "reading {topic} to its end took over {PROGRESS_TIMEOUT:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
                records.push((text(message.key()), text(message.payload())));
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => panic!("reading {topic} failed: {error}"),
            None => {}
        }
    }
    records
}

/// Each expected output exactly once, with the right count, and nothing else.
fn assert_exactly_once(outputs: &[(String, String)], expected: &HashMap<String, u64>) {
    let mut seen: HashMap<&str, u64> = HashMap::new();
    let mut problems = Vec::new();
    for (key, output) in outputs {
        let Some((value, count)) = output.rsplit_once('@') else {
            problems.push(format!("malformed output {output:?}"));
            continue;
        };
        let count: u64 = count.parse().unwrap_or(0);
        match expected.get(value) {
            Some(&want) if want == count => {}
            Some(&want) => {
                problems.push(format!("{key}: {value} counted {count}, expected {want}"))
            }
            None => problems.push(format!("{key}: unexpected output {output:?}")),
        }
        if seen.insert(value, count).is_some() {
            problems.push(format!("{value} emitted twice"));
        }
    }
    let missing = expected
        .keys()
        .filter(|v| !seen.contains_key(v.as_str()))
        .count();
    if missing > 0 {
        problems.push(format!("{missing} inputs have no output"));
    }
    assert!(
        problems.is_empty(),
        "{} problems in {} outputs (first 10): {:#?}",
        problems.len(),
        outputs.len(),
        &problems[..problems.len().min(10)]
    );
}

/// A small reproducible generator for kill moments; the seed is printed to rerun a failure.
fn kill_points(total: usize) -> Vec<usize> {
    let seed = std::env::var("TICKSTREAM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("kill points seed: TICKSTREAM_TEST_SEED={seed}");
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1000) as f64 / 1000.0
    };
    [(0.05, 0.25), (0.30, 0.55), (0.60, 0.85)]
        .iter()
        .map(|(low, high)| ((low + (high - low) * next()) * total as f64) as usize)
        .collect()
}

#[test]
fn exactly_once_holds_through_repeated_sigkills() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings("crash", &dir.path().join("state"), 4);
    const TOTAL: u32 = 200_000;
    produce(&settings.input, 0..TOTAL);

    let mut progress = Progress::new(&settings.output, 4);
    let mut app = App::start(&settings, &dir.path().join("app-0.log"));
    for (round, point) in kill_points(TOTAL as usize).into_iter().enumerate() {
        progress.wait_for(point, &mut app);
        eprintln!(
            "SIGKILL {} after {} committed outputs",
            round + 1,
            progress.seen
        );
        app.kill();
        app = App::start(
            &settings,
            &dir.path().join(format!("app-{}.log", round + 1)),
        );
    }
    progress.wait_for(TOTAL as usize, &mut app);
    let log = app.log_tail();
    assert!(
        app.terminate().success(),
        "graceful stop failed; log:\n{log}"
    );

    assert_exactly_once(
        &read_all_committed(&settings.output, 4),
        &expected(0..TOTAL),
    );
}

#[test]
fn lost_local_state_is_restored_from_the_changelog() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let settings = settings("restore", &state_dir, 2);
    produce(&settings.input, 0..10_000);
    let mut progress = Progress::new(&settings.output, 2);
    let mut app = App::start(&settings, &dir.path().join("first.log"));
    progress.wait_for(10_000, &mut app);
    assert!(app.terminate().success());

    std::fs::remove_dir_all(&state_dir).expect("delete the state dir");
    produce(&settings.input, 10_000..20_000);
    let mut app = App::start(&settings, &dir.path().join("second.log"));
    progress.wait_for(20_000, &mut app);
    assert!(app.terminate().success());

    // Counts continue where the first run left them: the state came back from the changelog.
    assert_exactly_once(
        &read_all_committed(&settings.output, 2),
        &expected(0..20_000),
    );
}

/// The value of an unlabelled-by-us metric line, e.g. `tickstream_assigned_partitions`.
fn metric(address: SocketAddr, name: &str, label_filter: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(label_filter))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Waits (polling the endpoint, bounded) until `condition` holds for the metric.
fn wait_for_metric(
    app: &mut App,
    address: SocketAddr,
    name: &str,
    label: &str,
    condition: impl Fn(f64) -> bool,
) {
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while !metric(address, name, label).is_some_and(&condition) {
        app.assert_running();
        assert!(
            Instant::now() < deadline,
            "{name} never met the condition; log:\n{}",
            app.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_instances_split_the_work_and_one_takes_over_when_the_other_stops() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = settings("rebalance", &dir.path().join("a"), 4);
    let second = AppSettings {
        state_dir: dir.path().join("b"),
        http: free_local_address(),
        ..first.clone()
    };
    const TOTAL: u32 = 100_000;
    produce(&first.input, 0..TOTAL);

    let mut progress = Progress::new(&first.output, 4);
    let mut a = App::start(&first, &dir.path().join("a.log"));
    let mut b = App::start(&second, &dir.path().join("b.log"));
    wait_for_metric(
        &mut b,
        second.http,
        "tickstream_assigned_partitions",
        "",
        |n| n > 0.0,
    );
    wait_for_metric(
        &mut a,
        first.http,
        "tickstream_assigned_partitions",
        "",
        |n| n > 0.0,
    );
    progress.wait_for(TOTAL as usize / 3, &mut a);
    assert!(
        b.terminate().success(),
        "the stopped instance exits cleanly"
    );
    // The survivor takes every partition, restoring the tasks the other one ran.
    wait_for_metric(
        &mut a,
        first.http,
        "tickstream_assigned_partitions",
        "",
        |n| n == 4.0,
    );
    progress.wait_for(TOTAL as usize, &mut a);
    assert!(a.terminate().success());

    assert_exactly_once(&read_all_committed(&first.output, 4), &expected(0..TOTAL));
}

/// A record the processor rejects.
const POISON: &[u8] = b"poison";

#[test]
fn a_poison_record_goes_to_the_dead_letter_topic_and_processing_continues() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings("poison", &dir.path().join("state"), 1);
    let brokers = kafka_brokers();
    block_on(async {
        let producer = producer(&brokers, &[]);
        produce_keyed(&producer, &settings.input, 0..5, KEYS).await;
        // No key: the counting processor cannot count it and rejects it.
        let record = rdkafka::producer::FutureRecord::<(), _>::to(&settings.input).payload(POISON);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("poison delivered");
        produce_keyed(&producer, &settings.input, 5..10, KEYS).await;
    });
    let mut progress = Progress::new(&settings.output, 1);
    let mut app = App::start(&settings, &dir.path().join("app.log"));
    progress.wait_for(10, &mut app);
    wait_for_metric(
        &mut app,
        settings.http,
        "tickstream_dead_letter_records_total",
        "reason=\"missing_key\"",
        |n| n == 1.0,
    );
    let log = app.log_tail();
    assert!(
        app.terminate().success(),
        "SIGTERM exits 0 after committing; log:\n{log}"
    );

    assert_exactly_once(&read_all_committed(&settings.output, 1), &expected(0..10));
    let dead = read_committed_consumer(&settings.dead_letter_topic(), 1);
    let message = loop {
        match dead.poll(PROGRESS_TIMEOUT) {
            Some(Ok(message)) => break message,
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            other => panic!("no dead-letter record: {other:?}"),
        }
    };
    assert_eq!(message.key(), None);
    assert_eq!(message.payload(), Some(POISON));
    let headers = message
        .headers()
        .expect("dead-letter records carry headers");
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        header("tickstream.error.code").as_deref(),
        Some("missing_key")
    );
    assert_eq!(
        header("tickstream.source.topic").as_deref(),
        Some(settings.input.as_str())
    );
    assert_eq!(header("tickstream.source.offset").as_deref(), Some("5"));
    assert!(header("tickstream.error.message").is_some_and(|m| m.contains("needs a key")));
}
