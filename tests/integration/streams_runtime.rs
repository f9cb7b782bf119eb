//! The streams runtime against the real broker: exactly-once through SIGKILLs, restore after
//! losing local state, two instances splitting and handing over partitions, and dead-lettering.
//!
//! The application (`counting_app`) emits `value-i@count` per input `value-i`; inputs use key
//! `key-(i % KEYS)`, so input `i` is the `i / KEYS + 1`-th of its key: every expected output is
//! known in closed form, and any lost, doubled or mis-restored record fails the comparison.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use crate::counting_app::{self, AppSettings};
use crate::support::{
    PROGRESS_TIMEOUT, Progress, block_on, create_topic, free_local_address, header, kafka_brokers,
    kill_points, produce_keyed, producer, read_all_committed, read_committed_consumer,
    require_kafka, unique_name, wait_for_metric,
};

const KEYS: u32 = 100;

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

#[test]
fn exactly_once_holds_through_repeated_sigkills() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings("crash", &dir.path().join("state"), 4);
    const TOTAL: u32 = 200_000;
    produce(&settings.input, 0..TOTAL);

    let mut progress = Progress::new(&settings.output, 4);
    let mut app = counting_app::start(&settings, &dir.path().join("app-0.log"));
    for (round, point) in kill_points(TOTAL as usize).into_iter().enumerate() {
        progress.wait_for(point, &mut app);
        eprintln!(
            "SIGKILL {} after {} committed outputs",
            round + 1,
            progress.seen
        );
        app.kill();
        app = counting_app::start(
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
    let mut app = counting_app::start(&settings, &dir.path().join("first.log"));
    progress.wait_for(10_000, &mut app);
    assert!(app.terminate().success());

    std::fs::remove_dir_all(&state_dir).expect("delete the state dir");
    produce(&settings.input, 10_000..20_000);
    let mut app = counting_app::start(&settings, &dir.path().join("second.log"));
    progress.wait_for(20_000, &mut app);
    assert!(app.terminate().success());

    // Counts continue where the first run left them: the state came back from the changelog.
    assert_exactly_once(
        &read_all_committed(&settings.output, 2),
        &expected(0..20_000),
    );
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
    let mut a = counting_app::start(&first, &dir.path().join("a.log"));
    let mut b = counting_app::start(&second, &dir.path().join("b.log"));
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
    let mut app = counting_app::start(&settings, &dir.path().join("app.log"));
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
    let header = |name: &str| header(&message, name);
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
