use super::*;

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn moving_average() -> MovingAverage {
    MovingAverage {
        symbol: sym("BTCUSDT"),
        ts: 1_732_390_000_123,
        window: "count:20".into(),
        mean: 67_234.512_5,
        count: 20,
        min: 67_100.0,
        max: 67_400.25,
        vwap: Some(67_250.5),
        bounds: Some(WindowBounds::Count {
            first_ts: 1_732_389_981_003,
            last_ts: 1_732_390_000_123,
        }),
    }
}

fn volatility() -> Volatility {
    Volatility {
        symbol: sym("ETHUSDT"),
        ts: 1_732_390_000_456,
        window: "time:5m".into(),
        stddev: 1.234_567_890_123_4,
        mean: 3_120.25,
        count: 57,
        bounds: Some(WindowBounds::Time {
            start: 1_732_389_700_457,
            end: 1_732_390_000_457,
        }),
    }
}

fn jump() -> Jump {
    Jump {
        symbol: sym("SOLUSDT"),
        ts: 1_732_390_000_789,
        from: 150.0,
        to: 146.1,
        change_pct: -2.600_000_000_000_004,
        threshold_pct: 2.0,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn encodings_are_stable() {
    assert_eq!(
        text(&moving_average().encode()),
        r#"{"symbol":"BTCUSDT","ts":1732390000123,"window":"count:20","mean":67234.5125,"count":20,"min":67100.0,"max":67400.25,"vwap":67250.5,"first_ts":1732389981003,"last_ts":1732390000123}"#
    );
    assert_eq!(
        text(&volatility().encode()),
        r#"{"symbol":"ETHUSDT","ts":1732390000456,"window":"time:5m","stddev":1.2345678901234,"mean":3120.25,"count":57,"start":1732389700457,"end":1732390000457}"#
    );
    assert_eq!(
        text(&jump().encode()),
        r#"{"symbol":"SOLUSDT","ts":1732390000789,"from":150.0,"to":146.1,"change_pct":-2.600000000000004,"threshold_pct":2.0}"#
    );
}

#[test]
fn round_trips_and_matches_serde() {
    fn check<E: DerivedEvent + Serialize + PartialEq + std::fmt::Debug>(event: E) {
        let bytes = event.encode();
        assert_eq!(E::decode(&bytes).as_ref(), Ok(&event));
        assert_eq!(serde_json::to_vec(&event).ok(), Some(bytes));
    }
    check(moving_average());
    check(volatility());
    check(jump());
    // Events written before windows carried their bounds still decode, without them.
    check(MovingAverage {
        bounds: None,
        vwap: None,
        ..moving_average()
    });
    assert!(
        String::from_utf8_lossy(
            &MovingAverage {
                vwap: None,
                ..moving_average()
            }
            .encode()
        )
        .contains(r#""vwap":null"#),
        "null without quantities"
    );
    let half = br#"{"mean":1,"count":1,"stddev":0,"window":"w","ts":0,"symbol":"A","start":5}"#;
    assert!(
        matches!(
            Volatility::decode(half),
            Err(InvalidRecord::InvalidValue { field: "start", .. })
        ),
        "a bound without its pair"
    );
    assert_eq!(
        Volatility::decode(
            br#"{"mean":1,"count":1,"stddev":0,"window":"w","ts":0,"symbol":"A","x":[1]}"#
        )
        .map(|v| (v.mean, v.stddev)),
        Ok((1.0, 0.0))
    );
}

#[test]
fn kinds_and_identity() {
    assert_eq!(MovingAverage::KIND.name(), "moving_average");
    assert_eq!(Volatility::KIND.name(), "volatility");
    assert_eq!(Jump::KIND.name(), "jump");
    assert_eq!(jump().window(), None);
    assert_eq!(volatility().window(), Some("time:5m"));
    assert_eq!(
        (jump().symbol(), jump().ts()),
        (sym("SOLUSDT"), 1_732_390_000_789)
    );
}

type Decode = fn(&[u8]) -> Option<InvalidRecord>;

#[test]
fn refusals_use_the_record_reasons() {
    let ma = text(&moving_average().encode());
    let vol = text(&volatility().encode());
    let jmp = text(&jump().encode());
    let ma_: Decode = |b| MovingAverage::decode(b).err();
    let vol_: Decode = |b| Volatility::decode(b).err();
    let jmp_: Decode = |b| Jump::decode(b).err();
    let cases = [
        ("not_json", ma_, "{".to_owned()),
        ("not_object", jmp_, "42".to_owned()),
        ("missing_field", ma_, ma.replace(r#","min":67100.0"#, "")),
        ("mistyped_field", ma_, ma.replace("20,", "\"20\",")),
        (
            "invalid_value",
            ma_,
            ma.replace("\"count\":20", "\"count\":0"),
        ),
        ("invalid_value", ma_, ma.replace("\"count:20\"", "\"\"")),
        ("invalid_value", ma_, ma.replace("67234.5125", "NaN")),
        ("invalid_value", vol_, vol.replace("1.2345678901234", "-1")),
        (
            "invalid_value",
            jmp_,
            jmp.replace("\"threshold_pct\":2.0", "\"threshold_pct\":0"),
        ),
        ("non_finite_price", jmp_, jmp.replace("146.1", "Infinity")),
        ("non_positive_price", jmp_, jmp.replace("150.0", "-150.0")),
        ("invalid_symbol", jmp_, jmp.replace("SOLUSDT", "sol")),
        ("duplicate_field", vol_, vol.replace('{', r#"{"mean":1,"#)),
        (
            "oversized",
            jmp_,
            format!("{}{}", " ".repeat(MAX_DERIVED_BYTES), jmp),
        ),
    ];
    for (want, decode, record) in cases {
        let got = decode(record.as_bytes());
        assert_eq!(
            got.as_ref().map(InvalidRecord::code),
            Some(want),
            "{record}: {got:?}"
        );
    }
    let nan = MovingAverage::decode(ma.replace("67234.5125", "NaN").as_bytes());
    assert_eq!(nan.map_err(|e| e.field()), Err(Some("mean")));
}
