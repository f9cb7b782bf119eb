//! End to end on the real broker: `tickstream enrich` (the release binary, exactly-once)
//! against a bare librdkafka pipe over the same preloaded raw ticks, same run, same settings.
//!
//! ```sh
//! make services-up && cargo bench --bench enrich_e2e     # or: make bench
//! ```
//!
//! For each symbol count (10 and 10,000) it preloads `TICKSTREAM_BENCH_TICKS` raw ticks
//! (default 2,000,000; 2,000 as a smoke run under `cargo test --all-targets`) into a
//! 4-partition topic, then measures:
//!
//! * **pipe**, the limit: one consumer (`read_committed`) and one transactional producer copying
//!   every record unchanged to another topic, committing records and offsets in one transaction
//!   every 100 ms — without state, windows or JSON. Several settings are tried on the same
//!   input (`PIPES`: the runtime's producer settings with one record per poll call, then
//!   batched consumption with the runtime's consumer settings, larger fetches and longer
//!   lingers); each is printed, and the
//!   fastest is the limit enrich is compared with. Then (benchmark runs only) the fastest
//!   writes each record 2 and 4 times: the records enrich writes per tick, without its work;
//! * **enrich**, twice: with a 20-tick count window only, and with the default topology's
//!   analytics (a 20-tick count window, a 5-minute time window, 2 % jumps) — two, or four or
//!   five, derived records per tick, plus the changelog. Progress is the group's committed
//!   offsets on the raw topic, read from the broker: scraping enrich's `/metrics` every 20 ms
//!   (as this bench did before) cost enrich ~60 % of a core at 10,000 symbols. The raw
//!   records are keyed by symbol (murmur2, as ingest writes them), so none takes the
//!   repartition hop;
//! * **enrich, unkeyed**: the same ticks without keys over the same partitions (the reference
//!   producer's way): every record is re-keyed through the repartition topic and read back;
//!   its end (the records processed from the repartition topic) is read on `/metrics`, only
//!   once the raw topic is committed.
//!
//! With `TICKSTREAM_BENCH_BASELINE=/path/to/tickstream` (a release binary of an earlier
//! commit) the keyed run is repeated with that binary, same topic, same run: the "before".
//! `TICKSTREAM_BENCH_SYMBOLS` (default `10,10000`) sets the symbol counts.
//!
//! Both rates count from the first committed record to the commit covering the last one
//! (start-up and group join excluded). Peak RSS is enrich's `VmHWM` at the end.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tickstream_enrich::naive::{random_walk, sample_symbols};
use tickstream_model::{RawTick, RecordFormat};
use tickstream_streams::{FETCH_QUEUE_BACKOFF, kafka_millis};

const PARTITIONS: i32 = 4;
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(900);
/// Records the pipe lets librdkafka hold unacknowledged before it waits: ten 100 ms
/// transactions at 200,000 records/s.
const MAX_IN_FLIGHT: i32 = 200_000;

