//! `tickstream enrich` — the real binary — on the real broker: every derived event matches a
//! naive recomputation; SIGKILLs, a lost state dir and a second instance change nothing in
//! the committed outputs; bad ticks go to the dead-letter topic with their reason.
//!
//! Inputs are a seeded random walk with jumps over several symbols, keyed by symbol; the
//! expected outputs come from `tickstream_enrich::naive`, the executable specification.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use tickstream_enrich::naive::{
    self, DerivedRecord, random_walk as ticks, sample_symbols as symbols,
};
use tickstream_model::{EventKind, Symbol, Topology};

use crate::support::{
    ChildProcess, PROGRESS_TIMEOUT, Progress, block_on, create_topic, free_local_address, header,
    kafka_brokers, kill_points, produce_ticks, producer, read_all_committed_on,
    read_committed_consumer, require_kafka, unique_name, wait_for_metric,
};

/// The candles every deployment but the frozen broker's builds: a 10 s interval whose grace
/// keeps two open, and a minute with none. They never close on idle within a test: a restart,
/// a rebalance or a broker outage holds a task's input back for seconds, and a candle closed
/// on idle meanwhile would turn the held-back ticks late (the README's "On idle"). What the
/// tests hold enrich to is then every candle event time closes ([`expected`]).
pub(crate) const CANDLES: &str = r#"
[[candles]]
interval = "10s"
grace = "1s"
close_idle_after = "1h"
[[candles]]
interval = "1m"
grace = "0s"
close_idle_after = "1h"
"#;

/// [`CANDLES`] closing 2 s after their symbol goes quiet: for a test whose input flows without
/// a pause, which then also sees the last candles (closed on idle) arrive.
pub(crate) const IDLE_CANDLES: &str = r#"
[[candles]]
interval = "10s"
grace = "1s"
close_idle_after = "2s"
[[candles]]
interval = "1m"
grace = "0s"
close_idle_after = "2s"
"#;

/// Candles that outlast a test without a tick do not close on idle within it.
const NEVER_IDLE_IN_A_TEST: Duration = Duration::from_secs(600);

/// One enrich deployment: its topology file and topics.
pub(crate) struct Deployment {
    pub(crate) topology: Topology,
    pub(crate) path: PathBuf,
    pub(crate) partitions: i32,
    pub(crate) brokers: String,
}

impl Deployment {
    /// Unique topics and application id; a count window of 20, a 1-minute time window, 2 %
    /// jumps — the default topology's analytics at test scale — and [`CANDLES`].
    pub(crate) fn new(prefix: &str, dir: &Path, symbols: &[Symbol], partitions: i32) -> Self {
        Self::with_candles(prefix, dir, symbols, partitions, CANDLES)
    }

    /// [`Self::new`] with other `[[candles]]`.
    pub(crate) fn with_candles(
        prefix: &str,
        dir: &Path,
        symbols: &[Symbol],
        partitions: i32,
        candles: &str,
    ) -> Self {
        let name = unique_name(prefix);
        Self::with_topics(
            &name,
            dir,
            symbols,
            partitions,
            &format!("raw = \"{name}.raw\""),
            &kafka_brokers(),
            candles,
        )
    }

    /// A deployment whose `[topics]` start with `raw_topics` (TOML lines), on `brokers`, with
    /// `candles` (`[[candles]]` TOML, or none); every raw topic is created with `partitions`
    /// partitions.
    pub(crate) fn with_topics(
        name: &str,
        dir: &Path,
        symbols: &[Symbol],
        partitions: i32,
        raw_topics: &str,
        brokers: &str,
        candles: &str,
    ) -> Self {
        let list: Vec<String> = symbols.iter().map(|s| format!("\"{s}\"")).collect();
        let toml = format!(
            r#"
application_id = "{name}"
symbols = [{symbols}]
[topics]
{raw_topics}
moving_average = "{name}.ma"
volatility = "{name}.vol"
jumps = "{name}.jumps"
candles = "{name}.candles"
dead_letter = "{name}.dlq"
{candles}
[[windows]]
kind = "count"
size = 20
[[windows]]
kind = "time"
span = "1m"
[jumps]
threshold_pct = 2.0
[processing]
commit_interval = "100ms"
"#,
            symbols = list.join(", ")
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, &toml).expect("write the topology");
        let topology = Topology::from_str(&toml).expect("a valid topology");
        for topic in topology.raw_topics() {
            block_on(create_topic(brokers, topic, partitions));
        }
        Self {
            topology,
            path,
            partitions,
            brokers: brokers.to_owned(),
        }
    }

