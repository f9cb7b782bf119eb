use mongodb::bson::{Bson, DateTime, doc};
use tickstream_model::{DerivedEvent, Jump, MovingAverage, Symbol, Topology, Volatility};
use tickstream_streams::Record;

use super::*;

fn default_topology() -> Topology {
    Topology::from_str(
        r#"
        symbols = ["BTCUSDT", "ETHUSDT"]
        [[windows]]
        kind = "count"
        size = 20
        "#,
    )
    .expect("valid topology")
}

fn seed_topology() -> Topology {
    Topology::from_str(
        r#"
        symbols = ["BTCUSDT", "ETHUSDT"]
        [topics]
        raw = { BTCUSDT = "btc", ETHUSDT = "eth" }
        raw_format = "reference"
        [mongodb]
        database = "fx"
        [mongodb.collections]
        prices = { BTCUSDT = "btc", ETHUSDT = "eth" }
        "#,
    )
    .expect("valid topology")
}

fn record<'a>(topic: &'a str, offset: i64, timestamp: Option<i64>, value: &'a [u8]) -> Record<'a> {
    Record {
        topic,
        partition: 2,
        offset,
        timestamp,
        key: Some(b"BTCUSDT"),
        value: Some(value),
    }
}

#[test]
fn reference_record_becomes_the_reference_document_plus_ts() {
    let mapper = DocumentMapper::new(&seed_topology());
    let mapped = mapper
        .map(&record(
            "btc",
            41,
            Some(1_732_390_000_123),
            br#"{"symbol": "BTCUSDT", "price": 67234}"#,
        ))
        .expect("a valid reference record");
    assert_eq!(mapped.collection, "btc");
    let id = raw_price_id("btc", 2, 41, 1_732_390_000_123);
    assert_eq!(
        mapped.document.to_document().expect("valid BSON"),
        doc! {
            "_id": id,
            "symbol": "BTCUSDT",
            "price": 67234.0,
            "ts": DateTime::from_millis(1_732_390_000_123),
        }
    );
    assert!(
        matches!(
            mapped
                .document
                .to_document()
                .expect("valid BSON")
                .get("price"),
            Some(Bson::Double(_))
        ),
        "an integer JSON price is stored as a double"
    );
    assert_eq!(
        id.timestamp().timestamp_millis() / 1000,
        1_732_390_000,
        "the ObjectId's time is the event second, so sorting by _id sorts by time"
    );
}

#[test]
fn full_record_keeps_its_ts_and_source_and_routes_by_symbol() {
    let mapper = DocumentMapper::new(&default_topology());
    let mapped = mapper
        .map(&record(
            "prices.raw",
            0,
            Some(5),
            br#"{"symbol":"ETHUSDT","price":3100.5,"ts":1732390000999,"source":"synthetic"}"#,
        ))
        .expect("valid");
    assert_eq!(mapped.collection, "prices");
    assert_eq!(
        mapped.document.to_document().expect("valid BSON").get("ts"),
        Some(&Bson::DateTime(DateTime::from_millis(1_732_390_000_999))),
        "the record's ts wins over the Kafka timestamp"
    );
    assert_eq!(
        mapped
            .document
            .to_document()
            .expect("valid BSON")
            .get_str("source"),
        Ok("synthetic")
    );
    assert_eq!(
        mapped
            .document
            .to_document()
            .expect("valid BSON")
            .get_str("symbol"),
        Ok("ETHUSDT")
    );
}

#[test]
fn raw_ids_are_deterministic_and_distinct_per_position() {
    let a = raw_price_id("btc", 0, 7, 1_000_000);
    assert_eq!(
        a,
        raw_price_id("btc", 0, 7, 1_000_000),
        "a replay rebuilds the id"
    );
    assert_ne!(a, raw_price_id("btc", 0, 8, 1_000_000));
    assert_ne!(a, raw_price_id("btc", 1, 7, 1_000_000));
    assert_ne!(a, raw_price_id("eth", 0, 7, 1_000_000));
    // Same content at another offset (two genuine, identical ticks) stays two documents.
    let mapper = DocumentMapper::new(&seed_topology());
    let value = br#"{"symbol": "BTCUSDT", "price": 1.5}"#;
    let first = mapper
        .map(&record("btc", 1, Some(10), value))
        .expect("valid");
    let second = mapper
        .map(&record("btc", 2, Some(10), value))
        .expect("valid");
    assert_ne!(
        first.document.to_document().expect("valid BSON").get("_id"),
        second
            .document
            .to_document()
            .expect("valid BSON")
            .get("_id")
    );
}

