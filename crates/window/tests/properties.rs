//! Property tests: random streams (magnitudes 1e-8..1e6, flat stretches, ulp-level wiggles,
//! jumps, level shifts, invalid prices, late and very late ticks) under random window
//! configurations, against a naive model and a double-double reference; and random restore
//! points, which must continue bit-identically.

mod common;

use std::sync::Arc;

use common::{Errors, Model, compare, outcome_bits};
use proptest::prelude::*;
use tickstream_window::{CandleSpec, Config, JumpSpec, SymbolWindows, Tick, WindowSpec};

#[derive(Debug, Clone)]
enum Move {
    /// Same price again.
    Same,
    /// Relative random-walk step.
    Walk(f64),
    /// A few ulps up or down.
    Ulps(i8),
    /// Relative change around 1e-10 (1e6 ± 1e-4).
    Micro(f64),
    /// Relative change up to ±30 %.
    Jump(f64),
    /// A new level 10^e, e in -8..6.
    Level(f64),
    /// An invalid price (the walk continues from the previous one).
    Invalid(u8),
}

fn moves() -> impl Strategy<Value = Move> {
    prop_oneof![
        4 => Just(Move::Same),
        6 => (-1e-3..1e-3f64).prop_map(Move::Walk),
        2 => any::<i8>().prop_map(Move::Ulps),
        2 => (-1e-10..1e-10f64).prop_map(Move::Micro),
        1 => (-0.3..0.3f64).prop_map(Move::Jump),
        1 => (-8.0..6.0f64).prop_map(Move::Level),
        1 => (0..6u8).prop_map(Move::Invalid),
    ]
}

/// Event-time step: mostly forward, sometimes late (within or beyond lateness), sometimes a gap.
fn steps() -> impl Strategy<Value = i64> {
    prop_oneof![8 => 0..400i64, 2 => -4_000..0i64, 1 => 2_000..20_000i64]
}

fn windows() -> impl Strategy<Value = WindowSpec> {
    prop_oneof![
        (1..40u32)
            .prop_flat_map(|size| (Just(size), 1..=size))
            .prop_map(|(size, min)| {
                WindowSpec::count_with_min(size, min).expect("valid window")
            }),
        (1..6_000i64, 1..4u32)
            .prop_map(|(span, min)| WindowSpec::time_with_min(span, min).expect("valid window")),
    ]
}

fn configs() -> impl Strategy<Value = Arc<Config>> {
    (
        prop::collection::vec(windows(), 1..5),
        0..3_000i64,
        0.001..0.5f64,
    )
        .prop_map(|(specs, lateness, jump)| {
            let mut unique: Vec<WindowSpec> = Vec::new();
            for s in specs {
                if unique.iter().all(|u| u.label() != s.label()) {
                    unique.push(s);
                }
            }
            let config = Config::new(unique).expect("valid config");
            Arc::new(
                config
                    .with_jump(JumpSpec::new(jump).expect("valid"))
                    .with_allowed_lateness_ms(lateness)
                    .expect("valid"),
            )
        })
}

/// [`configs`] with 0 to 3 candle intervals of 1 s to 10 s and graces up to 3 s.
fn configs_with_candles() -> impl Strategy<Value = Arc<Config>> {
    (
        configs(),
        prop::collection::vec(
            (prop::sample::select(vec![1i64, 2, 5, 10]), 0..3_000i64),
            0..4,
        ),
    )
        .prop_map(|(config, candles)| {
            let mut specs: Vec<CandleSpec> = Vec::new();
            for (seconds, grace) in candles {
                if specs.iter().all(|s| s.interval_ms() != seconds * 1_000) {
                    specs.push(CandleSpec::new(seconds * 1_000, grace).expect("valid"));
                }
            }
            Arc::new(
                (*config)
                    .clone()
                    .with_candles(specs)
                    .expect("distinct intervals"),
            )
        })
}

fn stream() -> impl Strategy<Value = (f64, Vec<(Move, i64)>)> {
    (
        -8.0..6.0f64,
        prop::collection::vec((moves(), steps()), 1..250),
    )
}

/// Turns moves into ticks.
fn ticks(start_exp: f64, moves: &[(Move, i64)]) -> Vec<Tick> {
    let mut price = 10f64.powf(start_exp);
    let mut ts = 1_700_000_000_000i64;
    let mut out = Vec::with_capacity(moves.len());
    for (mv, dt) in moves {
        ts += dt;
        let next = match *mv {
            Move::Same => price,
            Move::Walk(r) | Move::Micro(r) | Move::Jump(r) => price * (1.0 + r),
            Move::Ulps(k) => f64::from_bits(price.to_bits().wrapping_add_signed(i64::from(k))),
            Move::Level(e) => 10f64.powf(e),
            Move::Invalid(kind) => {
                let bad = [f64::NAN, f64::INFINITY, -price, 0.0, 1e-300, 1e300][usize::from(kind)];
                out.push(Tick::new(ts, bad));
                continue;
            }
        };
        price = next;
        // Some ticks carry a quantity (a few of them invalid), most not.
        let qty = match ts.rem_euclid(7) {
            0 => Some((ts % 1_000) as f64 / 7.0),
            1 => Some(0.0),
            2 if ts % 5 == 0 => Some(-1.0),
            _ => None,
        };
        out.push(Tick::new(ts, price).with_qty(qty));
    }
    out
}