    pub(crate) fn raw_topic(&self) -> &str {
        self.topology.raw_topics()[0]
    }

    /// Starts `tickstream enrich` with its own state dir and metrics address.
    pub(crate) fn start(&self, state_dir: &Path, metrics: SocketAddr, log: &Path) -> ChildProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tickstream"));
        command
            .arg("enrich")
            .arg("--topology")
            .arg(&self.path)
            .arg("--brokers")
            .arg(&self.brokers)
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .arg("--state-dir")
            .arg(state_dir)
            .env("RUST_LOG", "info");
        ChildProcess::spawn("tickstream enrich", command, log)
    }

    /// Waits until every derived topic holds its expected number of committed events.
    pub(crate) fn wait_for(
        &self,
        expected: &BTreeMap<(String, Symbol), Vec<Vec<u8>>>,
        app: &mut ChildProcess,
    ) {
        for kind in self.topology.event_kinds() {
            let topic = self.topology.topic(kind);
            let count = expected
                .iter()
                .filter(|((t, _), _)| t == topic)
                .map(|(_, events)| events.len())
                .sum();
            Progress::on(&self.brokers, topic, self.partitions).wait_for(count, app);
        }
    }

    /// Every committed derived event, grouped by topic and symbol, in order.
    pub(crate) fn outputs(&self) -> BTreeMap<(String, Symbol), Vec<Vec<u8>>> {
        let mut records = Vec::new();
        for kind in self.topology.event_kinds() {
            let topic = self.topology.topic(kind);
            for (key, value) in read_all_committed_on(&self.brokers, topic, self.partitions) {
                let symbol = key
                    .parse()
                    .unwrap_or_else(|_| panic!("key {key:?} is a symbol"));
                records.push((topic.to_owned(), symbol, value.into_bytes()));
            }
        }
        grouped(records)
    }
}

/// Events per (topic, symbol), in order: the order enrich guarantees (one symbol lives on one
/// partition of each topic; different symbols interleave freely).
pub(crate) fn grouped(records: Vec<DerivedRecord>) -> BTreeMap<(String, Symbol), Vec<Vec<u8>>> {
    let mut groups: BTreeMap<(String, Symbol), Vec<Vec<u8>>> = BTreeMap::new();
    for (topic, symbol, value) in records {
        groups.entry((topic, symbol)).or_default().push(value);
    }
    groups
}

pub(crate) fn assert_matches_naive(
    topology: &Topology,
    actual: &BTreeMap<(String, Symbol), Vec<Vec<u8>>>,
    expected: &BTreeMap<(String, Symbol), Vec<Vec<u8>>>,
) {
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the same topics and symbols"
    );
    for ((topic, symbol), events) in expected {
        let as_records = |values: &[Vec<u8>]| -> Vec<DerivedRecord> {
            values
                .iter()
                .map(|v| (topic.clone(), *symbol, v.clone()))
                .collect()
        };
        naive::compare(
            topology,
            &as_records(&actual[&(topic.clone(), *symbol)]),
            &as_records(events),
        )
        .unwrap_or_else(|e| panic!("{topic} / {symbol}: {e}"));
    }
}

/// What enrich commits for `ticks`, grouped: with candles that close on idle within the test,
/// every candle; otherwise those event time closed.
pub(crate) fn expected(
    topology: &Topology,
    ticks: &[(Symbol, f64, i64)],
) -> BTreeMap<(String, Symbol), Vec<Vec<u8>>> {
    let idle_within_the_test = topology
        .candles
        .iter()
        .all(|c| c.close_idle_after < NEVER_IDLE_IN_A_TEST);
    grouped(if idle_within_the_test {
        naive::recompute(topology, ticks)
    } else {
        naive::recompute_before_idle(topology, ticks)
    })
}

#[test]
fn every_derived_event_matches_a_naive_recomputation() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    // Its input is there before enrich starts: nothing holds it back, and the last candles
    // close on idle 2 s after the last tick.
    let deployment =
        Deployment::with_candles("enrich-naive", dir.path(), &symbols(10), 3, IDLE_CANDLES);
    let input = ticks(&symbols(10), 100_000, 1);
    produce_ticks(deployment.raw_topic(), &input);
    let want = expected(&deployment.topology, &input);
    let jumps: usize = want
        .iter()
        .filter(|((t, _), _)| t == deployment.topology.topic(EventKind::Jump))
        .map(|(_, e)| e.len())
        .sum();
    assert!(jumps > 100, "the input has jumps to find ({jumps})");

    let mut app = deployment.start(
        &dir.path().join("state"),
        free_local_address(),
        &dir.path().join("enrich.log"),
    );
    deployment.wait_for(&want, &mut app);
    assert!(app.terminate().success(), "SIGTERM exits 0");
    assert_matches_naive(&deployment.topology, &deployment.outputs(), &want);
}

