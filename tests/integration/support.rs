//! What every integration test needs: where the services are, a check that they answer (with a
//! readable failure instead of a hang), and names no other test run uses.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// How long any single wait on a service may take before the test fails instead of hanging.
pub const SERVICE_TIMEOUT: Duration = Duration::from_secs(30);

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
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
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
