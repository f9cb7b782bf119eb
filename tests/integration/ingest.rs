//! Integration tests of tickstream ingest: the Binance sources against a fake Binance on
//! 127.0.0.1 (HTTP via axum, WebSocket via tokio-tungstenite) serving Binance's exact JSON, and
//! the Kafka side against the real broker.

mod fake_binance;
mod websocket;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use tickstream_ingest::{
    Backoff, BreakerState, IngestMetrics, KafkaTickSink, Politeness, Source, SourceError, Stopped,
    TickTransport,
};
use tickstream_model::{DecodeOptions, Topology};
use tickstream_streams::{Health, KafkaSettings, Shutdown};

use self::fake_binance::{FakeBinance, PRICES, Reply};
use crate::support::{consumer, create_topic, receive, require_kafka, unique_name};

/// Short backoffs, so retries take milliseconds.
fn fast_politeness() -> Politeness {
    Politeness {
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        ..Politeness::default()
    }
}

fn rest_topology(base_url: &str, raw: &str, breaker_failures: u32, timeout: &str) -> Topology {
    Topology::from_str(&format!(
        r#"
        application_id = "ingest-test"
        symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        [topics]
        raw = "{raw}"
        [source]
        kind = "binance-rest"
        base_url = "{base_url}"
        allow_plain_transport = true
        interval = "100ms"
        request_timeout = "{timeout}"
        [source.breaker]
        failures = {breaker_failures}
        open_for = "1s"
        "#
    ))
    .expect("a valid test topology")
}

fn fast_source(topology: &Topology, metrics: &IngestMetrics) -> Source {
    Source::from_topology_with(topology, metrics, &fast_politeness()).expect("a source")
}

async fn one_batch(source: &mut Source) -> Vec<tickstream_model::RawTick> {
    tokio::time::timeout(Duration::from_secs(20), source.next_batch())
        .await
        .expect("a batch within 20 s")
        .expect("no fatal error")
        .expect("live sources never end")
}

