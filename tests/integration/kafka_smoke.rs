//! The broker does what the runtime will rely on: keyed partitioning with an idempotent
//! producer, consumer groups that resume after committed offsets, and transactions that
//! `read_committed` consumers see only once committed.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::{FutureRecord, Producer};

use crate::support::{
    SERVICE_TIMEOUT, check_kafka, consumer, create_topic, produce_keyed, producer, receive,
    require_kafka, unique_name, value_number,
};

#[tokio::test]
async fn keyed_messages_round_trip_and_a_group_resumes_after_its_commit() {
    let brokers = require_kafka();
    let topic = unique_name("smoke-keyed");
    let group = unique_name("smoke-group");
    create_topic(&brokers, &topic, 3).await;
    let producer = producer(&brokers, &[]);
    let partition_of_key = produce_keyed(&producer, &topic, 0..10_000, 37).await;
    let used: std::collections::HashSet<_> = partition_of_key.values().collect();
    assert_eq!(used.len(), 3, "37 keys should reach all 3 partitions");

    let first = consumer(&brokers, &group, "read_committed");
    first.subscribe(&[&topic]).expect("subscribe");
    let records = receive(&first, 10_000, &topic).await;

    // Every value exactly once, and per key in production order (Kafka orders per partition).
    let mut values: Vec<u32> = records.iter().map(|r| value_number(&r.value)).collect();
    let mut last_of_key: HashMap<&str, u32> = HashMap::new();
    for (record, &value) in records.iter().zip(&values) {
        assert_eq!(partition_of_key[&record.key], record.partition);
        if let Some(previous) = last_of_key.insert(&record.key, value) {
            assert!(
                previous < value,
                "key {}: {value} after {previous}",
                record.key
            );
        }
    }
    values.sort_unstable();
    assert_eq!(values, (0..10_000).collect::<Vec<_>>());

    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit offsets");
    // The commit is checked by where the next member resumes, not by `Consumer::committed`:
    // with librdkafka 2.12 against Kafka 4.1, `rd_kafka_committed` leaves a broker reference
    // behind and the consumer's destroy then blocks forever (seen here, stack in rd_kafka_destroy).
    drop(first);

    // A new member of the same group starts after the commit: only the new records arrive.
    produce_keyed(&producer, &topic, 10_000..10_100, 37).await;
    let second = consumer(&brokers, &group, "read_committed");
    second.subscribe(&[&topic]).expect("subscribe");
    let mut resumed: Vec<u32> = receive(&second, 100, &topic)
        .await
        .iter()
        .map(|r| value_number(&r.value))
        .collect();
    resumed.sort_unstable();
    assert_eq!(resumed, (10_000..10_100).collect::<Vec<_>>());
}

#[tokio::test]
async fn transactions_aborted_are_invisible_and_committed_are_visible_in_order() {
    let brokers = require_kafka();
    let topic = unique_name("smoke-txn");
    create_topic(&brokers, &topic, 1).await;
    let transactional_id = unique_name("smoke-txn-producer");
    let producer = producer(&brokers, &[("transactional.id", &transactional_id)]);
    producer
        .init_transactions(SERVICE_TIMEOUT)
        .expect("init transactions");

    let send_all = |prefix: &'static str| {
        let producer = &producer;
        let topic = &topic;
        async move {
            let deliveries: Vec<_> = (0..50)
                .map(|i| {
                    let payload = format!("{prefix}-{i}");
                    producer
                        .send_result(FutureRecord::to(topic).key("k").payload(&payload))
                        .unwrap_or_else(|(e, _)| panic!("enqueue {payload}: {e}"))
                })
                .collect();
            for outcome in join_all(deliveries).await {
                outcome
                    .expect("delivery reported")
                    .expect("record written to the log");
            }
        }
    };

    producer.begin_transaction().expect("begin");
    send_all("aborted").await; // written to the log, then aborted
    producer.abort_transaction(SERVICE_TIMEOUT).expect("abort");
    producer.begin_transaction().expect("begin");
    send_all("committed").await;
    producer
        .commit_transaction(SERVICE_TIMEOUT)
        .expect("commit");

    let expect = |prefix: &str| (0..50).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>();

    let committed_reader = consumer(&brokers, &unique_name("smoke-rc"), "read_committed");
    committed_reader.subscribe(&[&topic]).expect("subscribe");
    let seen: Vec<String> = receive(&committed_reader, 50, &topic)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(seen, expect("committed"));

    // The aborted records really are in the log: a read_uncommitted reader sees them first.
    let uncommitted_reader = consumer(&brokers, &unique_name("smoke-ru"), "read_uncommitted");
    uncommitted_reader.subscribe(&[&topic]).expect("subscribe");
    let all: Vec<String> = receive(&uncommitted_reader, 100, &topic)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(all[..50], expect("aborted")[..]);
    assert_eq!(all[50..], expect("committed")[..]);
}

#[test]
fn an_unreachable_broker_is_reported_promptly_and_readably() {
    // A port nothing listens on: bind an ephemeral one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port");
    let address = format!("127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let error = check_kafka(&address, Duration::from_secs(2)).expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        error.contains(&address) && error.contains("make services-up"),
        "{error}"
    );
}
