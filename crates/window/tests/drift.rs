//! Drift: millions of ticks through windows of 20, 10,000 and 30,000 ticks (5 minutes at
//! 100 ticks/s), across regimes that are hard for running sums — prices from 1e-8 to 1e6,
//! spreads down to 1e-10 of the level, flat stretches longer than every window, jumps and
//! level shifts — checked against a double-double two-pass recomputation of the same window.
//!
//! `drift_ten_million_ticks` is the acceptance test (`make test` runs it in release:
//! `cargo test -p tickstream-window --release -- --ignored`); `drift_short` runs the same
//! stream for 200,000 ticks in every `cargo test`.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use common::{Errors, Rng, naive_two_pass, reference, rel_err};
use tickstream_window::{Config, SymbolWindows, Tick, WindowSpec};

/// The price process: regimes of random length, each with a level, a volatility and a shape.
struct Prices {
    rng: Rng,
    price: f64,
    level: f64,
    vol: f64,
    flat: bool,
    left: u64,
}

impl Prices {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed),
            price: 100.0,
            level: 100.0,
            vol: 1e-3,
            flat: false,
            left: 0,
        }
    }

    fn next_price(&mut self) -> f64 {
        if self.left == 0 {
            self.left = 20_000 + self.rng.below(180_000);
            // Levels across the whole range; volatilities from 1e-3 down to 1e-10 relative.
            self.level = 10f64.powf(self.rng.range(-8.0, 6.0));
            if self.rng.below(5) == 0 {
                self.level = [1e-8, 1e6][self.rng.below(2) as usize];
            }
            self.vol = 10f64.powf(-self.rng.range(3.0, 10.0));
            self.flat = self.rng.below(4) == 0;
            self.price = self.level;
        }
        self.left -= 1;
        if self.flat {
            return self.level;
        }
        let step = (self.rng.unit() - 0.5) * 2.0 * self.vol;
        let jump = if self.rng.below(50_000) == 0 {
            self.rng.range(-0.2, 0.2)
        } else {
            0.0
        };
        // Mean-reverting around the level so that prices stay in the regime's magnitude.
        self.price *= 1.0 + step + jump - 1e-3 * (self.price / self.level - 1.0);
        self.price
    }
}

struct Window {
    label: &'static str,
    /// Largest number of ticks kept (count windows) or the span (time windows).
    size: usize,
    time_ms: Option<i64>,
    contents: VecDeque<(i64, f64)>,
    errors: Errors,
    naive_worst: f64,
}

fn run(ticks: u64, check_every: u64) {
    let specs = [
        WindowSpec::count(20).expect("valid"),
        WindowSpec::count(10_000).expect("valid"),
        WindowSpec::time_ms(300_000).expect("valid"),
    ];
    let mut windows = vec![
        Window {
            label: "count:20",
            size: 20,
            time_ms: None,
            contents: VecDeque::new(),
            errors: Errors::default(),
            naive_worst: 0.0,
        },
        Window {
            label: "count:10000",
            size: 10_000,
            time_ms: None,
            contents: VecDeque::new(),
            errors: Errors::default(),
            naive_worst: 0.0,
        },
        Window {
            label: "time:5m",
            size: 0,
            time_ms: Some(300_000),
            contents: VecDeque::new(),
            errors: Errors::default(),
            naive_worst: 0.0,
        },
    ];
    let mut state = SymbolWindows::new(Arc::new(Config::new(specs).expect("valid")));
    let mut prices = Prices::new(0x5eed_1234_abcd_ef01);
    let started = Instant::now();
    let mut ts = 1_700_000_000_000i64;
    let mut buf = Vec::new();
    for i in 0..ticks {
        ts += 10;
        let p = prices.next_price();
        let update = state.update(Tick::new(ts, p)).expect("valid tick");
        // Check the small window often, the big ones on a stride and right after each regime
        // change, when a level shift is leaving them.
        let regime_edge = prices.left.is_multiple_of(5_000);
        let readings: Vec<_> = update.readings().collect();
        for (w, r) in windows.iter_mut().zip(readings) {
            w.contents.push_back((ts, p));
            match w.time_ms {
                None if w.contents.len() > w.size => {
                    w.contents.pop_front();
                }
                Some(span) => {
                    while w.contents.front().is_some_and(|&(t, _)| t <= ts - span) {
                        w.contents.pop_front();
                    }
                }
                None => {}
            }
            let due = if w.size == 20 {
                i % (check_every / 64).max(1) == 0
            } else {
                i % check_every == 0 || regime_edge
            };
            if let (true, Some(stats)) = (due, r.stats) {
                let xs: Vec<f64> = w.contents.iter().map(|&(_, x)| x).collect();
                w.errors.check(w.label, &stats, &xs);
                let (mean, sd) = naive_two_pass(&xs);
                let exact = reference(&xs);
                if exact.std_dev > 0.0 {
                    w.naive_worst = w
                        .naive_worst
                        .max(rel_err(sd, exact.std_dev))
                        .max(rel_err(mean, exact.mean));
                }
            }
        }
        if i % 1_000_003 == 0 {
            // A snapshot round trip on the way must not disturb anything.
            state.snapshot_into(&mut buf);
            let restored =
                SymbolWindows::restore(Arc::clone(state.config()), &buf).expect("own snapshot");
            assert_eq!(restored.snapshot(), buf);
            state = restored;
        }
    }
    let elapsed = started.elapsed();
    for w in &windows {
        eprintln!(
            "{:>12}: {:>7} checks, worst relative error mean {:.2e}, std dev {:.2e} (plain f64 two-pass: {:.2e})",
            w.label, w.errors.checks, w.errors.mean, w.errors.std_dev, w.naive_worst
        );
        assert!(w.errors.checks > 0);
    }
    eprintln!(
        "{ticks} ticks in {elapsed:.1?}, {} rebuilds",
        state.rebuilds()
    );
}

#[test]
#[ignore = "10M ticks: run in release, `make test` does"]
fn drift_ten_million_ticks() {
    run(10_000_000, 10_007);
}

#[test]
fn drift_short() {
    run(200_000, 20_011);
}
