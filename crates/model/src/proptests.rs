//! Property tests: encode → decode is the identity for every valid record.

use std::borrow::Cow;

use proptest::prelude::*;

use crate::{
    DecodeOptions, DerivedEvent, Jump, MovingAverage, RawTick, RecordFormat, Symbol, Volatility,
};

fn symbol() -> impl Strategy<Value = Symbol> {
    "[A-Z0-9]{1,32}".prop_filter_map("valid symbol", |s| Symbol::new(&s).ok())
}

/// Any finite positive f64: normal, subnormal, huge, tiny.
fn price() -> impl Strategy<Value = f64> {
    (prop::num::f64::POSITIVE | prop::num::f64::SUBNORMAL | prop::num::f64::NORMAL)
        .prop_map(f64::abs)
        .prop_filter("finite and > 0", |p| p.is_finite() && *p > 0.0)
}

fn finite() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL
}

fn tick() -> impl Strategy<Value = RawTick> {
    (
        symbol(),
        price(),
        prop::option::of(0..=i64::MAX),
        prop::option::of(prop_oneof![Just("binance".to_owned()), any::<String>()]),
        prop::option::of(prop_oneof![Just(0.0), 0.0..1e12, 1e-12..1.0]),
        prop::option::of((0..=i64::MAX as u64, any::<bool>())),
    )
        .prop_map(|(symbol, price, ts, source, qty, trade)| RawTick {
            symbol,
            price,
            ts,
            source: source.map(Cow::Owned),
            qty,
            trade_id: trade.map(|(id, _)| id),
            buyer_maker: trade.map(|(_, maker)| maker),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn full_format_round_trips(tick in tick()) {
        let bytes = tick.encode(RecordFormat::Full);
        let options = DecodeOptions::new().with_max_bytes(usize::MAX);
        let back = RawTick::decode(&bytes, &options);
        prop_assert_eq!(back.as_ref().map(|t| t.price.to_bits()), Ok(tick.price.to_bits()));
        prop_assert_eq!(back, Ok(tick));
    }

    #[test]
    fn reference_format_round_trips(symbol in symbol(), price in price()) {
        let tick = RawTick::new(symbol, price);
        let bytes = tick.encode(RecordFormat::Reference);
        prop_assert_eq!(RawTick::decode(&bytes, &DecodeOptions::new()), Ok(tick));
        // And serde_json reads our numbers to the same value (they are plain JSON).
        let value: Result<serde_json::Value, _> = serde_json::from_slice(&bytes);
        prop_assert!(value.is_ok());
    }

    #[test]
    fn derived_events_round_trip(
        symbol in symbol(),
        ts in 0..=i64::MAX,
        size in 1..=1_000_000u32,
        (mean, min, max, stddev) in (finite(), finite(), finite(), finite()),
        count in 1..=u64::MAX,
        (from, to, change) in (price(), price(), finite()),
        threshold in 1e-9..=100.0f64,
    ) {
        let window = format!("count:{size}");
        let ma = MovingAverage { symbol, ts, window: window.clone(), mean, count, min, max, vwap: None, bounds: None };
        prop_assert_eq!(MovingAverage::decode(&ma.encode()), Ok(ma));
        let vol = Volatility { symbol, ts, window, stddev: stddev.abs(), mean, count, bounds: None };
        prop_assert_eq!(Volatility::decode(&vol.encode()), Ok(vol));
        let jump = Jump { symbol, ts, from, to, change_pct: change, threshold_pct: threshold };
        prop_assert_eq!(Jump::decode(&jump.encode()), Ok(jump));
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = RawTick::decode(&bytes, &DecodeOptions::new());
        let _ = Jump::decode(&bytes);
    }
}