#[test]
fn sigkills_at_random_moments_change_nothing_in_the_committed_outputs() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let symbols = symbols(10);
    let input = ticks(&symbols, 200_000, 2);
    let crashing = Deployment::new("enrich-crash", dir.path(), &symbols, 3);
    let steady = Deployment::new("enrich-steady", dir.path(), &symbols, 3);
    produce_ticks(crashing.raw_topic(), &input);
    produce_ticks(steady.raw_topic(), &input);
    let want = expected(&crashing.topology, &input);

    // The uninterrupted run works beside the crashing one.
    let mut uninterrupted = steady.start(
        &dir.path().join("steady"),
        free_local_address(),
        &dir.path().join("steady.log"),
    );

    let state = dir.path().join("crash");
    let moving_averages = crashing.topology.topic(EventKind::MovingAverage);
    let total: usize = want
        .iter()
        .filter(|((t, _), _)| t == moving_averages)
        .map(|(_, e)| e.len())
        .sum();
    let mut progress = Progress::new(moving_averages, crashing.partitions);
    let mut app = crashing.start(
        &state,
        free_local_address(),
        &dir.path().join("crash-0.log"),
    );
    for (round, point) in kill_points(total).into_iter().enumerate() {
        progress.wait_for(point, &mut app);
        app.kill();
        app = crashing.start(
            &state,
            free_local_address(),
            &dir.path().join(format!("crash-{}.log", round + 1)),
        );
    }
    crashing.wait_for(&want, &mut app);
    steady.wait_for(&want, &mut uninterrupted);
    assert!(app.terminate().success());
    assert!(uninterrupted.terminate().success());

    let after_crashes = crashing.outputs();
    let renamed: BTreeMap<(String, Symbol), Vec<Vec<u8>>> = steady
        .outputs()
        .into_iter()
        .map(|((topic, symbol), events)| {
            let kind = EventKind::ALL
                .into_iter()
                .find(|k| steady.topology.topic(*k) == topic)
                .expect("a derived topic");
            ((crashing.topology.topic(kind).to_owned(), symbol), events)
        })
        .collect();
    assert!(
        after_crashes == renamed,
        "the outputs after SIGKILLs differ from the uninterrupted run's"
    );
    assert_matches_naive(&crashing.topology, &after_crashes, &want);
}

#[test]
fn a_lost_state_dir_is_rebuilt_from_the_changelog() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let symbols = symbols(5);
    // The second half comes two minutes of event time after the first: the first run closes
    // its last candles on idle, as the gap closes them in the recomputation.
    let input: Vec<(Symbol, f64, i64)> = ticks(&symbols, 30_000, 3)
        .into_iter()
        .enumerate()
        .map(|(i, (s, p, ts))| (s, p, if i < 15_000 { ts } else { ts + 120_000 }))
        .collect();
    let deployment = Deployment::new("enrich-loss", dir.path(), &symbols, 2);
    let (first, second) = input.split_at(input.len() / 2);
    let state = dir.path().join("state");

    produce_ticks(deployment.raw_topic(), first);
    let mut app = deployment.start(&state, free_local_address(), &dir.path().join("first.log"));
    deployment.wait_for(&expected(&deployment.topology, first), &mut app);
    assert!(app.terminate().success());

    std::fs::remove_dir_all(&state).expect("delete the state dir");
    produce_ticks(deployment.raw_topic(), second);
    let want = expected(&deployment.topology, &input);
    let mut app = deployment.start(&state, free_local_address(), &dir.path().join("second.log"));
    deployment.wait_for(&want, &mut app);
    assert!(app.terminate().success());
    assert_matches_naive(&deployment.topology, &deployment.outputs(), &want);
}

#[test]
fn two_instances_over_six_partitions_emit_what_one_would() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let symbols = symbols(12);
    let input = ticks(&symbols, 60_000, 4);
    let deployment = Deployment::new("enrich-scale", dir.path(), &symbols, 6);
    produce_ticks(deployment.raw_topic(), &input);
    let want = expected(&deployment.topology, &input);

    let (address_a, address_b) = (free_local_address(), free_local_address());
    let mut a = deployment.start(&dir.path().join("a"), address_a, &dir.path().join("a.log"));
    let mut b = deployment.start(&dir.path().join("b"), address_b, &dir.path().join("b.log"));
    // Both take part: the group gives each instance some of the six partitions.
    wait_for_metric(
        &mut a,
        address_a,
        "tickstream_assigned_partitions",
        "",
        |n| n >= 1.0,
    );
    wait_for_metric(
        &mut b,
        address_b,
        "tickstream_assigned_partitions",
        "",
        |n| n >= 1.0,
    );
    deployment.wait_for(&want, &mut a);
    b.assert_running();
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    assert_matches_naive(&deployment.topology, &deployment.outputs(), &want);
}

