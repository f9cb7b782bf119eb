use super::*;

const MIN: i64 = 60_000;

fn spec(interval_ms: i64, grace_ms: i64) -> CandleSpec {
    CandleSpec::new(interval_ms, grace_ms).expect("a valid spec")
}

/// Feeds `(ts, price, qty)` ticks arriving 1 ms apart; returns the closed candles and the
/// codes of the refused ticks.
fn feed(
    series: &mut CandleSeries,
    ticks: &[(i64, f64, Option<f64>)],
) -> (Vec<Candle>, Vec<&'static str>) {
    let (mut closed, mut refused) = (Vec::new(), Vec::new());
    for (i, &(ts, price, qty)) in ticks.iter().enumerate() {
        if let Err(r) = series.update(ts, price, qty, i as i64, &mut closed) {
            refused.push(r.code());
        }
    }
    (closed, refused)
}

#[test]
fn specs_are_validated_and_labelled() {
    assert_eq!(spec(MIN, 5_000).label(), "1m");
    assert_eq!(spec(1_000, 0).label(), "1s");
    assert_eq!(spec(86_400_000, 0).label(), "1d");
    assert_eq!(spec(MIN, 5_000).close_idle_after_ms(), 65_000);
    for bad in [0, 999, 1_500, 86_401_000, -MIN] {
        assert_eq!(
            CandleSpec::new(bad, 0),
            Err(ConfigError::CandleInterval { interval_ms: bad })
        );
    }
    assert_eq!(
        CandleSpec::new(MIN, -1),
        Err(ConfigError::CandleGrace { grace_ms: -1 })
    );
    assert!(spec(MIN, 0).with_close_idle_after_ms(0).is_err());
    assert_eq!(
        spec(MIN, 0).start_of(-1),
        -MIN,
        "aligned to the epoch below 0 too"
    );
}

#[test]
fn a_candle_closes_once_event_time_passes_end_plus_grace() {
    let mut series = CandleSeries::new(spec(MIN, 5_000));
    let (closed, refused) = feed(
        &mut series,
        &[
            (10_000, 100.0, Some(1.0)),
            (20_000, 103.0, Some(3.0)),
            (30_000, 99.0, None),
            (50_000, 101.0, Some(2.0)),
            (64_999, 102.0, Some(1.0)), // the next candle; 60,000 + 5,000 not reached yet
        ],
    );
    assert!(refused.is_empty());
    assert!(closed.is_empty(), "{closed:?}");
    let mut closed = Vec::new();
    series
        .update(65_000, 104.0, None, 9, &mut closed)
        .expect("in time");
    let expected = Candle {
        start: 0,
        end: MIN,
        open: 100.0,
        high: 103.0,
        low: 99.0,
        close: 101.0,
        trades: 4,
        volume: Some(6.0),
        vwap: Some((100.0 + 309.0 + 202.0) / 6.0),
        first_ts: 10_000,
        last_ts: 50_000,
    };
    assert_eq!(closed, [expected]);
    assert_eq!(series.open_len(), 1);
}

#[test]
fn late_ticks_within_grace_count_beyond_it_are_refused_as_late() {
    let mut series = CandleSeries::new(spec(MIN, 10_000));
    let (closed, refused) = feed(
        &mut series,
        &[
            (59_000, 100.0, None),
            (61_000, 110.0, None), // opens the second candle
            (55_000, 90.0, None),  // 6 s behind: within grace, into the first (not the newest)
            (50_000, 80.0, None),  // 11 s behind: beyond grace
            (69_999, 111.0, None),
            (70_000, 112.0, None), // watermark reaches 60,000 + 10,000: the first closes
            (59_999, 95.0, None),  // within 10 s of 70,000, but its candle has closed
        ],
    );
    assert_eq!(refused, ["late", "late"]);
    assert_eq!(closed.len(), 1);
    let first = closed[0];
    assert_eq!(
        (first.open, first.first_ts),
        (90.0, 55_000),
        "open is the earliest event"
    );
    assert_eq!((first.close, first.last_ts), (100.0, 59_000));
    assert_eq!((first.low, first.high, first.trades), (90.0, 100.0, 2));
    assert_eq!((first.volume, first.vwap), (None, None));
    let mut closed = Vec::new();
    let late = series
        .update(40_000, 1.0, None, 99, &mut closed)
        .unwrap_err();
    assert_eq!(
        late.to_string(),
        "tick at 40000 ms belongs to the candle [0, 60000) ms, already closed: the symbol's \
         newest tick is at 70000 ms and the grace is 10000 ms"
    );
}

