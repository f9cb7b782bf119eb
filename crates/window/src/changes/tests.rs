use std::sync::Arc;

use crate::{Config, SnapshotError, SymbolWindows, Tick, WindowSpec};

fn config() -> Arc<Config> {
    Arc::new(
        Config::new([
            WindowSpec::count(20).expect("valid"),
            WindowSpec::time_ms(300_000).expect("valid"),
        ])
        .expect("valid"),
    )
}

fn tick(ts: i64, price: f64) -> Tick {
    Tick::new(ts, price)
}

/// A state with `n` ticks, one per second, committed.
fn committed(n: i64) -> SymbolWindows {
    let mut state = SymbolWindows::new(config());
    for i in 0..n {
        state
            .update(tick(i * 1_000, 100.0 + i as f64))
            .expect("accepted");
    }
    state.mark_committed();
    state
}

#[test]
fn one_new_tick_costs_its_bytes_and_the_sums_not_the_windows() {
    let mut state = committed(200);
    state.update(tick(200_000, 123.5)).expect("accepted");
    let mut changes = Vec::new();
    assert!(state.changes_into(&mut changes));
    assert!((155..=170).contains(&changes.len()), "{}", changes.len());
    assert!(state.snapshot().len() > 2_000, "{}", state.snapshot().len());
}

#[test]
fn a_late_tick_among_committed_entries_needs_a_whole_snapshot() {
    let mut state = committed(10);
    state.update(tick(12_000, 1.0)).expect("accepted");
    state
        .update(tick(11_000, 2.0))
        .expect("late, among the new entries");
    let mut changes = Vec::new();
    assert!(
        state.changes_into(&mut changes),
        "late among new entries is fine"
    );
    state
        .update(tick(8_500, 3.0))
        .expect("late, among committed entries");
    let mut out = b"kept".to_vec();
    assert!(!state.changes_into(&mut out));
    assert_eq!(out, b"kept", "nothing is appended then");
    state.mark_committed();
    state.update(tick(13_000, 4.0)).expect("accepted");
    changes.clear();
    assert!(state.changes_into(&mut changes), "a commit starts over");
}

#[test]
fn evictions_of_new_and_committed_entries_are_both_counted() {
    let base = committed(5);
    let mut restored = base.clone();
    let mut live = base;
    // Far ahead: every committed entry leaves the time window, then new ones come and go.
    for i in 0..50 {
        live.update(tick(1_000_000 + i * 100_000, 50.0 + i as f64))
            .expect("accepted");
    }
    let mut changes = Vec::new();
    assert!(live.changes_into(&mut changes));
    restored.apply_changes(&changes).expect("applies");
    assert_eq!(restored.snapshot(), live.snapshot());
}

#[test]
fn changes_that_do_not_fit_the_state_are_refused_and_change_nothing() {
    let mut live = committed(3);
    live.update(tick(1_000_000, 7.0)).expect("accepted");
    let mut changes = Vec::new();
    assert!(live.changes_into(&mut changes));

    let mut empty = SymbolWindows::new(config());
    let before = empty.snapshot();
    // The empty state has no entries to evict.
    assert!(matches!(
        empty.apply_changes(&changes),
        Err(SnapshotError::Corrupt { .. })
    ));
    assert_eq!(empty.snapshot(), before);

    let mut other = SymbolWindows::new(Arc::new(
        Config::new([WindowSpec::count(5).expect("valid")]).expect("valid"),
    ));
    assert!(matches!(
        other.apply_changes(&changes),
        Err(SnapshotError::ConfigMismatch { .. })
    ));
    for cut in 0..changes.len() {
        let mut state = committed(3);
        assert!(
            state.apply_changes(&changes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut wrong = changes.clone();
    wrong[0] = b'X';
    assert!(matches!(
        committed(3).apply_changes(&wrong),
        Err(SnapshotError::BadMagic { .. })
    ));
}
