//! Candles kept by a symbol's state next to its windows: a tick is taken whole or not at all,
//! candles close on event time or on idle, and they survive snapshots and change records.

use std::sync::Arc;

use tickstream_window::{CandleSpec, Config, SymbolWindows, Tick, WindowSpec};

fn config(grace_ms: i64) -> Arc<Config> {
    let candles = [
        CandleSpec::new(1_000, grace_ms).expect("valid"),
        CandleSpec::new(5_000, grace_ms).expect("valid"),
    ];
    Arc::new(
        Config::new([WindowSpec::count(3).expect("valid")])
            .expect("valid")
            .with_allowed_lateness_ms(10_000)
            .expect("valid")
            .with_candles(candles)
            .expect("distinct"),
    )
}

/// `(interval label, start, trades)` of the candles a tick closed.
fn closed(state: &mut SymbolWindows, ts: i64, price: f64) -> Vec<(String, i64, u64)> {
    let update = state
        .update_at(Tick::new(ts, price).with_qty(Some(1.0)), ts)
        .expect("accepted");
    update
        .candles()
        .map(|(spec, c)| (spec.label().to_owned(), c.start, c.trades))
        .collect()
}

#[test]
fn a_tick_closes_the_candles_its_event_time_passes_once_grace_is_over() {
    let mut btc = SymbolWindows::new(config(500));
    assert!(closed(&mut btc, 100, 10.0).is_empty());
    assert!(closed(&mut btc, 900, 11.0).is_empty());
    // 1,000 + 500 grace: not yet.
    assert!(closed(&mut btc, 1_400, 12.0).is_empty());
    assert_eq!(closed(&mut btc, 1_500, 13.0), [("1s".to_owned(), 0, 2)]);
    assert_eq!(
        closed(&mut btc, 5_600, 14.0),
        [("1s".to_owned(), 1_000, 2), ("5s".to_owned(), 0, 4),]
    );
}

#[test]
fn a_tick_late_for_one_candle_interval_changes_nothing_at_all() {
    let mut btc = SymbolWindows::new(config(500));
    for (ts, price) in [(100, 10.0), (900, 11.0), (1_600, 12.0)] {
        btc.update(Tick::new(ts, price)).expect("accepted");
    }
    let before = btc.snapshot();
    // Within the windows' 10 s lateness, but its 1 s candle [0, 1000) has closed.
    let late = btc
        .update(Tick::new(950, 9.0))
        .expect_err("late for the 1s candles");
    assert_eq!(late.code(), "late");
    assert_eq!(
        btc.snapshot(),
        before,
        "not in the windows, not in the 5s candle"
    );
    // Within grace: counted in its own candle, which is not the newest.
    btc.update(Tick::new(1_200, 9.0)).expect("within grace");
    let candles = closed(&mut btc, 2_500, 12.5);
    assert_eq!(candles, [("1s".to_owned(), 1_000, 2)]);
}

#[test]
fn a_quiet_symbol_closes_its_candles_after_interval_plus_grace_of_wall_clock() {
    let mut btc = SymbolWindows::new(config(500));
    btc.update_at(Tick::new(100, 10.0), 1_000_000)
        .expect("accepted");
    btc.update_at(Tick::new(1_100, 11.0), 1_000_010)
        .expect("accepted");
    assert_eq!(btc.idle_deadline_ms(i64::MIN), Some(1_000_010 + 1_500));
    assert_eq!(btc.close_idle(1_001_509, i64::MIN).count(), 0, "not yet");
    let closed: Vec<_> = btc
        .close_idle(1_001_510, i64::MIN)
        .map(|(spec, c)| (spec.label().to_owned(), c.start))
        .collect();
    // The 5 s interval waits 5.5 s.
    assert_eq!(closed, [("1s".to_owned(), 0), ("1s".to_owned(), 1_000)]);
    assert_eq!(btc.idle_deadline_ms(i64::MIN), Some(1_000_010 + 5_500));
    assert_eq!(btc.close_idle(1_005_510, i64::MIN).count(), 1);
    assert_eq!(btc.idle_deadline_ms(i64::MIN), None);
    // After an idle close, a tick for a closed candle is late; one for a later candle opens it.
    assert_eq!(
        btc.update_at(Tick::new(1_200, 12.0), 1_005_600)
            .expect_err("its candle closed while idle")
            .code(),
        "late"
    );
    btc.update_at(Tick::new(6_000, 12.0), 1_005_700)
        .expect("a later candle");
}

#[test]
fn a_resumed_caller_waits_a_whole_idle_delay_from_when_it_resumed() {
    let mut btc = SymbolWindows::new(config(500));
    btc.update_at(Tick::new(100, 10.0), 1_000_000)
        .expect("accepted");
    // Restored an hour later: the backlog it now reads must land before anything idles out.
    let resumed = 1_000_000 + 3_600_000;
    assert_eq!(btc.idle_deadline_ms(resumed), Some(resumed + 1_500));
    assert_eq!(btc.close_idle(resumed + 1_499, resumed).count(), 0);
    assert_eq!(btc.close_idle(resumed + 1_500, resumed).count(), 1);
}

#[test]
fn candles_survive_snapshots_and_change_records() {
    let config = config(2_000);
    let mut live = SymbolWindows::new(Arc::clone(&config));
    for i in 0..20 {
        live.update(Tick::new(i * 300, 10.0 + i as f64).with_qty(Some(0.5)))
            .expect("accepted");
    }
    let snapshot = live.snapshot();
    live.mark_committed();
    for i in 20..30 {
        live.update(Tick::new(i * 300, 10.0 + i as f64))
            .expect("accepted");
    }
    let mut changes = Vec::new();
    assert!(live.changes_into(&mut changes));
    let mut restored = SymbolWindows::restore(Arc::clone(&config), &snapshot).expect("own");
    restored.apply_changes(&changes).expect("own");
    assert_eq!(restored.snapshot(), live.snapshot());
    assert_eq!(
        closed(&mut restored, 20_000, 1.0),
        closed(&mut live, 20_000, 1.0)
    );
    // Another grace is another configuration.
    assert!(SymbolWindows::restore(self::config(1_000), &snapshot).is_err());
}