#[test]
fn bad_ticks_go_to_the_dead_letter_topic_with_their_reason() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let symbols = symbols(2);
    let deployment = Deployment::new("enrich-dlq", dir.path(), &symbols, 1);
    let topic = deployment.raw_topic().to_owned();
    let valid = ticks(&symbols, 100, 5);
    let long = format!(
        r#"{{"symbol":"C00000USDT","price":1.5,"ts":1,"pad":"{}"}}"#,
        "x".repeat(2048)
    );
    let bad: Vec<(&[u8], &str)> = vec![
        (b"{\"symbol\":\"C00000USDT\",", "not_json"),
        (br#"{"price":1.5,"ts":1}"#, "missing_field"),
        (
            br#"{"symbol":"C00000USDT","price":"1.5","ts":1}"#,
            "mistyped_field",
        ),
        (
            br#"{"symbol":"C00000USDT","price":"NaN","ts":1}"#,
            "mistyped_field",
        ),
        (
            br#"{"symbol":"C00000USDT","price":-2.0,"ts":1}"#,
            "non_positive_price",
        ),
        (long.as_bytes(), "oversized"),
    ];
    // 2 s behind its symbol's newest tick: within the windows' 5 s lateness, beyond both
    // candle intervals' grace (1 s, 0 s): late for the candles, so counted nowhere.
    let (late_symbol, _, newest) = valid[..50]
        .iter()
        .rev()
        .find(|(s, _, _)| *s == symbols[0])
        .copied()
        .expect("a tick of the first symbol");
    let late = format!(
        r#"{{"symbol":"{late_symbol}","price":1.5,"ts":{}}}"#,
        newest - 2_000
    );
    let bad: Vec<(&[u8], &str)> = bad.into_iter().chain([(late.as_bytes(), "late")]).collect();
    produce_ticks(&topic, &valid[..50]);
    block_on(async {
        let producer = producer(&kafka_brokers(), &[]);
        for (value, _) in &bad {
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(symbols[0].as_str())
                        .payload(*value),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
        }
    });
    produce_ticks(&topic, &valid[50..]);

    let metrics = free_local_address();
    let mut app = deployment.start(
        &dir.path().join("state"),
        metrics,
        &dir.path().join("enrich.log"),
    );
    // Processing continued past the bad records: every valid tick's events are there.
    let want = expected(&deployment.topology, &valid);
    deployment.wait_for(&want, &mut app);
    for (code, count) in [
        ("not_json", 1.0),
        ("missing_field", 1.0),
        ("mistyped_field", 2.0),
        ("non_positive_price", 1.0),
        ("oversized", 1.0),
        ("late", 1.0),
    ] {
        wait_for_metric(
            &mut app,
            metrics,
            "tickstream_dead_letter_records_total",
            &format!("reason=\"{code}\""),
            |n| n == count,
        );
    }
    assert!(app.terminate().success());
    assert_matches_naive(&deployment.topology, &deployment.outputs(), &want);

    let dead = read_committed_consumer(&deployment.topology.topics.dead_letter, 1);
    let mut reasons = Vec::new();
    while reasons.len() < bad.len() {
        match dead.poll(PROGRESS_TIMEOUT) {
            Some(Ok(message)) => {
                let header = |name: &str| {
                    header(&message, name).unwrap_or_else(|| panic!("header {name} missing"))
                };
                assert_eq!(header(tickstream_streams::dlq_headers::SOURCE_TOPIC), topic);
                assert!(!header(tickstream_streams::dlq_headers::ERROR_MESSAGE).is_empty());
                let payload = message.payload().expect("the original value").to_vec();
                reasons.push((payload, header(tickstream_streams::dlq_headers::ERROR_CODE)));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            other => panic!(
                "expected {} dead-letter records, got {} then {other:?}",
                bad.len(),
                reasons.len()
            ),
        }
    }
    let want_reasons: Vec<(Vec<u8>, String)> = bad
        .iter()
        .map(|(v, c)| (v.to_vec(), (*c).to_owned()))
        .collect();
    assert_eq!(
        reasons, want_reasons,
        "each bad record, unchanged, with its reason, in order"
    );
}