fn main() {
    let ticks = support::setting("TICKSTREAM_BENCH_TICKS", 2_000_000, 2_000);
    let Some(brokers) = support::broker("enrich_e2e") else {
        return;
    };
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        tickstream_ingest::metrics::now_ms() % 1_000_000
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    println!(
        "| symbols | ticks | pipe ticks/s (fastest) | enrich, count window | / pipe | enrich, count + 5m | / pipe | peak RSS (count + 5m) | enrich unkeyed ticks/s | unkeyed / pipe |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut pipes = Vec::new();
    let counts = std::env::var("TICKSTREAM_BENCH_SYMBOLS").unwrap_or_else(|_| "10,10000".into());
    for symbols in counts.split(',').map(|n| {
        n.trim()
            .parse::<usize>()
            .expect("TICKSTREAM_BENCH_SYMBOLS: symbol counts, comma-separated")
    }) {
        let name = format!("bench-e2e-{symbols}-{run_id}");
        let raw = format!("{name}.raw");
        support::create_topic(&brokers, &raw, PARTITIONS);
        let unkeyed_raw = format!("{name}-unkeyed.raw");
        support::create_topic(&brokers, &unkeyed_raw, PARTITIONS);
        let symbol_list = sample_symbols(symbols);
        let started = Instant::now();
        let records: Vec<(String, Vec<u8>)> = random_walk(&symbol_list, ticks, 42)
            .into_iter()
            .map(|(symbol, price, ts)| {
                let value = RawTick::new(symbol, price)
                    .with_ts(ts)
                    .with_source("synthetic")
                    .encode(RecordFormat::Full);
                (symbol.as_str().to_owned(), value)
            })
            .collect();
        support::preload(&brokers, &raw, records.iter().map(|(k, v)| (k, v)));
        support::preload_records(
            &brokers,
            &unkeyed_raw,
            records.iter().map(|(_, v)| (None::<&str>, v)),
        );
        eprintln!(
            "preloaded {ticks} ticks over {symbols} symbols into {raw} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // NaN when one commit covered everything (a smoke run): then the ratios are NaN too.
        let mut pipe = f64::NAN;
        let mut fastest = PIPES[0];
        // A smoke run tries one: it only keeps the harness working.
        let tried = if support::benchmarking() {
            &PIPES[..]
        } else {
            &PIPES[..1]
        };
        for (i, settings) in tried.iter().enumerate() {
            let output = format!("{name}.copy{i}");
            let rate = bare_pipe(&brokers, &raw, &output, (ticks, 1), settings);
            eprintln!("pipe {settings:?}: {rate:.0} ticks/s");
            pipes.push(format!("| {symbols} | {settings:?} | {rate:.0} |"));
            if pipe.is_nan() || rate > pipe {
                pipe = rate;
                fastest = *settings;
            }
        }
        // What limits enrich: the same pipe writing as many records per input as enrich does
        // (two with a count window, four with count + 5m, plus jumps), on the fastest settings.
        if support::benchmarking() {
            for copies in [2, 4] {
                let output = format!("{name}.fanout{copies}");
                let rate = bare_pipe(&brokers, &raw, &output, (ticks, copies), &fastest);
                eprintln!("pipe {fastest:?}, {copies} copies: {rate:.0} ticks/s");
                pipes.push(format!(
                    "| {symbols} | {fastest:?}, {copies} records out per record in | {rate:.0} |"
                ));
            }
        }
        let count_name = format!("{name}-count");
        let topology = write_topology(dir.path(), &count_name, &raw, &symbol_list, false);
        let (count_only, _) = enrich(
            &brokers,
            &topology,
            &dir.path().join(&count_name),
            (&raw, None),
            ticks,
        );
        let topology = write_topology(dir.path(), &name, &raw, &symbol_list, true);
        let (keyed, rss_kib) = enrich(
            &brokers,
            &topology,
            &dir.path().join(&name),
            (&raw, None),
            ticks,
        );
        let unkeyed_name = format!("{name}-unkeyed");
        let topology = write_topology(dir.path(), &unkeyed_name, &unkeyed_raw, &symbol_list, true);
        // Done when every record has come back from the repartition topic and been processed.
        let repartition = format!("{unkeyed_name}-repartition");
        let (unkeyed, _) = enrich(
            &brokers,
            &topology,
            &dir.path().join(&unkeyed_name),
            (&unkeyed_raw, Some(&repartition)),
            ticks,
        );
        println!(
            "| {symbols} | {ticks} | {pipe:.0} | {count_only:.0} | {:.0} % | {keyed:.0} | {:.0} % | {:.0} MiB | {unkeyed:.0} | {:.0} % |",
            100.0 * count_only / pipe,
            100.0 * keyed / pipe,
            rss_kib as f64 / 1024.0,
            100.0 * unkeyed / pipe,
        );
        if let Ok(baseline) = std::env::var("TICKSTREAM_BENCH_BASELINE") {
            let before_name = format!("{name}-baseline");
            let topology = write_topology(dir.path(), &before_name, &raw, &symbol_list, true);
            let (before, _) = enrich_with(
                Path::new(&baseline),
                &brokers,
                &topology,
                &dir.path().join(&before_name),
                (&raw, None),
                ticks,
            );
            println!(
                "| {symbols} (baseline {baseline}) | {ticks} | {pipe:.0} | {before:.0} | {:.0} % | | keyed now / baseline | {:.1} % |",
                100.0 * before / pipe,
                100.0 * keyed / before,
            );
        }
        support::delete_topics(&brokers, &name);
    }
    println!("\n| symbols | pipe settings | ticks/s |\n| --- | --- | --- |");
    for row in pipes {
        println!("{row}");
    }
}

/// One way of writing the pipe (the limit is the fastest of them).
#[derive(Debug, Clone, Copy)]
struct PipeSettings {
    /// The producer's `linger.ms`.
    linger_ms: u32,
    /// Take everything the consumer has fetched (`poll` without waiting) before looking at the
    /// commit, with the runtime's fetch-queue backoff (`FETCH_QUEUE_BACKOFF`), not librdkafka's.
    batched: bool,
    /// `max.partition.fetch.bytes`, in MiB (librdkafka's default is 1).
    fetch_mib: u32,
}

/// What was tried for the limit: the runtime's producer settings with librdkafka's consumer
/// defaults, one record per poll call, as the pipe had them; batched consumption with the
/// runtime's consumer settings; then fetches 8 and 32 times as large, and lingers of 20 and 50 ms.
const PIPES: [PipeSettings; 6] = [
    PipeSettings {
        linger_ms: 5,
        batched: false,
        fetch_mib: 1,
    },
    PipeSettings {
        linger_ms: 5,
        batched: true,
        fetch_mib: 1,
    },
    PipeSettings {
        linger_ms: 5,
        batched: true,
        fetch_mib: 8,
    },
    PipeSettings {
        linger_ms: 5,
        batched: true,
        fetch_mib: 32,
    },
    PipeSettings {
        linger_ms: 20,
        batched: true,
        fetch_mib: 8,
    },
    PipeSettings {
        linger_ms: 50,
        batched: true,
        fetch_mib: 8,
    },
];

/// Copies `input` to `output` exactly-once, each record `copies` times; returns input
/// records/s from the first commit holding records to the commit holding the last.
fn bare_pipe(
    brokers: &str,
    input: &str,
    output: &str,
    (records, copies): (usize, usize),
    settings: &PipeSettings,
) -> f64 {
    let mut consumer_config = ClientConfig::new();
    consumer_config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{output}-pipe"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    if settings.batched {
        consumer_config.set("fetch.queue.backoff.ms", kafka_millis(FETCH_QUEUE_BACKOFF));
    }
    if settings.fetch_mib > 1 {
        consumer_config
            .set(
                "max.partition.fetch.bytes",
                (settings.fetch_mib << 20).to_string(),
            )
            // librdkafka caps a response at receive.message.max.bytes (~95 MiB).
            .set("fetch.max.bytes", (64 << 20).to_string());
    }
    let consumer: BaseConsumer = consumer_config.create().expect("consumer config");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(input, partition, Offset::Beginning)
            .expect("a partition");
    }
    consumer.assign(&assignment).expect("assign");
    // The runtime's producer settings (crates/streams/src/kafka/mod.rs).
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", format!("{output}-pipe"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", settings.linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("transaction.timeout.ms", "10000")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer config");
    producer
        .init_transactions(TIMEOUT)
        .expect("init transactions");
    producer.begin_transaction().expect("begin");

    let group = consumer.group_metadata().expect("group metadata");
    let deadline = Instant::now() + TIMEOUT;
    let (mut copied, mut in_transaction) = (0usize, 0usize);
    let mut first_commit: Option<(Instant, usize)> = None;
    let mut last_commit = Instant::now();
    loop {
        assert!(Instant::now() < deadline, "the pipe took over {TIMEOUT:?}");
        let mut wait = Duration::from_millis(10);
        while let Some(message) = consumer.poll(wait) {
            let message = message.expect("consume");
            // Back-pressure, as enrich has: a fan-out pipe otherwise queues faster than the
            // broker acknowledges, and its records time out in librdkafka's queue.
            while producer.in_flight_count() > MAX_IN_FLIGHT {
                producer.poll(Duration::from_millis(1));
            }
            for _ in 0..copies {
                let mut record =
                    BaseRecord::to(output).payload(message.payload().unwrap_or_default());
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                while let Err((_, returned)) = producer.send(record) {
                    record = returned;
                    producer.poll(Duration::from_millis(1));
                }
            }
            copied += 1;
            in_transaction += 1;
            if !settings.batched || copied == records || last_commit.elapsed() >= COMMIT_INTERVAL {
                break;
            }
            wait = Duration::ZERO;
        }
        producer.poll(Duration::ZERO);
        if in_transaction > 0 && (last_commit.elapsed() >= COMMIT_INTERVAL || copied == records) {
            let positions = consumer.position().expect("positions");
            producer
                .send_offsets_to_transaction(&positions, &group, TIMEOUT)
                .expect("offsets into the transaction");
            producer.commit_transaction(TIMEOUT).expect("commit");
            last_commit = Instant::now();
            in_transaction = 0;
            first_commit.get_or_insert((last_commit, copied));
            if copied == records {
                break;
            }
            producer.begin_transaction().expect("begin");
        }
    }
    rate(first_commit, records)
}

