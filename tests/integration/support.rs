//! What every integration test needs: where the services are, a check that they answer (with a
//! readable failure instead of a hang), and names no other test run uses.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tickstream_streams::Rebootstrapper;

/// How long any single wait on a service may take before the test fails instead of hanging.
pub const SERVICE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long any wait for an application's output may take.
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(180);

pub fn kafka_brokers() -> String {
    std::env::var("TICKSTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:39092".to_owned())
}

pub fn mongodb_uri() -> String {
    std::env::var("TICKSTREAM_MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:37017/?replicaSet=rs0".to_owned())
}

/// A name unique to this test process and call, for topics, groups, databases.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = tickstream_model::clock::since_epoch().as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Asks the broker(s) at `brokers` for cluster metadata within `timeout`; the error says which
/// address failed and how to start the broker.
pub fn check_kafka(brokers: &str, timeout: Duration) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| format!("cannot create a Kafka client for {brokers}: {e}"))?;
    consumer.fetch_metadata(None, timeout).map(|_| ()).map_err(|e| {
        format!(
            "Kafka broker at {brokers} did not answer a metadata request within {timeout:?} ({e}); \
             start it with `make services-up` or set TICKSTREAM_KAFKA_BROKERS"
        )
    })
}

/// Panics with a readable message unless the test broker answers.
pub fn require_kafka() -> String {
    let brokers = kafka_brokers();
    if let Err(message) = check_kafka(&brokers, Duration::from_secs(10)) {
        panic!("{message}");
    }
    brokers
}

/// Creates `name` with `partitions` partitions (replication factor 1) and waits for the result.
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client config is valid");
    let options = AdminOptions::new().operation_timeout(Some(SERVICE_TIMEOUT));
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .unwrap_or_else(|e| panic!("creating topic {name} on {brokers} failed: {e}"));
    for result in results {
        if let Err((topic, code)) = result {
            panic!("creating topic {topic} on {brokers} failed: {code}");
        }
    }
}

/// A client for the test `mongod`, after a ping proved it answers; panics readably otherwise.
pub async fn require_mongodb() -> mongodb::Client {
    let uri = mongodb_uri();
    let mut options = mongodb::options::ClientOptions::parse(&uri)
        .await
        .unwrap_or_else(|e| panic!("TICKSTREAM_MONGODB_URI={uri} is not a valid MongoDB URI: {e}"));
    options.server_selection_timeout = Some(Duration::from_secs(10));
    options.connect_timeout = Some(Duration::from_secs(5));
    let client = mongodb::Client::with_options(options).expect("client options are valid");
    if let Err(e) = client
        .database("admin")
        .run_command(mongodb::bson::doc! { "ping": 1 })
        .await
    {
        panic!(
            "MongoDB at {uri} did not answer a ping ({e}); start it with `make services-up` \
             or set TICKSTREAM_MONGODB_URI"
        );
    }
    client
}

/// One consumed record, reduced to what the assertions look at.
#[derive(Debug)]
pub struct Received {
    pub key: String,
    pub value: String,
    pub partition: i32,
}

pub fn producer(brokers: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        // Tests enqueue up to 200,000 records before awaiting their delivery reports.
        .set("queue.buffering.max.messages", "1000000");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().expect("producer config is valid")
}

pub fn consumer(brokers: &str, group: &str, isolation: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer config is valid")
}

/// Sends `values` as "value-i" with key "key-(i % keys)" and waits for every delivery report;
/// returns the partition each key went to.
pub async fn produce_keyed(
    producer: &FutureProducer,
    topic: &str,
    values: Range<u32>,
    keys: u32,
) -> HashMap<String, i32> {
    let mut pending = Vec::with_capacity(values.len());
    for i in values {
        let key = format!("key-{}", i % keys);
        let payload = format!("value-{i}");
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        let delivery = producer
            .send_result(record)
            .unwrap_or_else(|(e, _)| panic!("enqueueing value-{i} to {topic} failed: {e}"));
        pending.push((key, delivery));
    }
    let mut partition_of_key = HashMap::new();
    let (keys, deliveries): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
    for (key, outcome) in keys.into_iter().zip(join_all(deliveries).await) {
        let delivery = outcome
            .expect("producer dropped before reporting delivery")
            .unwrap_or_else(|(e, _)| panic!("delivery to {topic} failed: {e}"));
        let first = *partition_of_key
            .entry(key.clone())
            .or_insert(delivery.partition);
        assert_eq!(
            first, delivery.partition,
            "key {key} was spread over partitions"
        );
    }
    partition_of_key
}