#[test]
fn a_quiet_symbol_closes_on_the_wall_clock() {
    let mut series = CandleSeries::new(spec(MIN, 5_000));
    let mut closed = Vec::new();
    series
        .update(1_000, 10.0, None, 1_000_000, &mut closed)
        .expect("first");
    series
        .update(2_000, 11.0, None, 1_000_500, &mut closed)
        .expect("second");
    assert_eq!(
        series.close_idle(1_000_500 + 64_999, &mut closed),
        0,
        "not idle long enough"
    );
    assert_eq!(series.close_idle(1_000_500 + 65_000, &mut closed), 1);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        (closed[0].open, closed[0].close, closed[0].trades),
        (10.0, 11.0, 2)
    );
    // After an idle close: a tick of the closed candle is late, a later one opens its own.
    let refused = series
        .update(30_000, 12.0, None, 2_000_000, &mut closed)
        .unwrap_err();
    assert_eq!(refused.code(), "late");
    series
        .update(61_000, 12.0, None, 2_000_000, &mut closed)
        .expect("the next candle");
    assert_eq!(series.open_len(), 1);
    assert_eq!(series.close_idle(i64::MAX, &mut closed), 1);
    assert_eq!(
        series.close_idle(i64::MAX, &mut closed),
        0,
        "nothing left open"
    );
}

#[test]
fn bad_prices_and_quantities_change_nothing() {
    let mut series = CandleSeries::new(spec(MIN, 0));
    let before = series.clone();
    let mut closed = Vec::new();
    for (price, qty, code) in [
        (f64::NAN, None, "non_finite_price"),
        (-1.0, None, "non_positive_price"),
        (1.0, Some(-0.5), "invalid_qty"),
        (1.0, Some(f64::INFINITY), "invalid_qty"),
    ] {
        let refused = series
            .update(1_000, price, qty, 0, &mut closed)
            .unwrap_err();
        assert_eq!(refused.code(), code);
    }
    assert_eq!(series, before);
    series
        .update(1_000, 1.0, Some(0.0), 0, &mut closed)
        .expect("a zero quantity");
    series.close_idle(i64::MAX, &mut closed);
    assert_eq!(
        (closed[0].volume, closed[0].vwap),
        (Some(0.0), None),
        "no vwap without volume"
    );
}

/// A small deterministic generator (no dependency for a test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a candle is by definition: every accepted tick of `[start, end)`, recomputed.
fn naive(interval_ms: i64, accepted: &[(i64, f64, Option<f64>)]) -> Vec<Candle> {
    let mut starts: Vec<i64> = accepted
        .iter()
        .map(|t| t.0.div_euclid(interval_ms) * interval_ms)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    starts
        .into_iter()
        .map(|start| {
            let ticks: Vec<_> = accepted
                .iter()
                .filter(|t| t.0.div_euclid(interval_ms) * interval_ms == start)
                .collect();
            let first = ticks.iter().min_by_key(|t| t.0).expect("one tick");
            // min_by_key keeps the first of equal keys, max_by_key the last: ties by arrival.
            let last = ticks.iter().max_by_key(|t| t.0).expect("one tick");
            let with_qty: Vec<_> = ticks.iter().filter_map(|t| t.2.map(|q| (t.1, q))).collect();
            let volume =
                (!with_qty.is_empty()).then(|| with_qty.iter().map(|(_, q)| q).sum::<f64>());
            let notional: f64 = with_qty.iter().map(|(p, q)| p * q).sum();
            Candle {
                start,
                end: start + interval_ms,
                open: first.1,
                high: ticks.iter().map(|t| t.1).fold(f64::MIN, f64::max),
                low: ticks.iter().map(|t| t.1).fold(f64::MAX, f64::min),
                close: last.1,
                trades: ticks.len() as u64,
                volume,
                vwap: volume.filter(|v| *v > 0.0).map(|v| notional / v),
                first_ts: first.0,
                last_ts: last.0,
            }
        })
        .collect()
}

