//! What every integration test needs: where the services are, a check that they answer (with a
//! readable failure instead of a hang), and names no other test run uses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

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
