//! End-to-end latency on the real services, as a user sees it: `tickstream ingest` (synthetic
//! ticks at a fixed rate, `ts` = the wall clock when generated) → Kafka → `tickstream enrich`
//! (exactly-once, 100 ms commits) → Kafka → `tickstream sink` → MongoDB. Latency is the moment a
//! MongoDB change stream hands over the document minus its `ts`: for raw prices (`prices`) and
//! for analytics (`moving_averages`, a 20-tick count window, one per tick).
//!
//! ```sh
//! make services-up && cargo bench --bench latency_e2e
//! ```
//!
//! The processes are the release binary, started as the README's compose file starts them
//! (one per processor); ingest starts once enrich and the sink answer `/readyz`, and the first
//! `WARM_UP` of ticks is not counted. `TICKSTREAM_BENCH_LATENCY_SECS` (default 30) sets how
//! long each rate is measured, `TICKSTREAM_BENCH_RATES` (default `1000,20000`) the rates in
//! ticks/s. Without `--bench` (as `cargo test --all-targets` runs it) it runs 3 s at 200
//! ticks/s and checks that documents of both kinds arrived, if the services are up. With
//! `TICKSTREAM_BENCH_LATENCY_DUMP=DIR` every counted sample is written to
//! `DIR/<rate>-{raw,analytics}.tsv` (`ts`; ms from `ts` to the change stream's event and to
//! mongod's write of the document, its `wallTime`), to see when and where the tail happens.
//! A second table says where the cores went during each measured window (from `/proc`):
//! ingest, enrich, sink and the bench itself as shares of one core, the rest of the machine
//! (the broker, mongod, anything else) likewise, and how busy all cores were together.

mod support;

use support::CpuShares;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mongodb::bson::Document;
use mongodb::change_stream::event::ChangeStreamEvent;
use tokio::sync::oneshot;

/// Ticks generated this soon after ingest starts are not counted (connections warming up).
const WARM_UP: Duration = Duration::from_secs(3);
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];

