//! Ingest throughput: the synthetic source into the real broker, every tick acknowledged
//! (`acks=all`, idempotent producer), reported as ticks/s.
//!
//! `cargo bench --bench ingest` produces 2,000,000 ticks; without `--bench` (as
//! `cargo test --all-targets` runs it) a smoke run of one source batch (≤ 10,000 ticks) checks
//! that the path works.
//! Needs the broker (`make services-up`; TICKSTREAM_KAFKA_BROKERS, default 127.0.0.1:39092).

use std::time::{Duration, Instant};

use tickstream_ingest::{IngestMetrics, KafkaTickSink, Source, TickTransport};
use tickstream_model::Topology;
use tickstream_streams::KafkaSettings;

mod support;

fn main() {
    let measuring = support::benchmarking();
    let ticks: u64 = if measuring { 2_000_000 } else { 1_000 };
    let Some(brokers) = support::broker("ingest") else {
        return;
    };
    let topic = format!(
        "ingest-bench-{}-{}",
        std::process::id(),
        tickstream_ingest::metrics::now_ms()
    );
    support::create_topic(&brokers, &topic, 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(&topic, ticks, measuring, &brokers));
    support::delete_topics(&brokers, &topic);
}

async fn run(topic: &str, ticks: u64, measuring: bool, brokers: &str) {
    let topology = Topology::from_str(&format!(
        r#"
        application_id = "ingest-bench"
        symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        [topics]
        raw = "{topic}"
        [source]
        kind = "synthetic"
        seed = 42
        ticks_per_second = 1e12   # as fast as the producer takes them
        "#
    ))
    .expect("a valid topology");
    let metrics = IngestMetrics::new("ingest-bench");

    // The source alone, for scale.
    let mut source = Source::from_topology(&topology, &metrics).expect("a synthetic source");
    let started = Instant::now();
    let mut generated = 0u64;
    while generated < ticks {
        generated += next(&mut source).await.len() as u64;
    }
    let generate_rate = generated as f64 / started.elapsed().as_secs_f64();

    let mut source = Source::from_topology(&topology, &metrics).expect("a synthetic source");
    let mut sink = KafkaTickSink::new(&topology, brokers, &KafkaSettings::default(), &metrics)
        .expect("a producer");
    sink.check_connected(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e} (start it with `make services-up`)"));
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < ticks {
        let batch = next(&mut source).await;
        sent += batch.len() as u64;
        sink.send_batch(&batch).await.expect("enqueued");
    }
    sink.flush(Duration::from_secs(120))
        .await
        .expect("every tick acknowledged");
    let took = started.elapsed();
    assert_eq!(sink.delivered(), sent, "every tick acknowledged once");
    let rate = sent as f64 / took.as_secs_f64();
    if measuring {
        println!(
            "ingest/synthetic→kafka: {sent} ticks produced and acknowledged in {:.2} s = {:.0} ticks/s \
             (source alone: {:.0} ticks/s; topic {topic}, 3 partitions)",
            took.as_secs_f64(),
            rate,
            generate_rate
        );
    } else {
        println!(
            "ingest bench smoke run: {sent} ticks acknowledged (run with `cargo bench` to measure)"
        );
    }
}

async fn next(source: &mut Source) -> Vec<tickstream_model::RawTick> {
    source
        .next_batch()
        .await
        .expect("the synthetic source never fails")
        .expect("the synthetic source never ends")
}
