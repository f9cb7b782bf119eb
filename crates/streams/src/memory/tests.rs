use std::collections::HashMap;

use super::*;
use crate::config::StreamsConfig;
use crate::counting::CountingProcessor;
use crate::dlq_headers;

fn record(key: Option<&str>, value: &str) -> StoredRecord {
    StoredRecord {
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.into(),
        timestamp: Some(1),
        headers: vec![],
    }
}

fn counting_config(source: &str, output: &str) -> StreamsConfig {
    let mut config = StreamsConfig::new("app", "", &[source]);
    config.store_name = "counts".to_owned();
    config.dead_letter_topic = "app.dead-letters".to_owned();
    config.output_topics = vec![output.to_owned()];
    config
}

#[test]
fn the_same_processor_runs_per_partition_with_per_key_order_and_dead_letters() {
    let broker = InMemoryBroker::new();
    broker.create_topic("words", 3);
    let mut streams = InMemoryStreams::new(
        Arc::clone(&broker),
        &counting_config("words", "counts"),
        None,
        |_| CountingProcessor::new("counts"),
    )
    .expect("in-memory stores");
    let keys = ["a", "b", "c", "d", "e"];
    let inputs: Vec<_> = (0..50).map(|i| record(Some(keys[i % 5]), "x")).collect();
    broker.produce("words", inputs).expect("topic exists");
    broker
        .produce("words", vec![record(None, "keyless")])
        .expect("topic exists");

    assert_eq!(streams.run_once().expect("run"), 51);
    assert_eq!(
        streams.run_once().expect("run"),
        0,
        "committed records are not read again"
    );
    assert_eq!(
        broker.usage("words").expect("words").records,
        0,
        "the only reader committed them all: released"
    );

    let mut last_count: HashMap<Vec<u8>, u64> = HashMap::new();
    for partition in 0..3 {
        for out in broker
            .read("counts", partition, 0, usize::MAX)
            .expect("counts")
        {
            let text = String::from_utf8_lossy(&out.value).into_owned();
            let count: u64 = text
                .rsplit_once('@')
                .and_then(|(_, count)| count.parse().ok())
                .expect("value@count");
            let previous = last_count
                .insert(out.key.clone().expect("keyed"), count)
                .unwrap_or(0);
            assert_eq!(
                count,
                previous + 1,
                "counts per key arrive in order, each once"
            );
        }
    }
    assert!(last_count.values().all(|&c| c == 10), "{last_count:?}");

    let dead: Vec<_> = (0..3)
        .flat_map(|p| broker.read("app.dead-letters", p, 0, 10).expect("dlq"))
        .collect();
    assert_eq!(dead.len(), 1, "the configured dead-letter topic");
    assert_eq!(dead[0].value, b"keyless");
    assert!(
        dead[0]
            .headers
            .contains(&(dlq_headers::ERROR_CODE.to_owned(), "missing_key".to_owned()))
    );
}

#[test]
fn reading_an_unknown_topic_says_how_to_fix_it() {
    let broker = InMemoryBroker::new();
    let error = broker.read("nope", 0, 0, 1).expect_err("no such topic");
    assert!(error.to_string().contains("create it first"), "{error}");
    broker.create_topic("t", 1);
    let error = broker.poll("g", "t", 0, 1).expect_err("not subscribed");
    assert!(error.to_string().contains("subscribe it first"), "{error}");
}

/// 100,000 records through a topic capped at 1,000: a producer thread that waits for room and
/// a reader group that commits what it read. The topic never holds more than the cap plus one
/// batch, and ends empty.
#[test]
fn consumed_records_are_released_and_a_full_topic_holds_the_producer_back() {
    const TOTAL: usize = 100_000;
    const PRODUCE_BATCH: usize = 100;
    let capacity = TopicCapacity {
        records: 1_000,
        bytes: usize::MAX,
    };
    let broker = InMemoryBroker::with_capacity(capacity);
    broker.create_topic("ticks", 4);
    broker.subscribe("reader", "ticks").expect("topic exists");
    let producer = {
        let broker = Arc::clone(&broker);
        std::thread::spawn(move || {
            for batch in 0..TOTAL / PRODUCE_BATCH {
                let records = (0..PRODUCE_BATCH)
                    .map(|i| record(Some(&format!("k{}", i % 7)), &format!("{batch}-{i}")))
                    .collect();
                broker.produce("ticks", records).expect("topic open");
            }
            broker.close("ticks");
        })
    };
    // Read nothing until the topic is full: the producer is then held back, whatever the
    // threads' speeds (a reader that kept up would never see the cap).
    while broker.usage("ticks").expect("ticks").records < capacity.records {
        let seen = broker.generation();
        broker.wait_for_change(seen, Duration::from_millis(100));
    }
    let mut read = 0;
    let mut largest = 0;
    let mut ended = [false; 4];
    while !ended.iter().all(|e| *e) {
        let seen = broker.generation();
        let mut got = 0;
        for partition in 0..4 {
            let fetched = broker
                .poll("reader", "ticks", partition, 300)
                .expect("poll");
            ended[partition as usize] = fetched.end_of_partition;
            got += fetched.records.len();
            largest = largest.max(broker.usage("ticks").expect("ticks").records);
            broker
                .commit("reader", "ticks", partition, fetched.next_offset())
                .expect("commit");
        }
        read += got;
        if got == 0 {
            broker.wait_for_change(seen, Duration::from_millis(100));
        }
    }
    producer.join().expect("producer thread");
    assert_eq!(read, TOTAL, "every record read once");
    assert!(
        largest <= capacity.records + PRODUCE_BATCH,
        "at most the cap plus one batch retained, saw {largest}"
    );
    assert!(
        largest >= capacity.records / 2,
        "the cap was reached ({largest})"
    );
    assert_eq!(broker.usage("ticks").expect("ticks"), TopicUsage::default());
}

