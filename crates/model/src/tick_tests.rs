use super::*;
use crate::invalid::JsonType;

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn decode(s: &str) -> Result<RawTick, InvalidRecord> {
    RawTick::decode(s.as_bytes(), &DecodeOptions::new())
}

fn code(s: &str) -> &'static str {
    match decode(s) {
        Ok(t) => panic!("{s} decoded to {t:?}"),
        Err(e) => e.code(),
    }
}

#[test]
fn decodes_the_full_format() {
    let tick =
        decode(r#"{"symbol":"BTCUSDT","price":67234.5,"ts":1732390000123,"source":"binance"}"#);
    assert_eq!(
        tick,
        Ok(RawTick::new(sym("BTCUSDT"), 67234.5)
            .with_ts(1_732_390_000_123)
            .with_source("binance"))
    );
    assert!(matches!(
        tick,
        Ok(RawTick {
            source: Some(Cow::Borrowed(_)),
            ..
        })
    ));
}

#[test]
fn decodes_the_reference_format_with_kafka_time() {
    let tick = decode(r#"{"symbol": "ETHUSDT", "price": 3120.25}"#);
    assert_eq!(tick, Ok(RawTick::new(sym("ETHUSDT"), 3120.25)));
    let tick = tick.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tick.event_time(Some(42)), Ok(42));
    assert_eq!(
        tick.event_time(Some(-1)).map_err(|e| e.code()),
        Err("missing_event_time")
    );
    assert_eq!(tick.clone().with_ts(7).event_time(Some(42)), Ok(7));
}

#[test]
fn accepts_integer_prices_extra_fields_nulls_escapes_and_whitespace() {
    assert_eq!(
        decode(r#"{"symbol":"SOLUSDT","price":67234}"#).map(|t| t.price),
        Ok(67234.0)
    );
    let tick = decode(
        "\n {\"volume\": [1, {\"x\": NaN2}], \"price\": 1.5e2, \"ts\": null,\n\
         \"symbol\": \"BTC\\u0055SDT\", \"source\": null, \"extra\": {\"a\": null}}\n",
    );
    // (NaN2 is inside an unknown field but still invalid JSON.)
    assert_eq!(tick.map_err(|e| e.code()), Err("not_json"));
    let tick = decode(
        "\n {\"volume\": [1, {\"x\": 2}], \"price\": 1.5e2, \"ts\": null,\n\
         \"symbol\": \"BTC\\u0055SDT\", \"source\": null, \"extra\": {\"a\": null}}\n",
    );
    assert_eq!(tick, Ok(RawTick::new(sym("BTCUSDT"), 150.0)));
    let tick = decode(r#"{"symbol":"BTCUSDT","price":1,"source":"my \"feed\""}"#);
    assert_eq!(
        tick.map(|t| t.source),
        Ok(Some(Cow::Owned("my \"feed\"".to_owned())))
    );
}

#[test]
fn prices_parse_exactly() {
    // serde_json's default float parser is off by one ulp on some inputs; ours is not.
    for text in [
        "2.2250738585072014e-308",
        "0.1",
        "67234.123456789",
        "9007199254740993",
    ] {
        let want: f64 = text.parse().unwrap_or_default();
        let got = decode(&format!(r#"{{"symbol":"A","price":{text}}}"#)).map(|t| t.price.to_bits());
        assert_eq!(got, Ok(want.to_bits()), "{text}");
    }
}

#[test]
fn every_rejection_has_its_code() {
    let cases = [
        ("not json", "not_json"),
        (r#"{"symbol":"BTCUSDT","price":1"#, "not_json"),
        (r#"{"symbol":"BTCUSDT","price":1} trailing"#, "not_json"),
        ("\u{0}", "not_json"),
        ("[1,2]", "not_object"),
        ("\"BTCUSDT\"", "not_object"),
        ("null", "not_object"),
        (
            r#"{"symbol":"BTCUSDT","price":1,"price":2}"#,
            "duplicate_field",
        ),
        (r#"{"price":1}"#, "missing_field"),
        (r#"{"symbol":"BTCUSDT"}"#, "missing_field"),
        (r#"{"symbol":"BTCUSDT","price":null}"#, "mistyped_field"),
        (
            r#"{"symbol":"BTCUSDT","price":"67234.5"}"#,
            "mistyped_field",
        ),
        (r#"{"symbol":7,"price":1}"#, "mistyped_field"),
        (
            r#"{"symbol":"BTCUSDT","price":1,"ts":"now"}"#,
            "mistyped_field",
        ),
        (
            r#"{"symbol":"BTCUSDT","price":1,"source":1}"#,
            "mistyped_field",
        ),
        (r#"{"symbol": "BTCUSDT", "price": NaN}"#, "non_finite_price"),
        (
            r#"{"symbol": "BTCUSDT", "price": Infinity}"#,
            "non_finite_price",
        ),
        (
            r#"{"symbol": "BTCUSDT", "price": -Infinity}"#,
            "non_finite_price",
        ),
        (r#"{"symbol":"BTCUSDT","price":1e400}"#, "non_finite_price"),
        (r#"{"symbol":"BTCUSDT","price":0}"#, "non_positive_price"),
        (r#"{"symbol":"BTCUSDT","price":-0.0}"#, "non_positive_price"),
        (r#"{"symbol":"BTCUSDT","price":-3.5}"#, "non_positive_price"),
        (r#"{"symbol":"","price":1}"#, "empty_symbol"),
        (r#"{"symbol":"btcusdt","price":1}"#, "invalid_symbol"),
        (r#"{"symbol":"BTC/USDT","price":1}"#, "invalid_symbol"),
        (r#"{"symbol":"BTCUSDT","price":1,"ts":-5}"#, "invalid_value"),
        (
            r#"{"symbol":"BTCUSDT","price":1,"ts":1.5}"#,
            "invalid_value",
        ),
        (
            r#"{"symbol":"BTCUSDT","price":1,"ts":99999999999999999999}"#,
            "invalid_value",
        ),
        (
            r#"{"symbol":"BTCUSDT","price":1,"qty":-0.5}"#,
            "invalid_value",
        ),
        (
            r#"{"symbol":"BTCUSDT","price":1,"qty":1e999}"#,
            "invalid_value",
        ),
        (
            r#"{"symbol":"BTCUSDT","price":1,"qty":"2"}"#,
            "mistyped_field",
        ),
    ];
    for (record, want) in cases {
        assert_eq!(code(record), want, "{record}");
    }
}

#[test]
fn messages_say_what_where_and_how() {
    let msg = |s: &str| decode(s).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        msg(r#"{"symbol":"BTCUSDT"}"#),
        "missing field `price` (a JSON number): every record of this kind carries it"
    );
    assert_eq!(
        msg(r#"{"symbol":"BTCUSDT","price":"1"}"#),
        "field `price` is a string, expected a JSON number"
    );
    assert!(msg(r#"{"symbol":"BTCUSDT","price":NaN}"#).contains("`price` is NaN"));
    assert!(msg(r#"{"symbol":"btcusdt","price":1}"#).contains("write \"BTCUSDT\""));
    assert!(msg("{\"symbol\":1,").contains("line 1 column"));
    // A bare NaN in a field we do not read is still invalid JSON, and the message says so.
    let other = decode(r#"{"symbol":"BTCUSDT","price":1,"volume":NaN}"#);
    assert_eq!(other.as_ref().map_err(InvalidRecord::code), Err("not_json"));
    assert!(msg(r#"{"symbol":"BTCUSDT","price":1,"volume":NaN}"#).contains("`volume` is NaN"));
    assert_eq!(
        decode("[]"),
        Err(InvalidRecord::NotObject {
            found: JsonType::Array
        })
    );
}

#[test]
fn size_limit_and_pinned_symbols() {
    let record = br#"{"symbol":"BTCUSDT","price":1}"#;
    let exact = DecodeOptions::new().with_max_bytes(record.len());
    assert!(exact.decode(record).is_ok());
    let small = DecodeOptions::new().with_max_bytes(record.len() - 1);
    assert_eq!(
        small.decode(record),
        Err(InvalidRecord::Oversized {
            size: record.len(),
            limit: record.len() - 1
        })
    );
    let big = format!(
        r#"{{"symbol":"BTCUSDT","price":1,"pad":"{}"}}"#,
        "x".repeat(1024)
    );
    assert_eq!(code(&big), "oversized");

    let pinned = DecodeOptions::new().with_pinned_symbols([sym("ETHUSDT"), sym("BTCUSDT")]);
    assert!(pinned.decode(record).is_ok());
    let sol = pinned.decode(br#"{"symbol":"SOLUSDT","price":1}"#);
    assert_eq!(
        sol.as_ref().map_err(InvalidRecord::code),
        Err("unknown_symbol")
    );
    assert_eq!(pinned.pinned_symbols().map(<[Symbol]>::len), Some(2));
}

#[test]
fn encodes_both_formats() {
    let tick = RawTick::new(sym("BTCUSDT"), 67234.5)
        .with_ts(1_732_390_000_123)
        .with_source("binance");
    let full = tick.encode(RecordFormat::Full);
    assert_eq!(
        String::from_utf8_lossy(&full),
        r#"{"symbol":"BTCUSDT","price":67234.5,"ts":1732390000123,"source":"binance"}"#
    );
    // Exactly what Python's json.dumps({"symbol": "BTCUSDT", "price": 67234.5}) writes.
    let reference = tick.encode(RecordFormat::Reference);
    assert_eq!(
        String::from_utf8_lossy(&reference),
        r#"{"symbol": "BTCUSDT", "price": 67234.5}"#
    );
    assert_eq!(decode(&String::from_utf8_lossy(&full)), Ok(tick.clone()));
    assert_eq!(
        decode(&String::from_utf8_lossy(&reference)),
        Ok(RawTick::new(sym("BTCUSDT"), 67234.5))
    );
    // Serialize (for MongoDB documents) writes the same fields.
    let via_serde = serde_json::to_string(&tick).unwrap_or_default();
    assert_eq!(via_serde.as_bytes(), &full[..]);
    // A quantity, when there is one, is written (full format only) and read back.
    let trade = tick.clone().with_qty(0.0125);
    let full = trade.encode(RecordFormat::Full);
    assert_eq!(
        String::from_utf8_lossy(&full),
        r#"{"symbol":"BTCUSDT","price":67234.5,"ts":1732390000123,"source":"binance","qty":0.0125}"#
    );
    assert_eq!(decode(&String::from_utf8_lossy(&full)), Ok(trade.clone()));
    assert_eq!(trade.encode(RecordFormat::Reference), reference);
    assert_eq!(serde_json::to_vec(&trade).unwrap_or_default(), full);
    assert_eq!(
        decode(r#"{"symbol":"BTCUSDT","price":1,"qty":null}"#).map(|t| t.qty),
        Ok(None)
    );
    assert_eq!(
        decode(r#"{"symbol":"BTCUSDT","price":1,"qty":0}"#).map(|t| t.qty),
        Ok(Some(0.0))
    );
    // A trade's id and side, when known, likewise.
    let trade = trade.with_trade(3_456_789_012, true);
    let full = trade.encode(RecordFormat::Full);
    assert_eq!(
        String::from_utf8_lossy(&full),
        r#"{"symbol":"BTCUSDT","price":67234.5,"ts":1732390000123,"source":"binance","qty":0.0125,"trade_id":3456789012,"buyer_maker":true}"#
    );
    assert_eq!(decode(&String::from_utf8_lossy(&full)), Ok(trade.clone()));
    assert_eq!(serde_json::to_vec(&trade).unwrap_or_default(), full);
    for (bad, code) in [
        (
            r#"{"symbol":"BTCUSDT","price":1,"trade_id":-1}"#,
            "invalid_value",
        ),
        (
            r#"{"symbol":"BTCUSDT","price":1,"trade_id":"7"}"#,
            "mistyped_field",
        ),
        (
            r#"{"symbol":"BTCUSDT","price":1,"buyer_maker":1}"#,
            "mistyped_field",
        ),
    ] {
        assert_eq!(decode(bad).map_err(|e| e.code()), Err(code), "{bad}");
    }
    // Integral prices are written as floats, as Python writes float(...) prices.
    let int = RawTick::new(sym("SOLUSDT"), 150.0).encode(RecordFormat::Full);
    assert_eq!(
        String::from_utf8_lossy(&int),
        r#"{"symbol":"SOLUSDT","price":150.0}"#
    );
}

#[test]
fn non_finite_prices_encode_as_python_does_and_are_refused() {
    let nan = RawTick::new(sym("BTCUSDT"), f64::NAN).encode(RecordFormat::Reference);
    assert_eq!(
        String::from_utf8_lossy(&nan),
        r#"{"symbol": "BTCUSDT", "price": NaN}"#
    );
    assert_eq!(code(&String::from_utf8_lossy(&nan)), "non_finite_price");
}
