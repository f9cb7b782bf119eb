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

use std::time::{Duration, Instant};

mod support;

use tickstream_streams::{
    CountingProcessor, KafkaStreams, ProcessingGuarantee, Shutdown, StreamsConfig,
};

const PARTITIONS: i32 = 4;
const KEYS: usize = 1_000;

fn main() {
    let records = support::setting("TICKSTREAM_BENCH_RECORDS", 1_000_000, 2_000);
    let Some(brokers) = support::broker("commit_path") else {
        return;
    };
    let run_id = std::process::id();
    let input = format!("bench-commit-in-{run_id}");
    support::create_topic(&brokers, &input, PARTITIONS);
    let started = Instant::now();
    support::preload(
        &brokers,
        &input,
        (0..records).map(|i| (format!("key-{}", i % KEYS), format!("value-{i}"))),
    );
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
        let application = format!("bench-commit-{guarantee:?}-{run_id}").to_lowercase();
        support::delete_topics(&brokers, &application);
    }
    support::delete_topics(&brokers, &input);
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
    let shutdown = Shutdown::new();
    let token = shutdown.clone();
    let worker = std::thread::spawn(move || streams.run(&token));

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
    shutdown.request();
    worker
        .join()
        .expect("worker thread")
        .expect("clean shutdown");
    let commits = metrics.commits.get();
    let mean_commit = metrics.commit_seconds.get_sample_sum()
        / metrics.commit_seconds.get_sample_count().max(1) as f64;
    ((records - first) as f64 / elapsed, commits, mean_commit)
}