/// Records per second between the first commit (`(when, records it covered)`) and now; from
/// the start when one commit covered everything.
fn rate(first_commit: Option<(Instant, usize)>, records: usize) -> f64 {
    let (at, covered) = first_commit.expect("at least one commit");
    let elapsed = at.elapsed().as_secs_f64();
    if covered < records && elapsed > 0.0 {
        (records - covered) as f64 / elapsed
    } else {
        f64::NAN
    }
}

/// The bench's topology: a 20-tick count window, and with `time_window` the default
/// topology's 5-minute time window too.
fn write_topology(
    dir: &Path,
    name: &str,
    raw: &str,
    symbols: &[tickstream_model::Symbol],
    time_window: bool,
) -> std::path::PathBuf {
    let list: Vec<String> = symbols.iter().map(|s| format!("\"{s}\"")).collect();
    let path = dir.join(format!("{name}.toml"));
    let toml = format!(
        r#"application_id = "{name}"
symbols = [{list}]
[topics]
raw = "{raw}"
moving_average = "{name}.ma"
volatility = "{name}.vol"
jumps = "{name}.jumps"
[[windows]]
kind = "count"
size = 20
{time}[jumps]
threshold_pct = 2.0
"#,
        list = list.join(", "),
        time = if time_window {
            "[[windows]]\nkind = \"time\"\nspan = \"5m\"\n"
        } else {
            ""
        }
    );
    std::fs::write(&path, toml).expect("write the topology");
    path
}