/// Receives exactly `count` records, failing (not hanging) if the broker stops answering.
pub async fn receive(consumer: &StreamConsumer, count: usize, topic: &str) -> Vec<Received> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let message = tokio::time::timeout(SERVICE_TIMEOUT, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no record from {topic} for {SERVICE_TIMEOUT:?} after {} of {count}; \
                     is the broker alive? (`make services-status`)",
                    received.len()
                )
            })
            .unwrap_or_else(|e| panic!("consuming {topic} failed: {e}"));
        let text =
            |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
        received.push(Received {
            key: text(message.key()),
            value: text(message.payload()),
            partition: message.partition(),
        });
    }
    received
}

pub fn value_number(value: &str) -> u32 {
    value
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected payload {value:?}"))
}

/// A child process (the real binary, or this test binary re-run as an application) whose
/// output goes to a log file, so a failing test can show what it said.
pub struct ChildProcess {
    child: Child,
    what: String,
    pub log: PathBuf,
}

impl ChildProcess {
    /// Spawns `command` with stdout and stderr appended to `log`; `what` names it in failures.
    pub fn spawn(what: &str, mut command: Command, log: &Path) -> Self {
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the child's log file");
        let child = command
            .stdout(Stdio::from(output.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(output))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what} failed: {e}"));
        Self {
            child,
            what: what.to_owned(),
            log: log.to_owned(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself (after a signal sent by the test).
    pub fn wait(mut self) -> ExitStatus {
        self.child.wait().expect("wait for the child")
    }

    /// SIGKILL: no commit, no goodbye.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("wait for the child")
    }

    /// Fails the test at once, with the log, if the process has exited: waiting for output
    /// from a dead process would only time out.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}); log:\n{}", self.what, self.log_tail());
        }
    }

    /// The log's last 30 lines, leaving out backtraces (`RUST_BACKTRACE` is often set): the
    /// error above them is what a failing test must show.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut in_backtrace = false;
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| {
                if line.to_ascii_lowercase().starts_with("stack backtrace:") {
                    in_backtrace = true;
                } else if !line.starts_with(char::is_whitespace) && !line.is_empty() {
                    in_backtrace = false;
                }
                !in_backtrace
            })
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ChildProcess {
    /// A failing test must not leave processes behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(future)
}

pub fn free_local_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
}

pub fn read_committed_consumer(topic: &str, partitions: i32) -> BaseConsumer {
    read_committed_consumer_on(&kafka_brokers(), topic, partitions)
}

/// A `read_committed` reader of every partition of `topic` on `brokers`, from the beginning.
pub fn read_committed_consumer_on(brokers: &str, topic: &str, partitions: i32) -> BaseConsumer {
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
    consumer
}

/// Follows the committed output while the application works, to time the kills.
pub struct Progress {
    consumer: BaseConsumer,
    pub seen: usize,
    brokers: String,
    /// The test's own reader can lose its brokers as enrich's clients can (librdkafka #5301:
    /// a broker fenced for a moment is listed by no metadata answer): a stall makes it
    /// re-bootstrap on the runtime's schedule, so a stuck reader is not taken for stuck output.
    rebootstrapper: Rebootstrapper,
    rebootstraps: u32,
}

/// How long the output may stand still before the reader re-bootstraps (and again after as
/// long, on the [`Rebootstrapper`] schedule).
const READER_STALL: Duration = Duration::from_secs(5);

impl Progress {
    pub fn new(topic: &str, partitions: i32) -> Self {
        Self::on(&kafka_brokers(), topic, partitions)
    }