#[test]
fn a_record_stays_until_every_group_committed_it_or_left() {
    let broker = InMemoryBroker::new();
    broker.create_topic("t", 1);
    broker.subscribe("fast", "t").expect("t");
    broker.subscribe("slow", "t").expect("t");
    broker
        .produce("t", vec![record(Some("k"), "1"), record(Some("k"), "2")])
        .expect("t");
    let fetched = broker.poll("fast", "t", 0, 10).expect("poll");
    assert_eq!(fetched.records.len(), 2);
    broker
        .commit("fast", "t", 0, fetched.next_offset())
        .expect("commit");
    assert_eq!(
        broker.usage("t").expect("t").records,
        2,
        "slow has not read them"
    );
    broker.leave("slow");
    assert_eq!(broker.usage("t").expect("t").records, 0);
}

#[test]
fn closed_topics_end_their_readers_and_refuse_records() {
    let broker = InMemoryBroker::new();
    broker.create_topic("t", 1);
    broker.subscribe("g", "t").expect("t");
    broker
        .produce("t", vec![record(Some("k"), "1")])
        .expect("t");
    broker.close("t");
    let fetched = broker.poll("g", "t", 0, 10).expect("poll");
    assert_eq!(fetched.records.len(), 1);
    assert!(
        fetched.end_of_partition,
        "read to the end of a closed topic"
    );
    let error = broker
        .produce("t", vec![record(None, "late")])
        .expect_err("closed");
    assert!(matches!(error, MemoryError::Closed(_)), "{error}");
}

/// The end of the input travels downstream: `run` returns once its closed inputs are all
/// processed, with every output committed, and closes its outputs for the next reader.
#[test]
fn streams_run_to_the_end_of_closed_inputs_and_close_their_outputs() {
    let broker = InMemoryBroker::new();
    broker.create_topic("words", 2);
    let mut config = counting_config("words", "counts");
    config.commit_interval = Duration::from_secs(3600);
    let mut streams = InMemoryStreams::new(Arc::clone(&broker), &config, None, |_| {
        CountingProcessor::new("counts")
    })
    .expect("in-memory stores");
    broker.subscribe("next", "counts").expect("counts exists");
    let inputs: Vec<_> = (0..5000)
        .map(|i| record(Some(&format!("k{}", i % 9)), "x"))
        .collect();
    broker.produce("words", inputs).expect("words");
    broker.close("words");
    streams
        .run(&crate::Shutdown::new())
        .expect("runs to the end");

    let mut counted = 0;
    for partition in 0..2 {
        let fetched = broker
            .poll("next", "counts", partition, usize::MAX)
            .expect("poll");
        assert!(fetched.end_of_partition, "the output is closed");
        counted += fetched.records.len();
    }
    assert_eq!(counted, 5000, "committed at the end, not at the hour");
}

/// A producer waiting for room on a full topic is released with an error when the topic's
/// last reader leaves (its records would never be read: without this it would wait for ever).
#[test]
fn a_producer_held_back_by_a_reader_that_left_gets_an_error() {
    let capacity = TopicCapacity {
        records: 2,
        bytes: usize::MAX,
    };
    let broker = InMemoryBroker::with_capacity(capacity);
    broker.create_topic("t", 1);
    broker.subscribe("reader", "t").expect("t");
    broker
        .produce("t", vec![record(Some("k"), "1"), record(Some("k"), "2")])
        .expect("room for two");
    let producer = {
        let broker = Arc::clone(&broker);
        std::thread::spawn(move || broker.produce("t", vec![record(Some("k"), "3")]))
    };
    // The producer is waiting (the topic is at its cap) until the reader goes.
    broker.leave("reader");
    let outcome = producer.join().expect("producer thread");
    assert!(
        matches!(outcome, Err(MemoryError::Abandoned(ref topic)) if topic == "t"),
        "{outcome:?}"
    );
    assert_eq!(broker.usage("t").expect("t"), TopicUsage::default());
}

#[tokio::test]
async fn an_async_reader_wakes_on_an_append_or_a_close_and_not_before() {
    let broker = InMemoryBroker::new();
    broker.create_topic("t", 1);
    broker.subscribe("g", "t").expect("subscribe");
    let seen = broker.generation();
    let idle = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        broker.changed_since(seen),
    );
    assert!(idle.await.is_err(), "nothing new: the reader keeps waiting");

    let waiter = {
        let broker = std::sync::Arc::clone(&broker);
        tokio::spawn(async move { broker.changed_since(seen).await })
    };
    broker
        .produce("t", vec![record(Some("k"), "v")])
        .expect("produce");
    waiter.await.expect("woken by the append");

    let seen = broker.generation();
    let waiter = {
        let broker = std::sync::Arc::clone(&broker);
        tokio::spawn(async move { broker.changed_since(seen).await })
    };
    broker.close("t");
    waiter.await.expect("woken by the close");
}