/// Runs `tickstream enrich` until it committed `records` consumed from `raw` (and, with
/// `done_on`, processed as many from that topic: the repartition topic); returns ticks/s and
/// peak RSS (KiB).
fn enrich(
    brokers: &str,
    topology: &Path,
    state: &Path,
    (raw, done_on): (&str, Option<&str>),
    records: usize,
) -> (f64, u64) {
    let binary = Path::new(env!("CARGO_BIN_EXE_tickstream"));
    enrich_with(binary, brokers, topology, state, (raw, done_on), records)
}

/// [`enrich`] with the `tickstream` binary at `binary`.
fn enrich_with(
    binary: &Path,
    brokers: &str,
    topology: &Path,
    state: &Path,
    (raw, done_on): (&str, Option<&str>),
    records: usize,
) -> (f64, u64) {
    let metrics = support::free_local_address();
    let log = std::fs::File::create(state.with_extension("log")).expect("log file");
    let mut child = Command::new(binary)
        .arg("enrich")
        .arg("--topology")
        .arg(topology)
        .arg("--brokers")
        .arg(brokers)
        .arg("--metrics-addr")
        .arg(metrics.to_string())
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start tickstream enrich");
    let deadline = Instant::now() + TIMEOUT;
    let alive = |child: &mut Child| {
        assert!(
            Instant::now() < deadline && matches!(child.try_wait(), Ok(None)),
            "enrich exited or took over {TIMEOUT:?}; see {}",
            state.with_extension("log").display()
        );
    };
    // Progress is read from the broker (the group's committed offsets of the raw topic), not
    // from enrich's /metrics: with 10,000 symbols that page carries ~60,000 per-symbol series,
    // and rendering it every 20 ms took ~60 % of a core from enrich (perf, 2026-12-01).
    let offsets = committed_offsets_reader(brokers, &application_id(topology));
    let mut first_commit = None;
    loop {
        alive(&mut child);
        let committed = offsets.committed(raw) as usize;
        if committed > 0 && first_commit.is_none() {
            first_commit = Some((Instant::now(), committed));
        }
        if committed >= records {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Re-keyed records are done once they have come back from the repartition topic and been
    // processed: the last stretch is watched on /metrics (a few scrapes only).
    if let Some(topic) = done_on {
        while scrape(
            metrics,
            "tickstream_records_consumed_total",
            &format!("topic=\"{topic}\""),
        )
        .unwrap_or(0.0)
            < records as f64
        {
            alive(&mut child);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let ticks_per_second = rate(first_commit, records);
    let rss = peak_rss_kib(&child);
    support::stop(&mut child);
    (ticks_per_second, rss)
}

/// The application id of a topology written by [`write_topology`]: its file name.
fn application_id(topology: &Path) -> String {
    let stem = topology.file_stem().and_then(|s| s.to_str());
    stem.expect("a topology file name").to_owned()
}

/// Reads a consumer group's committed offsets without joining it.
struct CommittedOffsets {
    consumer: BaseConsumer,
}

fn committed_offsets_reader(brokers: &str, group: &str) -> CommittedOffsets {
    let consumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer config");
    CommittedOffsets { consumer }
}

impl CommittedOffsets {
    /// The sum over `topic`'s partitions of the committed offsets (0 before any commit). The
    /// raw topics are written without transactions, so offsets count records.
    fn committed(&self, topic: &str) -> i64 {
        let mut partitions = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            partitions.add_partition(topic, partition);
        }
        let Ok(committed) = self
            .consumer
            .committed_offsets(partitions, Duration::from_secs(5))
        else {
            return 0;
        };
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(offset) => offset,
                _ => 0,
            })
            .sum()
    }
}

/// The first sample of `name` whose labels contain `label` on the `/metrics` page at `address`.
fn scrape(address: SocketAddr, name: &str, label: &str) -> Option<f64> {
    support::http_get(address, "/metrics")?
        .lines()
        .find(|line| line.starts_with(name) && line.contains(label))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// `VmHWM`: the process's peak resident set size.
fn peak_rss_kib(child: &Child) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