    /// Follows `topic` on `brokers`.
    pub fn on(brokers: &str, topic: &str, partitions: i32) -> Self {
        Self {
            consumer: read_committed_consumer_on(brokers, topic, partitions),
            seen: 0,
            brokers: brokers.to_owned(),
            rebootstrapper: Rebootstrapper::default(),
            rebootstraps: 0,
        }
    }

    /// Returns once at least `count` committed outputs exist; fails with the app's log if the
    /// output stops growing.
    pub fn wait_for(&mut self, count: usize, app: &mut ChildProcess) {
        let mut last_growth = Instant::now();
        let mut last_stall_check = Instant::now();
        while self.seen < count {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(_)) => {
                    self.seen += 1;
                    last_growth = Instant::now();
                    self.rebootstrapper.answered();
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    app.assert_running();
                    assert!(
                        last_growth.elapsed() < PROGRESS_TIMEOUT,
                        "output stuck at {} of {count} for {PROGRESS_TIMEOUT:?} (the reader \
                         re-bootstrapped {} time(s) meanwhile); app log:\n{}",
                        self.seen,
                        self.rebootstraps,
                        app.log_tail()
                    );
                    if last_growth.elapsed() >= READER_STALL
                        && last_stall_check.elapsed() >= READER_STALL
                    {
                        last_stall_check = Instant::now();
                        if self
                            .rebootstrapper
                            .failed(self.consumer.client(), &self.brokers)
                        {
                            self.rebootstraps += 1;
                        }
                    }
                }
                Some(Err(error)) if is_transient(&error) => {
                    eprintln!("reading the output: {error} (transient, polling on)")
                }
                Some(Err(error)) => panic!("reading the output failed: {error}"),
            }
        }
    }
}

/// Whether a consumer's error is one librdkafka recovers from by itself: a broker unreachable
/// for a moment (on a loaded machine the controller can fence a stalled broker and re-admit
/// it seconds later). A reader polls on, bounded by its own deadline, instead of failing.
pub fn is_transient(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{
        AllBrokersDown, BrokerTransportFailure, NetworkException, Resolve,
    };
    matches!(
        error,
        KafkaError::MessageConsumption(
            AllBrokersDown | BrokerTransportFailure | NetworkException | Resolve
        )
    )
}

/// Every committed record of `topic`, read from the beginning to the end of each partition.
pub fn read_all_committed(topic: &str, partitions: i32) -> Vec<(String, String)> {
    read_all_committed_on(&kafka_brokers(), topic, partitions)
}

/// [`read_all_committed`] on `brokers`.
pub fn read_all_committed_on(brokers: &str, topic: &str, partitions: i32) -> Vec<(String, String)> {
    let consumer = read_committed_consumer_on(brokers, topic, partitions);
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
            Some(Err(error)) if is_transient(&error) => {
                eprintln!("reading {topic}: {error} (transient, polling on)")
            }
            Some(Err(error)) => panic!("reading {topic} failed: {error}"),
            None => {}
        }
    }
    records
}