fn main() {
    let measuring = support::benchmarking();
    let Some(brokers) = support::broker("latency_e2e") else {
        return;
    };
    let mongodb_uri = std::env::var("TICKSTREAM_MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:37017/?replicaSet=rs0".into());
    let seconds = support::setting("TICKSTREAM_BENCH_LATENCY_SECS", 30, 3) as u64;
    let rates: Vec<u32> = if measuring {
        std::env::var("TICKSTREAM_BENCH_RATES")
            .unwrap_or_else(|_| "1000,20000".into())
            .split(',')
            .map(|r| {
                r.trim()
                    .parse()
                    .expect("TICKSTREAM_BENCH_RATES: ticks/s, comma-separated")
            })
            .collect()
    } else {
        vec![200]
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    if measuring {
        println!(
            "| ticks/s | raw docs | raw p50 | raw p99 | raw max | analytics docs | analytics p50 | analytics p99 | analytics max |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    }
    let mut cpu_rows = Vec::new();
    for rate in rates {
        let run = Run::new(dir.path(), &brokers, &mongodb_uri, rate);
        let (raw, analytics, cpu) = runtime.block_on(run.measure(Duration::from_secs(seconds)));
        cpu_rows.push(cpu_row(rate, &cpu));
        if let Ok(dir) = std::env::var("TICKSTREAM_BENCH_LATENCY_DUMP") {
            for (kind, samples) in [("raw", &raw), ("analytics", &analytics)] {
                let lines: String = samples
                    .iter()
                    .map(|s| format!("{}\t{}\t{}\n", s.ts, s.latency, s.written))
                    .collect();
                let path = Path::new(&dir).join(format!("{rate}-{kind}.tsv"));
                std::fs::write(&path, lines).expect("write the latency samples");
            }
        }
        let (raw, analytics): (Vec<i64>, Vec<i64>) = (
            raw.into_iter().map(|s| s.latency).collect(),
            analytics.into_iter().map(|s| s.latency).collect(),
        );
        if measuring {
            println!(
                "| {rate} | {} | {} | {} |",
                raw.len(),
                Summary::of(raw).row(),
                format_args!("{} | {}", analytics.len(), Summary::of(analytics).row())
            );
        } else {
            assert!(
                !raw.is_empty() && !analytics.is_empty(),
                "latency_e2e smoke run: {} raw and {} analytics documents seen in MongoDB",
                raw.len(),
                analytics.len()
            );
            println!(
                "latency_e2e: smoke run ok ({} raw, {} analytics documents)",
                raw.len(),
                analytics.len()
            );
        }
    }
    // Where the cores went: the machine's busy share is all cores together (100 % = all busy);
    // "the rest" is the broker, mongod and anything else running.
    if measuring {
        println!(
            "\n| ticks/s | ingest (of a core) | enrich | sink | bench | the rest | machine busy (of all cores) |\n| --- | --- | --- | --- | --- | --- | --- |"
        );
        for row in cpu_rows {
            println!("{row}");
        }
    }
}

/// One row of the CPU table: shares of one core, and the machine's busy share.
fn cpu_row(rate: u32, cpu: &CpuShares) -> String {
    let percent =
        |share: &Option<f64>| share.map_or("?".to_owned(), |s| format!("{:.0} %", 100.0 * s));
    let ours: Option<f64> = cpu.processes.iter().copied().sum();
    let rest = cpu
        .machine
        .zip(cpu.cores)
        .zip(ours)
        .map(|((busy, cores), ours)| (busy * cores as f64 - ours).max(0.0));
    let cells: Vec<String> = cpu.processes.iter().map(percent).collect();
    format!(
        "| {rate} | {} | {} | {} |",
        cells.join(" | "),
        percent(&rest),
        percent(&cpu.machine)
    )
}

/// One rate's deployment: its own topics, database and state dirs.
struct Run {
    name: String,
    rate: u32,
    /// `TICKSTREAM_BENCH_LATENCY_DUMP`: where the samples go.
    dump: Option<std::path::PathBuf>,
    topology: std::path::PathBuf,
    state: std::path::PathBuf,
    brokers: String,
    mongodb_uri: String,
}

impl Run {
    fn new(dir: &Path, brokers: &str, mongodb_uri: &str, rate: u32) -> Self {
        let name = format!(
            "latency-{rate}-{}-{}",
            std::process::id(),
            tickstream_model::clock::now_ms() % 1_000_000
        );
        let symbols = SYMBOLS.map(|s| format!("\"{s}\"")).join(", ");
        let topology = dir.join(format!("{name}.toml"));
        std::fs::write(
            &topology,
            format!(
                r#"
application_id = "{name}"
symbols = [{symbols}]
[topics]
raw = "{name}.raw"
moving_average = "{name}.ma"
volatility = "{name}.vol"
jumps = "{name}.jumps"
dead_letter = "{name}.dlq"
partitions = 4
[[windows]]
kind = "count"
size = 20
[jumps]
threshold_pct = 2.0
[source]
kind = "synthetic"
seed = 42
ticks_per_second = {rate}.0
[mongodb]
database = "{name}"
[processing]
commit_interval = "100ms"
"#
            ),
        )
        .expect("write the topology");
        Self {
            state: dir.join(format!("{name}-state")),
            name,
            rate,
            dump: std::env::var_os("TICKSTREAM_BENCH_LATENCY_DUMP").map(Into::into),
            topology,
            brokers: brokers.to_owned(),
            mongodb_uri: mongodb_uri.to_owned(),
        }
    }

    /// Starts the three processes, measures for `length` after the warm-up, stops them and
    /// returns the samples of raw prices and of moving averages.
    /// Also: the CPU of ingest, enrich, sink and this bench over the measured `length` (shares
    /// of one core), and how busy the machine was (share of all cores).
    async fn measure(&self, length: Duration) -> (Vec<Sample>, Vec<Sample>, CpuShares) {
        let client = mongodb::Client::with_uri_str(&self.mongodb_uri)
            .await
            .expect("a MongoDB client");
        let database = client.database(&self.name);
        let (stop_raw, raw) = follow(database.collection("prices")).await;
        let (stop_analytics, analytics) = follow(database.collection("moving_averages")).await;

        let status = self
            .command(&["topics", "create"])
            .status()
            .expect("tickstream topics create");
        assert!(status.success(), "tickstream topics create: {status}");
        let (enrich_addr, sink_addr, ingest_addr) = (
            support::free_local_address(),
            support::free_local_address(),
            support::free_local_address(),
        );
        let mut enrich = self.start("enrich", enrich_addr, |c| {
            c.arg("--state-dir").arg(&self.state);
        });
        let mut sink = self.start("sink", sink_addr, |c| {
            c.arg("--mongodb-uri").arg(&self.mongodb_uri);
        });
        wait_ready(enrich_addr, &mut enrich, "enrich").await;
        wait_ready(sink_addr, &mut sink, "sink").await;
        let counted_from = tickstream_model::clock::now_ms() + WARM_UP.as_millis() as i64;
        let kafka_watch = self
            .dump
            .is_some()
            .then(|| watch_kafka(&self.brokers, &format!("{}.raw", self.name)));
        let mut ingest = self.start("ingest", ingest_addr, |_| {});
        tokio::time::sleep(WARM_UP).await;
        let pids = [ingest.id(), enrich.id(), sink.id(), std::process::id()];
        let cpu_before = support::CpuSnapshot::take(&pids);
        tokio::time::sleep(length).await;
        let cpu = support::CpuSnapshot::take(&pids).since(&cpu_before);
        let counted_until = tickstream_model::clock::now_ms();
        for child in [&mut ingest, &mut enrich, &mut sink] {
            assert!(
                matches!(child.try_wait(), Ok(None)),
                "a process exited during the run; logs in {}",
                self.state.display()
            );
        }
        // The last ticks of the window get time to arrive before the processes stop.
        support::stop(&mut ingest);
        tokio::time::sleep(Duration::from_secs(2)).await;
        support::stop(&mut enrich);
        support::stop(&mut sink);
        let within = |samples: Vec<Sample>| -> Vec<Sample> {
            samples
                .into_iter()
                .filter(|s| (counted_from..counted_until).contains(&s.ts))
                .collect()
        };
        if let (Some((stop, watcher)), Some(dir)) = (kafka_watch, &self.dump) {
            let _ = stop.send(());
            let seen = watcher.join().expect("the Kafka watcher");
            let lines: String = seen
                .iter()
                .filter(|(ts, _)| (counted_from..counted_until).contains(ts))
                .map(|(ts, latency)| format!("{ts}\t{latency}\n"))
                .collect();
            std::fs::write(dir.join(format!("{}-kafka.tsv", self.rate)), lines)
                .expect("write the Kafka samples");
        }
        let raw = within(finish(stop_raw, raw).await);
        let analytics = within(finish(stop_analytics, analytics).await);
        database.drop().await.expect("drop the bench database");
        support::delete_topics(&self.brokers, &self.name);
        (raw, analytics, cpu)
    }

    fn command(&self, subcommand: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tickstream"));
        command
            .args(subcommand)
            .arg("--topology")
            .arg(&self.topology)
            .arg("--brokers")
            .arg(&self.brokers);
        command
    }

    fn start(
        &self,
        subcommand: &str,
        metrics: SocketAddr,
        extra: impl FnOnce(&mut Command),
    ) -> Child {
        std::fs::create_dir_all(&self.state).expect("the state dir");
        let log = std::fs::File::create(self.state.join(format!("{subcommand}.log"))).expect("log");
        let mut command = self.command(&[subcommand]);
        command.arg("--metrics-addr").arg(metrics.to_string());
        extra(&mut command);
        command
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start tickstream {subcommand}: {e}"))
    }
}

/// One document seen: its `ts`, when the change stream handed it over and when mongod wrote
/// it, both as ms after `ts`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ts: i64,
    latency: i64,
    written: i64,
}

type Samples = tokio::task::JoinHandle<Vec<Sample>>;

/// Follows the inserts into `collection`, until told to stop.
async fn follow(collection: mongodb::Collection<Document>) -> (oneshot::Sender<()>, Samples) {
    let mut stream = collection
        .watch()
        .await
        .expect("a change stream (mongod must run as a replica set)");
    let (stop, mut stopped) = oneshot::channel();
    let samples = tokio::spawn(async move {
        let mut samples: Vec<Sample> = Vec::new();
        loop {
            let event: ChangeStreamEvent<Document> = tokio::select! {
                _ = &mut stopped => break,
                event = stream.next() => match event {
                    Some(Ok(event)) => event,
                    Some(Err(error)) => panic!("the change stream failed: {error}"),
                    None => break,
                },
            };
            let seen = tickstream_model::clock::now_ms();
            if let Some(ts) = event
                .full_document
                .as_ref()
                .and_then(|d| d.get_datetime("ts").ok())
            {
                let ts = ts.timestamp_millis();
                // mongod's clock when it wrote the change: splits the latency into the
                // pipeline's part (up to the write) and the change stream's (after it).
                let written = event.wall_time.map_or(seen, |t| t.timestamp_millis());
                samples.push(Sample {
                    ts,
                    latency: seen - ts,
                    written: written - ts,
                });
            }
        }
        samples
    });
    (stop, samples)
}

async fn finish(stop: oneshot::Sender<()>, samples: Samples) -> Vec<Sample> {
    let _ = stop.send(());
    samples.await.expect("the change stream reader")
}

/// With the dump on: when each raw record becomes readable (`read_committed`) on Kafka, as
/// `(CreateTime, ms after it)` — the ingest → Kafka part of the raw latency.
fn watch_kafka(
    brokers: &str,
    topic: &str,
) -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Vec<(i64, i64)>>,
) {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-latency-watch"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let (stop, stopped) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while stopped.try_recv().is_err() {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50))
                && let Some(created) = message.timestamp().to_millis()
            {
                seen.push((created, tickstream_model::clock::now_ms() - created));
            }
        }
        seen
    });
    (stop, watcher)
}

/// p50, p99 and max of latencies in ms.
struct Summary(Option<(i64, i64, i64)>);

impl Summary {
    fn of(mut latencies: Vec<i64>) -> Self {
        latencies.sort_unstable();
        let n = latencies.len();
        Self((n > 0).then(|| {
            (
                latencies[n / 2],
                latencies[(n * 99 / 100).min(n - 1)],
                latencies[n - 1],
            )
        }))
    }

    fn row(&self) -> String {
        match self.0 {
            Some((p50, p99, max)) => format!("{p50} ms | {p99} ms | {max} ms"),
            None => "- | - | -".into(),
        }
    }
}

/// Waits until `/readyz` at `address` answers 200.
async fn wait_ready(address: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "tickstream {what} exited before it was ready"
        );
        let ready = support::http_get(address, "/readyz").is_some_and(|answer| {
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tickstream {what} not ready within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
