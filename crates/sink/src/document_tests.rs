use mongodb::bson::{Bson, DateTime, doc};
use tickstream_model::{
    DerivedEvent, Jump, MovingAverage, Symbol, Topology, Volatility, WindowBounds,
};
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
            "_id": {
                "t": DateTime::from_millis(1_732_390_000_123),
                "topic": "btc",
                "p": 2,
                "o": 41_i64,
            },
            "symbol": "BTCUSDT",
            "price": 67234.0,
            "ts": DateTime::from_millis(1_732_390_000_123),
        },
        "the _id leads with the event time, so sorting by _id sorts by time"
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
    let stored = mapped.document.to_document().expect("valid BSON");
    assert_eq!(
        RawPriceId::from_bson(stored.get("_id").expect("an _id")),
        Some(id.clone()),
        "the stored _id reads back as the record's position"
    );
    assert_eq!(id.to_bson(), stored.get("_id").cloned().expect("an _id"));
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
    let document = mapped.document.to_document().expect("valid BSON");
    assert!(document.get("qty").is_none(), "no quantity, no field");
    let trade = mapper
        .map(&record(
            "prices.raw",
            0,
            Some(5),
            br#"{"symbol":"ETHUSDT","price":3100.5,"ts":1732390000999,"qty":0.25,"trade_id":42,"buyer_maker":false}"#,
        ))
        .expect("valid");
    let trade = trade.document.to_document().expect("valid BSON");
    assert_eq!(trade.get_f64("qty"), Ok(0.25));
    assert_eq!(trade.get_i64("trade_id"), Ok(42));
    assert_eq!(trade.get_bool("buyer_maker"), Ok(false));
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
    assert_ne!(
        a,
        raw_price_id("btc", 0, 7 + (1 << 32), 1_000_000),
        "the whole offset counts, not its low 32 bits"
    );
    assert_ne!(
        raw_price_id("btc", 1, 7, 1_000_000),
        raw_price_id("btc", 1 + (1 << 16), 7, 1_000_000),
        "the whole partition counts"
    );
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

/// The previous `_id` scheme's topic hash: 32-bit FNV-1a folded to 16 bits.
fn old_fnv1a_16(bytes: &[u8]) -> u16 {
    let hash = bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    });
    ((hash >> 16) ^ (hash & 0xffff)) as u16
}

#[test]
fn raw_topics_whose_names_collide_in_16_bits_keep_apart() {
    let (a, b) = ("prices.raw.38", "prices.raw.51");
    assert_eq!(
        old_fnv1a_16(a.as_bytes()),
        old_fnv1a_16(b.as_bytes()),
        "the two names collide under the old 16-bit topic hash"
    );
    let topology = Topology::from_str(&format!(
        r#"
        symbols = ["BTCUSDT", "ETHUSDT"]
        [topics]
        raw = {{ BTCUSDT = "{a}", ETHUSDT = "{b}" }}
        "#
    ))
    .expect("valid topology");
    let mapper = DocumentMapper::new(&topology);
    // Same second (same millisecond even), partition and offset: only the topic differs.
    let one = mapper
        .map(&record(
            a,
            5,
            None,
            br#"{"symbol":"BTCUSDT","price":1.5,"ts":1732390000123}"#,
        ))
        .expect("valid");
    let two = mapper
        .map(&record(
            b,
            5,
            None,
            br#"{"symbol":"ETHUSDT","price":2.5,"ts":1732390000123}"#,
        ))
        .expect("valid");
    assert_eq!(one.collection, two.collection, "both feed `prices`");
    let id = |d: &SinkDocument| {
        d.document
            .to_document()
            .expect("valid BSON")
            .get("_id")
            .cloned()
    };
    assert_ne!(id(&one), id(&two), "two records, two documents");
    assert_eq!(
        RawPriceId::from_bson(&id(&two).expect("an _id")),
        Some(raw_price_id(b, 2, 5, 1_732_390_000_123))
    );
}

#[test]
fn raw_ids_order_by_event_time_first() {
    // Rust's order of RawPriceId is MongoDB's order of the stored ids (field by field, in
    // order; tests/integration/sink_ids.rs checks it against a real mongod).
    let mut ids = [
        raw_price_id("zzz", 9, 99, 2_000),
        raw_price_id("aaa", 0, 0, 3_000),
        raw_price_id("aaa", 0, 5, 1_000),
        raw_price_id("aaa", 0, 4, 1_000),
        raw_price_id("bbb", 0, 0, 1_000),
    ];
    ids.sort();
    let order: Vec<(i64, &str, i64)> = ids
        .iter()
        .map(|id| (id.event_time_ms, id.topic.as_str(), id.offset))
        .collect();
    assert_eq!(
        order,
        [
            (1_000, "aaa", 4),
            (1_000, "aaa", 5),
            (1_000, "bbb", 0),
            (2_000, "zzz", 99),
            (3_000, "aaa", 0)
        ]
    );
}

#[test]
fn foreign_ids_are_not_raw_price_ids() {
    assert_eq!(RawPriceId::from_bson(&Bson::String("x".into())), None);
    assert_eq!(
        RawPriceId::from_bson(&Bson::Document(
            doc! { "topic": "t", "t": DateTime::from_millis(1), "p": 0, "o": 1_i64 }
        )),
        None,
        "field order is part of the identity"
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
        vwap: Some(10.25),
        bounds: Some(WindowBounds::Count {
            first_ts: 1_699_999_990_500,
            last_ts: 1_700_000_000_000,
        }),
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
            "vwap": 10.25,
            "first_ts": DateTime::from_millis(1_699_999_990_500),
            "last_ts": DateTime::from_millis(1_700_000_000_000),
        }
    );

    let volatility = Volatility {
        symbol,
        ts: 7,
        window: "time:5m".into(),
        stddev: 0.25,
        mean: 10.0,
        count: 3,
        bounds: Some(WindowBounds::Time { start: 0, end: 8 }),
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
