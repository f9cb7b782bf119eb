//! Running the real `tickstream` binary against a broker of the test's choosing (the shared
//! one or a `PrivateBroker`), and reading what it wrote: shared by the outage and late-topic
//! tests.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::support::{ChildProcess, http_get, is_transient, unique_name};

/// Starts `tickstream <command> --topology <topology> --metrics-addr <metrics>` on `brokers`
/// (and `TICKSTREAM_MONGODB_URI=<mongodb>` when given), logging to `log`.
pub fn start(
    command: &str,
    topology: &Path,
    brokers: &str,
    mongodb: Option<&str>,
    metrics: SocketAddr,
    log: &Path,
) -> ChildProcess {
    let mut process = Command::new(env!("CARGO_BIN_EXE_tickstream"));
    process
        .arg(command)
        .arg("--topology")
        .arg(topology)
        .arg("--metrics-addr")
        .arg(metrics.to_string())
        .env("TICKSTREAM_KAFKA_BROKERS", brokers)
        .env("RUST_LOG", "info");
    if let Some(uri) = mongodb {
        process.env("TICKSTREAM_MONGODB_URI", uri);
    }
    ChildProcess::spawn(&format!("tickstream {command}"), process, log)
}

/// `/readyz`'s status, if anything answers.
pub fn readyz(metrics: SocketAddr) -> Option<u16> {
    http_get(metrics, "/readyz").map(|(status, _)| status)
}

/// Polls `/readyz` until it says `ready` (200) or not (503); fails after `limit`, or at once
/// if the process died.
pub async fn wait_ready(
    metrics: SocketAddr,
    ready: bool,
    process: &mut ChildProcess,
    limit: Duration,
) -> Duration {
    let want = if ready { 200 } else { 503 };
    let started = Instant::now();
    while readyz(metrics) != Some(want) {
        process.assert_running();
        assert!(
            started.elapsed() < limit,
            "/readyz did not answer {want} within {limit:?}; log:\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Whether the process `pid` has exited (a zombie waiting to be reaped counts as exited).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Waits at most `limit` for the process to exit by itself; fails (killing it) otherwise.
pub async fn wait_for_exit(process: ChildProcess, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    while !exited(process.id()) {
        assert!(
            started.elapsed() < limit,
            "still running after {limit:?}; log:\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process.wait()
}

/// One committed record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Vec<u8>,
}

/// Every committed record of `topic` on `brokers`, from the beginning to the end of each of
/// its `partitions`, in offset order per partition.
pub fn read_to_end(brokers: &str, topic: &str, partitions: i32) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
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
    let mut at_end = HashSet::new();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "reading {topic} on {brokers} to its end took over a minute"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                records.push(Consumed {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: message.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) if is_transient(&error) => {
                eprintln!("reading {topic} on {brokers}: {error} (transient, polling on)")
            }
            Some(Err(error)) => panic!("reading {topic} failed: {error}"),
            None => {}
        }
    }
    records
}
