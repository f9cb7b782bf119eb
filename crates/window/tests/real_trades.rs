//! Candles over a real Binance trade tape (`tests/data/`, 19,904 BTCUSDT trades over ~11
//! minutes, 12,796 of them in the same millisecond as the trade before): every candle equals a
//! recomputation over the trades of its interval, for several intervals and graces, and what
//! is known of the tape independently (its trade count and total quantity) adds up.

use tickstream_window::{Candle, CandleSeries, CandleSpec};

const TAPE: &str = include_str!("../../../tests/data/binance-btcusdt-trades-20240808T2354Z.csv");

struct Trade {
    time_ms: i64,
    price: f64,
    qty: f64,
}

fn trades() -> Vec<Trade> {
    let mut lines = TAPE.lines();
    assert_eq!(lines.next(), Some("trade_id,time_ms,price,qty"));
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let [_, time_ms, price, qty] = fields[..] else {
                panic!("not four columns: {line}");
            };
            Trade {
                time_ms: time_ms.parse().expect("an integer time"),
                price: price.parse().expect("a decimal price"),
                qty: qty.parse().expect("a decimal quantity"),
            }
        })
        .collect()
}

/// Every interval's candle by definition: first and last trade by time (ties: file order),
/// extremes, count, Σq and Σpq / Σq — plain sums, in `f64`.
fn recompute(trades: &[Trade], interval_ms: i64) -> Vec<Candle> {
    let mut candles: Vec<Candle> = Vec::new();
    for t in trades {
        let start = t.time_ms.div_euclid(interval_ms) * interval_ms;
        match candles.last_mut() {
            Some(c) if c.start == start => {
                c.high = c.high.max(t.price);
                c.low = c.low.min(t.price);
                c.close = t.price;
                c.last_ts = t.time_ms;
                c.trades += 1;
                c.volume = c.volume.map(|v| v + t.qty);
                c.vwap = c.vwap.map(|n| n + t.price * t.qty); // Σpq until the end
            }
            _ => candles.push(Candle {
                start,
                end: start + interval_ms,
                open: t.price,
                high: t.price,
                low: t.price,
                close: t.price,
                trades: 1,
                volume: Some(t.qty),
                vwap: Some(t.price * t.qty),
                first_ts: t.time_ms,
                last_ts: t.time_ms,
            }),
        }
    }
    for c in &mut candles {
        c.vwap = Some(c.vwap.unwrap_or(0.0) / c.volume.unwrap_or(1.0));
    }
    candles
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
        _ => false,
    }
}

#[test]
fn candles_of_a_real_tape_equal_their_recomputation() {
    let trades = trades();
    assert_eq!(trades.len(), 19_904);
    for (interval_ms, grace_ms) in [(60_000, 0), (60_000, 5_000), (10_000, 2_000), (1_000, 0)] {
        let mut series = CandleSeries::new(CandleSpec::new(interval_ms, grace_ms).expect("valid"));
        let mut candles = Vec::new();
        for (i, t) in trades.iter().enumerate() {
            series
                .update(t.time_ms, t.price, Some(t.qty), i as i64, &mut candles)
                .expect("a tape in time order has no late trade");
        }
        let before_idle = candles.len();
        series.close_idle(i64::MAX, &mut candles);
        assert!(
            candles.len() > before_idle,
            "the last candle waits for the idle close"
        );
        let expected = recompute(&trades, interval_ms);
        assert_eq!(candles.len(), expected.len(), "{interval_ms} ms");
        for (got, want) in candles.iter().zip(&expected) {
            let at = format!("{interval_ms} ms candle at {}", got.start);
            assert_eq!(
                (got.start, got.end, got.trades, got.first_ts, got.last_ts),
                (
                    want.start,
                    want.end,
                    want.trades,
                    want.first_ts,
                    want.last_ts
                ),
                "{at}"
            );
            assert_eq!(
                (got.open, got.high, got.low, got.close),
                (want.open, want.high, want.low, want.close),
                "{at}"
            );
            assert!(close(got.volume, want.volume), "{at}: {got:?} vs {want:?}");
            assert!(close(got.vwap, want.vwap), "{at}: {got:?} vs {want:?}");
        }
        let trades_total: u64 = candles.iter().map(|c| c.trades).sum();
        let volume_total: f64 = candles.iter().filter_map(|c| c.volume).sum();
        assert_eq!(trades_total, 19_904);
        // Σ of the tape's decimal quantities, computed exactly outside this test.
        assert!((volume_total - 437.91552).abs() < 1e-9, "{volume_total}");
    }
}

#[test]
fn the_tape_makes_twelve_one_minute_candles_from_23_54_to_00_05_utc() {
    let trades = trades();
    let mut series = CandleSeries::new(CandleSpec::new(60_000, 0).expect("valid"));
    let mut candles = Vec::new();
    for (i, t) in trades.iter().enumerate() {
        series
            .update(t.time_ms, t.price, Some(t.qty), i as i64, &mut candles)
            .expect("in time order");
    }
    series.close_idle(i64::MAX, &mut candles);
    assert_eq!(candles.len(), 12, "23:54 … 00:05 inclusive");
    // 2024-08-08 23:54:00 UTC and 2024-08-09 00:05:00 UTC.
    assert_eq!(candles[0].start, 1_723_161_240_000);
    assert_eq!(candles[11].start, 1_723_161_900_000);
    assert!(
        candles.windows(2).all(|w| w[0].end == w[1].start),
        "no quiet minute here"
    );
}