#[test]
fn derived_events_keyed_by_symbol_window_and_ts() {
    let topology = default_topology();
    let mapper = DocumentMapper::new(&topology);
    let symbol = Symbol::new("BTCUSDT").expect("valid symbol");
    let average = MovingAverage {
        symbol,
        ts: 1_700_000_000_000,
        window: "count:20".into(),
        mean: 10.5,
        count: 20,
        min: 9.0,
        max: 12.0,
    };
    let encoded = average.encode();
    let mapped = mapper
        .map(&record("analytics.moving_average", 3, None, &encoded))
        .expect("valid");
    assert_eq!(mapped.collection, "moving_averages");
    assert_eq!(
        mapped.document.to_document().expect("valid BSON"),
        doc! {
            "_id": "BTCUSDT|count:20|1700000000000",
            "symbol": "BTCUSDT",
            "ts": DateTime::from_millis(1_700_000_000_000),
            "window": "count:20",
            "mean": 10.5,
            "count": 20_i64,
            "min": 9.0,
            "max": 12.0,
        }
    );

    let volatility = Volatility {
        symbol,
        ts: 7,
        window: "time:5m".into(),
        stddev: 0.25,
        mean: 10.0,
        count: 3,
    };
    let encoded = volatility.encode();
    let mapped = mapper
        .map(&record("analytics.volatility", 0, None, &encoded))
        .expect("valid");
    assert_eq!(mapped.collection, "volatility");
    assert_eq!(
        mapped
            .document
            .to_document()
            .expect("valid BSON")
            .get_str("_id"),
        Ok("BTCUSDT|time:5m|7")
    );
    assert_eq!(
        mapped
            .document
            .to_document()
            .expect("valid BSON")
            .get_f64("stddev"),
        Ok(0.25)
    );

    let jump = Jump {
        symbol,
        ts: 9,
        from: 100.0,
        to: 103.0,
        change_pct: 3.0,
        threshold_pct: 2.0,
    };
    let encoded = jump.encode();
    let mapped = mapper
        .map(&record("analytics.jumps", 0, None, &encoded))
        .expect("valid");
    assert_eq!(mapped.collection, "jumps");
    assert_eq!(
        mapped.document.to_document().expect("valid BSON"),
        doc! {
            "_id": "BTCUSDT|9",
            "symbol": "BTCUSDT",
            "ts": DateTime::from_millis(9),
            "from": 100.0,
            "to": 103.0,
            "change_pct": 3.0,
            "threshold_pct": 2.0,
        }
    );
}

#[test]
fn invalid_records_carry_the_models_reason_code() {
    let mapper = DocumentMapper::new(&seed_topology());
    let cases: [(&str, &[u8], &str); 5] = [
        ("btc", b"not json", "not_json"),
        (
            "btc",
            br#"{"symbol":"BTCUSDT","price":"1"}"#,
            "mistyped_field",
        ),
        (
            "btc",
            br#"{"symbol":"XRPUSDT","price":1}"#,
            "unknown_symbol",
        ),
        (
            "btc",
            br#"{"symbol":"BTCUSDT","price":-1}"#,
            "non_positive_price",
        ),
        (
            "analytics.jumps",
            br#"{"symbol":"BTCUSDT"}"#,
            "missing_field",
        ),
    ];
    for (topic, value, code) in cases {
        let error = mapper
            .map(&record(topic, 0, Some(1), value))
            .expect_err("invalid");
        assert_eq!(
            error.code,
            code,
            "{}: {}",
            String::from_utf8_lossy(value),
            error
        );
        assert!(!error.message.is_empty());
    }
    let no_time = mapper
        .map(&record(
            "btc",
            0,
            None,
            br#"{"symbol":"BTCUSDT","price":1}"#,
        ))
        .expect_err("no event time anywhere");
    assert_eq!(no_time.code, "missing_event_time");
    let unknown = mapper
        .map(&record("elsewhere", 0, Some(1), b"{}"))
        .expect_err("not a topology topic");
    assert_eq!(unknown.code, "unknown_topic");
}

#[test]
fn subscribes_to_raw_then_derived_topics() {
    assert_eq!(
        DocumentMapper::new(&seed_topology()).topics(),
        [
            "btc",
            "eth",
            "analytics.moving_average",
            "analytics.volatility",
            "analytics.jumps"
        ]
    );
}