/// Polls `condition` every 10 ms until it holds; fails after `limit`.
async fn wait_until(what: &str, limit: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn rest_polls_all_symbols_in_one_request_and_produces_full_records() {
    let brokers = require_kafka();
    let fake = FakeBinance::start(|_, _| Reply::prices(&PRICES)).await;
    let topic = unique_name("ingest-raw");
    create_topic(&brokers, &topic, 3).await;
    let topology = rest_topology(&fake.base_url, &topic, 5, "2s");
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = fast_source(&topology, &metrics);
    let mut sink = KafkaTickSink::new(&topology, &brokers, &KafkaSettings::default(), &metrics)
        .expect("a producer");
    sink.check_connected(Duration::from_secs(10))
        .await
        .expect("the broker answers");
    let health = Health::default();

    let requests = Arc::clone(&fake.requests);
    let two_polls = wait_until("two polls", Duration::from_secs(20), move || {
        requests.lock().expect("not poisoned").len() >= 2
    });
    let shutdown = Shutdown::new();
    // In one task, so a timed-out wait fails the test instead of leaving ingest running.
    let (stopped, ()) = tokio::join!(
        tickstream_ingest::run(
            &mut source,
            &mut sink,
            &metrics,
            &health,
            &shutdown,
            Duration::from_secs(20),
        ),
        async {
            two_polls.await;
            shutdown.request();
        }
    );
    let stopped = stopped.expect("ingest runs");
    assert_eq!(stopped, Stopped::Shutdown);

    for (_, target) in fake.requests() {
        assert_eq!(
            target, "/api/v3/ticker/price?symbols=%5B%22BTCUSDT%22,%22ETHUSDT%22,%22SOLUSDT%22%5D",
            "one batched request per interval"
        );
    }
    let delivered = sink.delivered() as usize;
    assert!(
        delivered >= 3 && delivered.is_multiple_of(3),
        "delivered {delivered}"
    );
    let consumer = consumer(&brokers, &unique_name("ingest-check"), "read_committed");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let records = receive(&consumer, delivered, &topic).await;
    let decode = DecodeOptions::new();
    for record in &records {
        let tick = decode
            .decode(record.value.as_bytes())
            .expect("a valid raw tick");
        assert_eq!(record.key, tick.symbol.as_str(), "key = symbol");
        let want = PRICES
            .iter()
            .find(|(s, _)| *s == record.key)
            .expect("a known symbol");
        assert_eq!(tick.price, want.1.parse::<f64>().expect("a number"));
        assert!(
            tick.ts.is_some_and(|ts| ts > 1_700_000_000_000),
            "receive time"
        );
        assert_eq!(tick.source.as_deref(), Some("binance-rest/receive-time"));
    }
    for (symbol, _) in PRICES {
        assert_eq!(
            metrics.ticks_produced.with_label_values(&[symbol]).get() as usize,
            delivered / 3
        );
    }
}

#[tokio::test]
async fn seed_layout_writes_reference_records_to_per_coin_topics() {
    let brokers = require_kafka();
    let fake = FakeBinance::start(|_, _| Reply::prices(&PRICES)).await;
    let [btc, eth, sol] = ["btc", "eth", "sol"].map(|coin| unique_name(&format!("ingest-{coin}")));
    for topic in [&btc, &eth, &sol] {
        create_topic(&brokers, topic, 1).await;
    }
    let seed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/seed.toml"))
            .expect("topologies/seed.toml");
    let seed = seed
        .replace(
            r#"raw = { BTCUSDT = "btc", ETHUSDT = "eth", SOLUSDT = "sol" }"#,
            &format!(r#"raw = {{ BTCUSDT = "{btc}", ETHUSDT = "{eth}", SOLUSDT = "{sol}" }}"#),
        )
        .replace(
            r#"base_url = "https://api.binance.com""#,
            &format!(
                "base_url = \"{}\"\nallow_plain_transport = true",
                fake.base_url
            ),
        );
    let topology = Topology::from_str(&seed).expect("the seed topology");
    assert_eq!(
        topology.raw_topics().len(),
        3,
        "the per-coin layout was kept"
    );
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = fast_source(&topology, &metrics);
    let mut sink = KafkaTickSink::new(&topology, &brokers, &KafkaSettings::default(), &metrics)
        .expect("a producer");
    let ticks = one_batch(&mut source).await;
    sink.send_batch(&ticks).await.expect("enqueued");
    sink.flush(Duration::from_secs(20))
        .await
        .expect("acknowledged");

    for (topic, (symbol, _), reference) in [
        (
            &btc,
            PRICES[0],
            r#"{"symbol": "BTCUSDT", "price": 67234.5}"#,
        ),
        (
            &eth,
            PRICES[1],
            r#"{"symbol": "ETHUSDT", "price": 3100.01}"#,
        ),
        (&sol, PRICES[2], r#"{"symbol": "SOLUSDT", "price": 150.25}"#),
    ] {
        let consumer = consumer(&brokers, &unique_name("ingest-seed"), "read_committed");
        consumer.subscribe(&[topic]).expect("subscribe");
        let records = receive(&consumer, 1, topic).await;
        assert_eq!(records[0].key, symbol);
        // Byte for byte what the reference's json.dumps wrote.
        assert_eq!(records[0].value, reference);
    }
}

#[tokio::test]
async fn rest_429_waits_retry_after_then_polls_again() {
    let fake = FakeBinance::start(|_, n| match n {
        0 => Reply::status(429, r#"{"code":-1003,"msg":"Too many requests."}"#)
            .header("retry-after", "1"),
        _ => Reply::prices(&PRICES),
    })
    .await;
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = fast_source(&rest_topology(&fake.base_url, "unused", 5, "2s"), &metrics);
    let ticks = one_batch(&mut source).await;
    assert_eq!(ticks.len(), 3);
    assert!(
        fake.gap(0, 1) >= Duration::from_secs(1),
        "waited {:?}",
        fake.gap(0, 1)
    );
    assert_eq!(
        metrics.rate_limit_waits.with_label_values(&["429"]).get(),
        1
    );
}

#[tokio::test]
async fn rest_418_ban_waits_retry_after_then_polls_again() {
    let fake = FakeBinance::start(|_, n| match n {
        0 => Reply::status(
            418,
            r#"{"code":-1003,"msg":"Way too many requests; IP banned."}"#,
        )
        .header("retry-after", "1"),
        _ => Reply::prices(&PRICES),
    })
    .await;
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = fast_source(&rest_topology(&fake.base_url, "unused", 5, "2s"), &metrics);
    assert_eq!(one_batch(&mut source).await.len(), 3);
    assert!(
        fake.gap(0, 1) >= Duration::from_secs(1),
        "waited {:?}",
        fake.gap(0, 1)
    );
    assert_eq!(
        metrics.rate_limit_waits.with_label_values(&["418"]).get(),
        1
    );
}

#[tokio::test]
async fn rest_5xx_are_retried_with_backoff_until_recovery() {
    let fake = FakeBinance::start(|_, n| match n {
        0 => Reply::status(500, "internal error"),
        1 => Reply::status(503, "<html>Service Unavailable</html>"),
        _ => Reply::prices(&PRICES),
    })
    .await;
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = fast_source(&rest_topology(&fake.base_url, "unused", 5, "2s"), &metrics);
    assert_eq!(one_batch(&mut source).await.len(), 3);
    assert_eq!(fake.requests().len(), 3);
    // Backoff with jitter: at least half the step (50 ms, then 100 ms).
    assert!(
        fake.gap(0, 1) >= Duration::from_millis(25),
        "{:?}",
        fake.gap(0, 1)
    );
    assert!(
        fake.gap(1, 2) >= Duration::from_millis(50),
        "{:?}",
        fake.gap(1, 2)
    );
    assert_eq!(metrics.breaker_state.get(), 0, "closed again");
}

#[tokio::test]
async fn rest_timeouts_are_failures_retried_after_backoff() {
    let fake = FakeBinance::start(|_, n| match n {
        0 => Reply {
            delay: Duration::from_secs(3),
            ..Reply::prices(&PRICES)
        },
        _ => Reply::prices(&PRICES),
    })
    .await;
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = fast_source(
        &rest_topology(&fake.base_url, "unused", 5, "300ms"),
        &metrics,
    );
    let started = Instant::now();
    assert_eq!(one_batch(&mut source).await.len(), 3);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(3),
        "did not wait for the slow answer: {took:?}"
    );
    assert_eq!(fake.requests().len(), 2);
    assert_eq!(metrics.request_duration.get_sample_count(), 2);
}

#[tokio::test]
async fn rest_malformed_bodies_are_counted_and_survived() {
    let fake = FakeBinance::start(|_, n| match n {
        0 => Reply::status(200, "<html>captive portal</html>"),
        1 => Reply::status(200, r#"[{"symbol":"BTCUSDT","price":"not a number"}]"#),
        _ => Reply::prices(&PRICES),
    })
    .await;
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = fast_source(&rest_topology(&fake.base_url, "unused", 5, "2s"), &metrics);
    assert_eq!(one_batch(&mut source).await.len(), 3);
    assert_eq!(metrics.malformed_responses.get(), 2);
}

#[tokio::test]
async fn rest_breaker_opens_after_failures_and_a_half_open_probe_closes_it() {
    let fake = FakeBinance::start(|_, n| match n {
        0 | 1 => Reply::status(502, "bad gateway"),
        _ => Reply::prices(&PRICES),
    })
    .await;
    let metrics = IngestMetrics::new("ingest-test");
    // Opens after 2 consecutive failures, for 1 s.
    let mut source = fast_source(&rest_topology(&fake.base_url, "unused", 2, "2s"), &metrics);
    let poll = tokio::spawn(async move { one_batch(&mut source).await });
    let gauge = metrics.breaker_state.clone();
    wait_until("the breaker to open", Duration::from_secs(10), move || {
        gauge.get() == BreakerState::Open.gauge_value()
    })
    .await;
    let ticks = poll.await.expect("the poll task");
    assert_eq!(ticks.len(), 3);
    assert_eq!(fake.requests().len(), 3, "no request while open");
    assert!(
        fake.gap(0, 1) < Duration::from_secs(1),
        "a backoff, not the breaker"
    );
    assert!(
        fake.gap(1, 2) >= Duration::from_secs(1),
        "open for 1 s: {:?}",
        fake.gap(1, 2)
    );
    assert_eq!(
        metrics.breaker_state.get(),
        BreakerState::Closed.gauge_value()
    );
}

#[tokio::test]
async fn rest_unknown_symbol_is_a_startup_error_naming_it() {
    let invalid = Reply::status(400, r#"{"code":-1121,"msg":"Invalid symbol."}"#);
    let fake = FakeBinance::start(move |target, _| {
        if target.contains("symbols=") || target.contains("symbol=NOPEUSDT") {
            invalid.clone()
        } else {
            Reply::prices(&PRICES[..1])
        }
    })
    .await;
    let topology = Topology::from_str(&format!(
        r#"
        symbols = ["BTCUSDT", "NOPEUSDT"]
        [source]
        kind = "binance-rest"
        base_url = "{}"
        allow_plain_transport = true
        "#,
        fake.base_url
    ))
    .expect("a valid topology");
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = fast_source(&topology, &metrics);
    let error = source.next_batch().await.expect_err("a start-up error");
    assert!(
        matches!(&error, SourceError::UnknownSymbol { symbols, .. } if symbols == &["NOPEUSDT"]),
        "{error}"
    );
    assert!(error.to_string().contains("NOPEUSDT"), "{error}");
    assert!(
        error.to_string().contains("symbols"),
        "says how to fix: {error}"
    );
}

#[tokio::test]
async fn replay_file_goes_to_kafka_and_the_run_ends_with_the_file() {
    let brokers = require_kafka();
    let topic = unique_name("ingest-replay");
    create_topic(&brokers, &topic, 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ticks.jsonl");
    std::fs::write(
        &path,
        "{\"symbol\":\"BTCUSDT\",\"price\":1.5,\"ts\":1000,\"source\":\"binance\"}\n\
         garbage\n\
         {\"symbol\": \"ETHUSDT\", \"price\": 2.5}\n",
    )
    .expect("write");
    let topology = Topology::from_str(&format!(
        r#"
        symbols = ["BTCUSDT", "ETHUSDT"]
        [topics]
        raw = "{topic}"
        [source]
        kind = "replay"
        path = "{}"
        speed = "max"
        "#,
        path.display()
    ))
    .expect("a valid topology");
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = Source::from_topology(&topology, &metrics).expect("the file opens");
    let mut sink = KafkaTickSink::new(&topology, &brokers, &KafkaSettings::default(), &metrics)
        .expect("a producer");
    let stopped = tickstream_ingest::run(
        &mut source,
        &mut sink,
        &metrics,
        &Health::default(),
        &Shutdown::new(),
        Duration::from_secs(20),
    )
    .await
    .expect("ingest runs");
    assert_eq!(stopped, Stopped::SourceExhausted);
    assert_eq!(sink.delivered(), 2);
    assert_eq!(metrics.malformed_responses.get(), 1);
    let consumer = consumer(&brokers, &unique_name("ingest-replay"), "read_committed");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let records = receive(&consumer, 2, &topic).await;
    assert_eq!(records[0].key, "BTCUSDT");
    assert_eq!(
        records[0].value,
        r#"{"symbol":"BTCUSDT","price":1.5,"ts":1000,"source":"binance"}"#
    );
    assert_eq!(records[1].key, "ETHUSDT");
    assert_eq!(
        records[1].value,
        r#"{"symbol":"ETHUSDT","price":2.5,"source":"replay"}"#
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_a_startup_error_saying_how_to_fix_it() {
    let topology = Topology::default();
    let metrics = IngestMetrics::new("ingest-test");
    let sink = KafkaTickSink::new(
        &topology,
        "127.0.0.1:1",
        &KafkaSettings::default(),
        &metrics,
    )
    .expect("a producer");
    let error = sink
        .check_connected(Duration::from_secs(1))
        .await
        .expect_err("nothing listens on port 1");
    let message = error.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.contains("TICKSTREAM_KAFKA_BROKERS"), "{message}");
}

#[tokio::test]
async fn binance_reachable_tells_a_live_api_from_a_dead_one() {
    let fake = FakeBinance::start(|target, _| {
        if target == "/api/v3/ping" {
            Reply::status(200, "{}")
        } else {
            Reply::status(404, "")
        }
    })
    .await;
    assert!(tickstream_ingest::binance_reachable(&fake.base_url, Duration::from_secs(2)).await);
    assert!(
        !tickstream_ingest::binance_reachable("http://127.0.0.1:1", Duration::from_secs(2)).await
    );
}
