//! What the commit path costs: the counting topology (`CountingProcessor`) over the same
//! preloaded records, once at-least-once and once exactly-once, same broker, same run.
//!
//! ```sh
//! make services-up && cargo bench --bench commit_path
//! ```
//!
//! `TICKSTREAM_BENCH_RECORDS` sets the number of records (default 1,000,000; 2,000 when run
//! as a smoke test by `cargo test --all-targets`). Throughput is
//! counted from the first commit to the commit that covers the last record, so it excludes
//! start-up (topic creation, group join) and includes every commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tickstream_streams::{CountingProcessor, KafkaStreams, ProcessingGuarantee, StreamsConfig};

const PARTITIONS: i32 = 4;
const KEYS: usize = 1_000;

fn main() {
    let brokers =
        std::env::var("TICKSTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:39092".into());
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then a small smoke
    // run keeps the harness working without slowing the test suite.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let records: usize = std::env::var("TICKSTREAM_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if benchmarking { 1_000_000 } else { 2_000 });
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("client config");
    if let Err(error) = probe.fetch_metadata(None, Duration::from_secs(5)) {
        eprintln!(
            "commit_path: skipped, no Kafka broker at {brokers} ({error}); start one with `make services-up`"
        );
        return;
    }
    let run_id = std::process::id();
    let input = format!("bench-commit-in-{run_id}");
    create_topic(&brokers, &input);
    let started = Instant::now();
    preload(&brokers, &input, records);
    println!(
        "preloaded {records} records into {input} ({PARTITIONS} partitions) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!("| guarantee | records/s | commits | mean commit |");
    println!("| --- | --- | --- | --- |");
    for guarantee in [
        ProcessingGuarantee::AtLeastOnce,
        ProcessingGuarantee::ExactlyOnce,
    ] {
        let (rate, commits, mean_commit) = run(&brokers, &input, records, guarantee, run_id);
        println!(
            "| {guarantee:?} | {rate:.0} | {commits} | {:.1} ms |",
            mean_commit * 1000.0
        );
    }
}

fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin config");
    let topic = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    let results = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topic");
    for result in results {
        result.expect("topic created");
    }
}

fn preload(brokers: &str, topic: &str, records: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer config");
    for i in 0..records {
        let key = format!("key-{}", i % KEYS);
        let value = format!("value-{i}");
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("preload flushed");
}

/// Runs the counting topology until every record is committed; returns records/s between the
/// first and the last commit, the number of commits and their mean duration (s).
fn run(
    brokers: &str,
    input: &str,
    records: usize,
    guarantee: ProcessingGuarantee,
    run_id: u32,
) -> (f64, u64, f64) {
    let application = format!("bench-commit-{guarantee:?}-{run_id}").to_lowercase();
    let output = format!("{application}-out");
    let state = tempfile::tempdir().expect("state dir");
    let mut config = StreamsConfig::new(&application, brokers, &[input]);
    config.store_name = "counts".into();
    config.output_topics = vec![output.clone()];
    config.state_dir = state.path().to_owned();
    config.processing_guarantee = guarantee;
    let streams = KafkaStreams::new(
        config,
        Box::new(move |_| CountingProcessor::new(output.clone())),
    )
    .expect("valid config");
    let metrics = streams.metrics();
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let worker = std::thread::spawn(move || streams.run(&flag));

    let started = Instant::now();
    let consumed = || metrics.records_consumed.with_label_values(&[input]).get() as usize;
    let deadline = Instant::now() + Duration::from_secs(600);
    while consumed() == 0 {
        assert!(
            Instant::now() < deadline && !worker.is_finished(),
            "no commit within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let (first, first_at) = (consumed(), Instant::now());
    while consumed() < records {
        assert!(
            Instant::now() < deadline && !worker.is_finished(),
            "not done within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // When one commit covered everything (a small smoke run), count from the start instead.
    let (first, elapsed) = if first < records {
        (first, first_at.elapsed().as_secs_f64())
    } else {
        (0, started.elapsed().as_secs_f64())
    };
    shutdown.store(true, Ordering::Relaxed);
    worker
        .join()
        .expect("worker thread")
        .expect("clean shutdown");
    let commits = metrics.commits.get();
    let mean_commit = metrics.commit_seconds.get_sample_sum()
        / metrics.commit_seconds.get_sample_count().max(1) as f64;
    ((records - first) as f64 / elapsed, commits, mean_commit)
}