/// 192 cases by default (a few seconds in debug); `PROPTEST_CASES=5000` for a deeper run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(192)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn matches_the_naive_reference(config in configs(), (start, moves) in stream()) {
        let mut state = SymbolWindows::new(Arc::clone(&config));
        let mut model = Model::new(config);
        let mut errors = Errors::default();
        for tick in ticks(start, &moves) {
            compare(&mut state, &mut model, tick, &mut errors);
        }
    }

    #[test]
    fn restore_continues_bit_identically(
        config in configs_with_candles(),
        (start, moves) in stream(),
        cut in any::<prop::sample::Index>(),
    ) {
        let ticks = ticks(start, &moves);
        let cut = cut.index(ticks.len() + 1);
        let mut uninterrupted = SymbolWindows::new(Arc::clone(&config));
        let mut first = SymbolWindows::new(Arc::clone(&config));
        for &tick in &ticks[..cut] {
            let a = outcome_bits(&mut uninterrupted, tick);
            let b = outcome_bits(&mut first, tick);
            prop_assert_eq!(a, b);
        }
        let bytes = first.snapshot();
        let mut restored = SymbolWindows::restore(Arc::clone(&config), &bytes).expect("own snapshot");
        prop_assert_eq!(restored.snapshot(), bytes, "snapshot of a restored state is the same bytes");
        for &tick in &ticks[cut..] {
            let a = outcome_bits(&mut uninterrupted, tick);
            let b = outcome_bits(&mut restored, tick);
            prop_assert_eq!(a, b, "after restoring at tick {}", cut);
        }
        prop_assert_eq!(restored.snapshot(), uninterrupted.snapshot());
    }

    /// Commits at random ticks, each writing the changes since the previous one (or a whole
    /// snapshot when they cannot be said as changes): the last snapshot with its changes
    /// applied in order is, at every commit, the live state — and continues as it would.
    #[test]
    fn logged_changes_restore_bit_identically(
        config in configs_with_candles(),
        (start, moves) in stream(),
        commits in prop::collection::vec(any::<bool>(), 0..400),
        cut in any::<prop::sample::Index>(),
    ) {
        let ticks = ticks(start, &moves);
        let cut = cut.index(ticks.len() + 1);
        let mut live = SymbolWindows::new(Arc::clone(&config));
        let mut snapshot = live.snapshot();
        let mut log: Vec<Vec<u8>> = Vec::new();
        let mut buf = Vec::new();
        for (i, &tick) in ticks[..cut].iter().enumerate() {
            let _ = live.update(tick);
            if commits.get(i).copied().unwrap_or(i % 7 == 0) || i + 1 == cut {
                buf.clear();
                if live.changes_into(&mut buf) {
                    log.push(buf.clone());
                } else {
                    snapshot = live.snapshot();
                    log.clear();
                }
                live.mark_committed();
                let mut restored = SymbolWindows::restore(Arc::clone(&config), &snapshot)
                    .expect("own snapshot");
                for change in &log {
                    restored.apply_changes(change).expect("own changes");
                }
                prop_assert_eq!(restored.snapshot(), live.snapshot(), "at commit after tick {}", i);
            }
        }
        let mut restored = SymbolWindows::restore(Arc::clone(&config), &snapshot).expect("own snapshot");
        for change in &log {
            restored.apply_changes(change).expect("own changes");
        }
        for &tick in &ticks[cut..] {
            let a = outcome_bits(&mut live, tick);
            let b = outcome_bits(&mut restored, tick);
            prop_assert_eq!(a, b, "after restoring at tick {}", cut);
        }
    }

    #[test]
    fn rejected_ticks_change_nothing(config in configs_with_candles(), (start, moves) in stream()) {
        let mut state = SymbolWindows::new(config);
        for tick in ticks(start, &moves) {
            let before = state.snapshot();
            if state.update(tick).is_err() {
                prop_assert_eq!(state.snapshot(), before);
            }
        }
    }

    #[test]
    fn damaged_snapshots_never_panic(
        config in configs_with_candles(),
        (start, moves) in stream(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut state = SymbolWindows::new(Arc::clone(&config));
        for tick in ticks(start, &moves) {
            let _ = state.update(tick);
        }
        let bytes = state.snapshot();
        // Every proper prefix is refused.
        let len = cut.index(bytes.len());
        prop_assert!(SymbolWindows::restore(Arc::clone(&config), &bytes[..len]).is_err());
        // Random byte edits are refused or yield a usable state; neither panics.
        let mut damaged = bytes.clone();
        for (at, value) in edits {
            let i = at.index(damaged.len());
            damaged[i] = value;
        }
        if let Ok(mut s) = SymbolWindows::restore(Arc::clone(&config), &damaged) {
            for tick in ticks(start, &moves).into_iter().take(20) {
                if let Ok(update) = s.update(tick) {
                    for r in update.readings() {
                        if let Some(stats) = r.stats {
                            prop_assert!(stats.variance >= 0.0 && stats.std_dev >= 0.0);
                        }
                    }
                }
            }
        }
    }
}