fn close_to(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0),
        (a, b) => a == b,
    }
}

/// Random streams, out of order within and beyond the grace, some quiet gaps: the candles
/// emitted (then those still open, closed idle) are exactly the naive recomputation over the
/// ticks `update` accepted, and a snapshot taken anywhere continues identically.
#[test]
fn candles_equal_a_recomputation_over_the_accepted_ticks() {
    for seed in 0..200 {
        let mut rng = Lcg(seed);
        let interval_ms = [1_000, 5_000, 60_000][(seed % 3) as usize];
        let grace_ms = [0, 700, 15_000][(seed / 3 % 3) as usize];
        let mut series = CandleSeries::new(spec(interval_ms, grace_ms));
        let (mut closed, mut accepted) = (Vec::new(), Vec::new());
        let mut newest = 1_700_000_000_000_i64;
        let snapshot_at = rng.below(400) as i64;
        let mut restored: Option<CandleSeries> = None;
        let mut restored_closed = Vec::new();
        for i in 0..400_i64 {
            newest += match rng.below(20) {
                0 => 3 * interval_ms as u64, // a gap: candles with no ticks emit nothing
                n => n * 37,
            } as i64;
            let ts = if rng.below(4) == 0 {
                newest - rng.below(grace_ms as u64 * 2 + 1) as i64
            } else {
                newest
            };
            let price = 100.0 + (rng.below(10_000) as f64) / 100.0;
            let qty = (rng.below(3) > 0).then(|| rng.below(1_000) as f64 / 8.0);
            if i == snapshot_at {
                let bytes = series.snapshot();
                restored =
                    Some(CandleSeries::restore(series.spec().clone(), &bytes).expect("restores"));
                restored_closed = closed.clone();
            }
            let result = series.update(ts, price, qty, i, &mut closed);
            if let Some(r) = &mut restored {
                let again = r.update(ts, price, qty, i, &mut restored_closed);
                assert_eq!(
                    result, again,
                    "seed {seed}: the restored series answers alike"
                );
            }
            if result.is_ok() {
                accepted.push((ts, price, qty));
            }
        }
        series.close_idle(i64::MAX, &mut closed);
        let expected = naive(interval_ms, &accepted);
        assert_eq!(closed.len(), expected.len(), "seed {seed}");
        for (got, want) in closed.iter().zip(&expected) {
            assert_eq!(
                (
                    got.start,
                    got.end,
                    got.open,
                    got.high,
                    got.low,
                    got.close,
                    got.trades,
                    got.first_ts,
                    got.last_ts
                ),
                (
                    want.start,
                    want.end,
                    want.open,
                    want.high,
                    want.low,
                    want.close,
                    want.trades,
                    want.first_ts,
                    want.last_ts
                ),
                "seed {seed}"
            );
            assert!(
                close_to(got.volume, want.volume) && close_to(got.vwap, want.vwap),
                "seed {seed}: {got:?} vs {want:?}"
            );
        }
        if let Some(mut r) = restored {
            r.close_idle(i64::MAX, &mut restored_closed);
            assert_eq!(
                restored_closed, closed,
                "seed {seed}: restore continues bit for bit"
            );
        }
    }
}

#[test]
fn snapshots_refuse_another_spec_and_corrupt_bytes() {
    let mut series = CandleSeries::new(spec(MIN, 5_000));
    let mut closed = Vec::new();
    series
        .update(1_000, 10.0, Some(2.0), 5, &mut closed)
        .expect("a tick");
    let bytes = series.snapshot();
    assert_eq!(
        CandleSeries::restore(spec(MIN, 5_000), &bytes),
        Ok(series.clone())
    );
    assert!(matches!(
        CandleSeries::restore(spec(MIN, 6_000), &bytes),
        Err(SnapshotError::ConfigMismatch { .. })
    ));
    for cut in 0..bytes.len() {
        assert!(
            CandleSeries::restore(spec(MIN, 5_000), &bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(matches!(
        CandleSeries::restore(spec(MIN, 5_000), &extra),
        Err(SnapshotError::TrailingBytes { extra: 1 })
    ));
}
