//! What the broker benchmarks share: finding the broker, creating topics, preloading records,
//! and the processes they run (a free port, one HTTP GET of their endpoints, a stop).

// Each benchmark is its own crate and uses a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The broker of `make services-up` (or `TICKSTREAM_KAFKA_BROKERS`), if it answers.
pub fn broker(bench: &str) -> Option<String> {
    let brokers =
        std::env::var("TICKSTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:39092".into());
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("client config");
    match probe.fetch_metadata(None, Duration::from_secs(5)) {
        Ok(_) => Some(brokers),
        Err(error) => {
            eprintln!(
                "{bench}: skipped, no Kafka broker at {brokers} ({error}); start one with `make services-up`"
            );
            None
        }
    }
}

/// `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and then a small smoke
/// run keeps the harness working without slowing the test suite.
pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A number from the environment variable `name`, else `bench` or `smoke` by mode.
pub fn setting(name: &str, bench: usize, smoke: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if benchmarking() { bench } else { smoke })
}

pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin config");
    let topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topic");
    for result in results {
        result.expect("topic created");
    }
}

/// Deletes every topic whose name starts with `prefix` (a run's topics: outputs, changelogs,
/// repartition topics): a benchmark writes gigabytes, and the broker's disk is not the
/// benchmark's to fill.
pub fn delete_topics(brokers: &str, prefix: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin config");
    let Ok(metadata) = admin.inner().fetch_metadata(None, Duration::from_secs(10)) else {
        eprintln!("could not list the topics to delete those of {prefix}*");
        return;
    };
    let names: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|name| name.starts_with(prefix))
        .collect();
    if names.is_empty() {
        return;
    }
    match futures::executor::block_on(admin.delete_topics(&names, &AdminOptions::new())) {
        Ok(results) => {
            for result in results {
                if let Err((topic, error)) = result {
                    eprintln!("could not delete {topic}: {error}");
                }
            }
        }
        Err(error) => eprintln!("could not delete the topics of {prefix}*: {error}"),
    }
}

/// Produces every `(key, value)` to `topic` and waits until all are acknowledged. Keys are
/// partitioned as Kafka's default partitioner (and tickstream ingest) does: murmur2.
pub fn preload<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (K, V)>,
) {
    preload_records(
        brokers,
        topic,
        records.into_iter().map(|(k, v)| (Some(k), v)),
    );
}

/// Like [`preload`]; a record without a key goes to a random partition (the reference
/// producer's way).
pub fn preload_records<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (Option<K>, V)>,
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer config");
    for (key, value) in records {
        let mut record = BaseRecord::to(topic).payload(value.as_ref());
        if let Some(key) = &key {
            record = record.key(key.as_ref());
        }
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

/// A free port on 127.0.0.1, for a process's `--metrics-addr`.
pub fn free_local_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// The whole answer (status line, headers, body) to `GET path` at `address`; `None` when
/// nothing answers.
pub fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// SIGTERM, then waits for the process to exit.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// CPU time used so far, from `/proc` (Linux): per process, and the whole machine's busy and
/// total time — all in clock ticks, so shares need no tick rate.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    /// `utime + stime` per watched pid (`None`: it could not be read).
    processes: Vec<Option<u64>>,
    /// Busy (everything but idle and iowait) and total ticks, all cores together, and the
    /// number of cores they were counted over.
    machine: Option<MachineTicks>,
}

#[derive(Debug, Clone, Copy)]
struct MachineTicks {
    busy: u64,
    total: u64,
    cores: usize,
}

/// [`CpuSnapshot::since`]: shares of one core per process (1.0 = a whole core), how busy the
/// machine was (1.0 = every core), and its cores; `None` where `/proc` had no answer.
#[derive(Debug, Clone)]
pub struct CpuShares {
    pub processes: Vec<Option<f64>>,
    pub machine: Option<f64>,
    pub cores: Option<usize>,
}

impl CpuSnapshot {
    pub fn take(pids: &[u32]) -> Self {
        Self {
            processes: pids.iter().map(|pid| process_ticks(*pid)).collect(),
            machine: machine_ticks(),
        }
    }

    /// Since `earlier` (same pids).
    pub fn since(&self, earlier: &Self) -> CpuShares {
        let unknown = CpuShares {
            processes: vec![None; self.processes.len()],
            machine: None,
            cores: None,
        };
        let Some((now, before)) = self.machine.zip(earlier.machine) else {
            return unknown;
        };
        let elapsed = now.total.saturating_sub(before.total) as f64;
        if elapsed == 0.0 {
            return unknown;
        }
        // The total counts every core of /proc/stat: a share of one core is used × cores / total.
        let cores = now.cores as f64;
        let processes = self
            .processes
            .iter()
            .zip(&earlier.processes)
            .map(|(now, before)| {
                let used = now.zip(*before).map(|(n, b)| n.saturating_sub(b))?;
                Some(used as f64 * cores / elapsed)
            })
            .collect();
        CpuShares {
            processes,
            machine: Some(now.busy.saturating_sub(before.busy) as f64 / elapsed),
            cores: Some(now.cores),
        }
    }
}

/// `utime + stime` of `pid` (fields 14 and 15 of `/proc/PID/stat`, counted after the command
/// name, which may hold spaces and parentheses).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// The `cpu` line of `/proc/stat` (busy and total ticks), and the number of `cpuN` lines: the
/// cores those ticks are counted over (not `available_parallelism`, which a container's CPU
/// quota lowers while `/proc/stat` still counts every core).
fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(MachineTicks {
        busy: total - idle,
        total,
        cores,
    })
}