/// A small reproducible generator for kill moments; the seed is printed to rerun a failure.
pub fn kill_points(total: usize) -> Vec<usize> {
    let seed = std::env::var("TICKSTREAM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| tickstream_model::clock::since_epoch().as_nanos() as u64);
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

/// The value of an unlabelled-by-us metric line, e.g. `tickstream_assigned_partitions`.
pub fn metric(address: SocketAddr, name: &str, label_filter: &str) -> Option<f64> {
    let (_, page) = http_get(address, "/metrics")?;
    page.lines()
        .filter(|line| line.starts_with(name) && line.contains(label_filter))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

/// `GET path` over HTTP/1.0: the status and the body, or `None` if nothing answered.
pub fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Waits (polling the endpoint, bounded) until `condition` holds for the metric.
pub fn wait_for_metric(
    app: &mut ChildProcess,
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

/// Produces the ticks in the full raw format, key = symbol, and waits for every delivery.
pub fn produce_ticks(topic: &str, ticks: &[(tickstream_model::Symbol, f64, i64)]) {
    produce_ticks_on(&kafka_brokers(), topic, ticks);
}

/// [`produce_ticks`] on `brokers`; returns once every tick is acknowledged.
pub fn produce_ticks_on(
    brokers: &str,
    topic: &str,
    ticks: &[(tickstream_model::Symbol, f64, i64)],
) {
    use tickstream_model::{RawTick, RecordFormat};
    // Kafka's default partitioner for keys (Java, kafka-python; librdkafka's murmur2_random):
    // each symbol lands in the partition enrich expects it in, so it needs no repartition hop.
    let producer = producer(
        brokers,
        &[("linger.ms", "20"), ("partitioner", "murmur2_random")],
    );
    block_on(async {
        let mut deliveries = Vec::with_capacity(ticks.len());
        for &(symbol, price, ts) in ticks {
            let value = RawTick::new(symbol, price)
                .with_ts(ts)
                .with_source("synthetic")
                .encode(RecordFormat::Full);
            let record = FutureRecord::to(topic).key(symbol.as_str()).payload(&value);
            deliveries.push(
                producer
                    .send_result(record)
                    .unwrap_or_else(|(e, _)| panic!("enqueueing to {topic} failed: {e}")),
            );
        }
        for delivery in futures::future::join_all(deliveries).await {
            delivery
                .expect("producer alive")
                .unwrap_or_else(|(e, _)| panic!("delivery to {topic} failed: {e}"));
        }
    });
}

/// The value of header `name` of a consumed record, as text.
pub fn header(message: &impl Message, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// A Kafka broker of the test's own (scripts/kafka.sh with its own ports and directory), for
/// tests that stop and restart the broker under a running processor: the shared broker
/// serves every other test at the same time and must never go down.
pub struct PrivateBroker {
    dir: tempfile::TempDir,
    port: u16,
    controller_port: u16,
}

impl PrivateBroker {
    /// Starts a fresh single-node broker and waits until it answers metadata.
    pub fn start() -> Self {
        // Below the ephemeral range (32768–60999 here), so no client's outgoing connection takes
        // the port while the broker is down for a restart; a different one on every call.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let free_port = || {
            let base = std::process::id() % 5_000;
            (0..5_000)
                .map(|_| {
                    20_000 + ((base + NEXT.fetch_add(1, Ordering::Relaxed) * 2) % 10_000) as u16
                })
                .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
                .expect("a free port in 20000-29999")
        };
        let broker = Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            port: free_port(),
            controller_port: free_port(),
        };
        broker.up();
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, action: &str) -> ExitStatus {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh");
        Command::new("bash")
            .arg(script)
            .arg(action)
            .env("TICKSTREAM_SERVICES_DIR", self.dir.path())
            .env("TICKSTREAM_KAFKA_PORT", self.port.to_string())
            .env(
                "TICKSTREAM_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .env("TICKSTREAM_KAFKA_HEAP", "512m")
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running scripts/kafka.sh {action}: {e}"))
    }

    /// Starts the broker (again, on the same data): returns once it answers metadata.
    pub fn up(&self) {
        let status = self.script("up");
        assert!(
            status.success(),
            "scripts/kafka.sh up for the private broker failed ({status})"
        );
    }

    /// Freezes the broker's JVM (SIGSTOP): connections stay open and nothing is answered, as
    /// when a starved or paused JVM stalls. [`Self::thaw`] lets it go on.
    pub fn freeze(&self) {
        self.signal("STOP")
            .unwrap_or_else(|e| panic!("freezing the private broker: {e}"));
    }

    pub fn thaw(&self) {
        self.signal("CONT")
            .unwrap_or_else(|e| panic!("thawing the private broker: {e}"));
    }

    fn signal(&self, signal: &str) -> Result<(), String> {
        let pid_file = self.dir.path().join("kafka/kafka.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("reading {}: {e}", pid_file.display()))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.trim())
            .status()
            .map_err(|e| format!("running kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {} failed ({status})", pid.trim()))
        }
    }

    /// Stops the broker (SIGTERM, waits for it to exit); its data stays for [`Self::up`].
    pub fn down(&self) {
        let status = self.script("down");
        assert!(
            status.success(),
            "scripts/kafka.sh down for the private broker failed ({status})"
        );
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // A frozen JVM would never act on the SIGTERM of `down` (a test that failed mid-freeze).
        let _ = self.signal("CONT");
        let _ = self.script("down");
    }
}
