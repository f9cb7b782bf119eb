//! `tickstream topics create|describe` — the real binary — on the real broker: every topic a
//! topology needs, created once with its partitions and cleanup policy, described against
//! what exists; a missing topic names the command that creates it.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::support::{SERVICE_TIMEOUT, kafka_brokers, require_kafka, unique_name};

fn topics(action: &str, topology: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(["topics", action, "--topology"])
        .arg(topology)
        .arg("--brokers")
        .arg(kafka_brokers())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tickstream topics")
}

fn partition_counts(names: &[String]) -> BTreeMap<String, usize> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("a client");
    let metadata = probe
        .fetch_metadata(None, SERVICE_TIMEOUT)
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .filter(|t| names.iter().any(|n| n == t.name()))
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect()
}

#[test]
fn topics_create_makes_what_the_topology_needs_once_and_describe_checks_it() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = unique_name("topics");
    let path = dir.path().join("topology.toml");
    std::fs::write(
        &path,
        format!(
            r#"
application_id = "{name}"
symbols = ["BTCUSDT", "ETHUSDT"]
[topics]
raw = {{ BTCUSDT = "{name}.btc", ETHUSDT = "{name}.eth" }}
moving_average = "{name}.ma"
volatility = "{name}.vol"
jumps = "{name}.jumps"
dead_letter = "{name}.dlq"
partitions = 4
"#
        ),
    )
    .expect("write the topology");
    let needed: Vec<String> = ["btc", "eth", "ma", "vol", "jumps", "dlq"]
        .iter()
        .map(|suffix| format!("{name}.{suffix}"))
        .chain([
            format!("{name}-repartition"),
            format!("{name}-windows-changelog"),
        ])
        .collect();

    let before = topics("describe", &path);
    assert_eq!(
        before.status.code(),
        Some(1),
        "missing topics fail describe"
    );
    let said = String::from_utf8_lossy(&before.stderr);
    assert!(
        said.contains("tickstream topics create"),
        "names the command: {said}"
    );

    let created = topics("create", &path);
    let stdout = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.status.success(),
        "create: {stdout}\n{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(stdout.contains("8 created, 0 already there"), "{stdout}");
    let counts = partition_counts(&needed);
    assert_eq!(counts.len(), needed.len(), "every topic exists: {counts:?}");
    assert!(
        counts.values().all(|n| *n == 4),
        "the topology's partition count: {counts:?}"
    );

    let again = topics("create", &path);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 created, 8 already there"),
        "idempotent"
    );
    let described = topics("describe", &path);
    let table = String::from_utf8_lossy(&described.stdout);
    assert!(described.status.success(), "{table}");
    let changelog = table
        .lines()
        .find(|line| line.starts_with("changelog"))
        .expect("a changelog line");
    assert!(
        changelog.contains("compact") && changelog.ends_with("ok"),
        "{changelog}"
    );
}
