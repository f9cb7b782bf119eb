//! Test support: a trustworthy reference for window statistics (two-pass in double-double
//! arithmetic, ~106-bit), a naive model of `SymbolWindows`, and comparison helpers.

#![allow(dead_code)]

use std::sync::Arc;

use tickstream_window::{Bounds, Config, Jump, SymbolWindows, Tick, WindowKind};

/// Relative error the spec allows (1e-9); observed errors are ~1e-15.
pub const TOLERANCE: f64 = 1e-9;

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

fn quick_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

/// A double-double number `hi + lo`, |lo| <= ulp(hi) / 2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dd(pub f64, pub f64);

impl Dd {
    pub fn add(self, o: Self) -> Self {
        let (s, e) = two_sum(self.0, o.0);
        let (t, f) = two_sum(self.1, o.1);
        let (s, e) = quick_two_sum(s, e + t);
        let (s, e) = quick_two_sum(s, e + f);
        Self(s, e)
    }

    pub fn neg(self) -> Self {
        Self(-self.0, -self.1)
    }

    pub fn mul(self, o: Self) -> Self {
        let (p, e) = two_prod(self.0, o.0);
        let (p, e) = quick_two_sum(p, e + (self.0 * o.1 + self.1 * o.0));
        Self(p, e)
    }

    pub fn div(self, b: f64) -> Self {
        let q1 = self.0 / b;
        let r = self.add(Dd(q1, 0.0).mul(Dd(b, 0.0)).neg());
        let q2 = r.0 / b;
        let (q, e) = quick_two_sum(q1, q2);
        Self(q, e)
    }

    pub fn to_f64(self) -> f64 {
        self.0 + self.1
    }
}

/// Reference statistics of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    pub count: usize,
    pub mean: f64,
    pub variance: f64,
    pub std_dev: f64,
    pub min: f64,
    pub max: f64,
}

/// Two-pass mean and population variance in double-double arithmetic.
pub fn reference(xs: &[f64]) -> Reference {
    assert!(!xs.is_empty());
    let n = xs.len() as f64;
    let mean = xs
        .iter()
        .fold(Dd(0.0, 0.0), |acc, &x| acc.add(Dd(x, 0.0)))
        .div(n);
    let ss = xs.iter().fold(Dd(0.0, 0.0), |acc, &x| {
        let d = Dd(x, 0.0).add(mean.neg());
        acc.add(d.mul(d))
    });
    let variance = ss.div(n);
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // The exact variance of a flat window is 0; the double-double one is too.
    Reference {
        count: xs.len(),
        mean: mean.to_f64(),
        variance: variance.to_f64(),
        std_dev: variance.to_f64().sqrt(),
        min,
        max,
    }
}

/// The naive two-pass computation in plain f64 (what "a naive recomputation" usually means).
pub fn naive_two_pass(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

pub fn rel_err(got: f64, want: f64) -> f64 {
    if got == want {
        0.0
    } else {
        (got - want).abs() / want.abs()
    }
}

/// Largest relative errors seen, for reporting.
#[derive(Debug, Default, Clone, Copy)]
pub struct Errors {
    pub mean: f64,
    pub std_dev: f64,
    pub checks: u64,
}

impl Errors {
    /// Compares one window's statistics with the reference; panics beyond `TOLERANCE`.
    pub fn check(&mut self, what: &str, stats: &tickstream_window::Stats, xs: &[f64]) {
        let r = reference(xs);
        assert_eq!(stats.count, r.count, "{what}: count");
        assert_eq!((stats.min, stats.max), (r.min, r.max), "{what}: min/max");
        assert!(
            stats.variance >= 0.0 && stats.std_dev >= 0.0,
            "{what}: negative variance"
        );
        if r.min == r.max {
            assert_eq!(
                stats.variance.to_bits(),
                0.0f64.to_bits(),
                "{what}: flat window variance"
            );
            assert_eq!(
                stats.std_dev.to_bits(),
                0.0f64.to_bits(),
                "{what}: flat window std dev"
            );
            assert_eq!(stats.mean, r.min, "{what}: flat window mean");
            self.checks += 1;
            return;
        }
        let e_mean = rel_err(stats.mean, r.mean);
        let e_std = rel_err(stats.std_dev, r.std_dev);
        assert!(
            e_mean <= TOLERANCE && e_std <= TOLERANCE,
            "{what}: mean {} vs {} (rel {e_mean:e}), std dev {:e} vs {:e} (rel {e_std:e}), n {}, \
             min {:e}, max {:e}",
            stats.mean,
            r.mean,
            stats.std_dev,
            r.std_dev,
            r.count,
            r.min,
            r.max
        );
        self.mean = self.mean.max(e_mean);
        self.std_dev = self.std_dev.max(e_std);
        self.checks += 1;
    }
}

/// What the model says about one accepted tick.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUpdate {
    pub jump: Option<Jump>,
    /// Per window: its prices (window order is irrelevant to the statistics) and min count.
    pub windows: Vec<(Vec<f64>, usize)>,
    /// Per window: the event times it covers.
    pub bounds: Vec<Option<Bounds>>,
    /// Per window: Σ price·qty / Σ qty over its ticks with a quantity.
    pub vwaps: Vec<Option<f64>>,
}

/// A deliberately naive `SymbolWindows`: keeps every accepted tick and recomputes each window
/// from the definition.
pub struct Model {
    config: Arc<Config>,
    accepted: Vec<Tick>,
    newest: Option<i64>,
}

impl Model {
    pub fn new(config: Arc<Config>) -> Self {
        Self {
            config,
            accepted: Vec::new(),
            newest: None,
        }
    }

    /// The rejection code, or the update.
    pub fn update(&mut self, tick: Tick) -> Result<ModelUpdate, &'static str> {
        let p = tick.price;
        if p.is_nan() || p.is_infinite() {
            return Err("non_finite_price");
        }
        if p <= 0.0 {
            return Err("non_positive_price");
        }
        if !(1e-100..=1e100).contains(&p) {
            return Err("price_out_of_range");
        }
        if tick.qty.is_some_and(|q| !(q.is_finite() && q >= 0.0)) {
            return Err("invalid_qty");
        }
        if let Some(newest) = self.newest
            && (i128::from(tick.ts)
                < i128::from(newest) - i128::from(self.config.allowed_lateness_ms()))
        {
            return Err("late_tick");
        }
        let jump = self.accepted.last().and_then(|prev| {
            let change = (p - prev.price) / prev.price;
            (change.abs() > self.config.jump().threshold()).then(|| Jump {
                from: prev.price,
                to: p,
                change_pct: change * 100.0,
                threshold_pct: self.config.jump().threshold() * 100.0,
            })
        });
        self.accepted.push(tick);
        let newest = self.newest.map_or(tick.ts, |n| n.max(tick.ts));
        self.newest = Some(newest);
        let windows = self
            .config
            .windows()
            .iter()
            .map(|spec| {
                let prices = match spec.kind() {
                    WindowKind::Count { size } => {
                        let from = self.accepted.len().saturating_sub(size as usize);
                        self.accepted[from..].iter().map(|t| t.price).collect()
                    }
                    WindowKind::Time { span_ms } => {
                        let start = i128::from(newest) - i128::from(span_ms);
                        self.accepted
                            .iter()
                            .filter(|t| i128::from(t.ts) > start)
                            .map(|t| t.price)
                            .collect()
                    }
                };
                (prices, spec.min_count() as usize)
            })
            .collect();
        let bounds = self
            .config
            .windows()
            .iter()
            .map(|spec| match spec.kind() {
                WindowKind::Count { size } => {
                    let from = self.accepted.len().saturating_sub(size as usize);
                    let held = &self.accepted[from..];
                    Some(Bounds::Count {
                        first_ts: held.first()?.ts,
                        last_ts: held.last()?.ts,
                    })
                }
                WindowKind::Time { span_ms } => Some(Bounds::Time {
                    start: newest.saturating_add(1).saturating_sub(span_ms),
                    end: newest.saturating_add(1),
                }),
            })
            .collect();
        let vwaps = self
            .config
            .windows()
            .iter()
            .map(|spec| {
                let held: Vec<&Tick> = match spec.kind() {
                    WindowKind::Count { size } => {
                        let from = self.accepted.len().saturating_sub(size as usize);
                        self.accepted[from..].iter().collect()
                    }
                    WindowKind::Time { span_ms } => {
                        let start = i128::from(newest) - i128::from(span_ms);
                        self.accepted
                            .iter()
                            .filter(|t| i128::from(t.ts) > start)
                            .collect()
                    }
                };
                let with_qty: Vec<(f64, f64)> = held
                    .iter()
                    .filter_map(|t| Some((t.price, t.qty?)))
                    .collect();
                let volume: f64 = with_qty.iter().map(|(_, q)| q).sum();
                (volume > 0.0).then(|| with_qty.iter().map(|(p, q)| p * q).sum::<f64>() / volume)
            })
            .collect();
        Ok(ModelUpdate {
            jump,
            windows,
            bounds,
            vwaps,
        })
    }
}

/// Feeds `tick` to both and asserts they agree (rejection, jump bits, counts, statistics).
pub fn compare(state: &mut SymbolWindows, model: &mut Model, tick: Tick, errors: &mut Errors) {
    let expect = model.update(tick);
    let got = state.update(tick);
    match (got, expect) {
        (Err(r), Err(code)) => assert_eq!(r.code(), code, "{tick:?}"),
        (Ok(update), Ok(expect)) => {
            assert_eq!(
                update.jump().map(jump_bits),
                expect.jump.map(jump_bits),
                "{tick:?}"
            );
            assert_eq!(update.readings().len(), expect.windows.len());
            for (reading, vwap) in update.readings().zip(&expect.vwaps) {
                let close = match (reading.vwap, vwap) {
                    (None, None) => true,
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs(),
                    _ => false,
                };
                assert!(
                    close,
                    "{} vwap {:?}, naive {vwap:?} after {tick:?}",
                    reading.label(),
                    reading.vwap
                );
            }
            for (reading, bounds) in update.readings().zip(&expect.bounds) {
                assert_eq!(
                    reading.bounds,
                    *bounds,
                    "{} after {tick:?}",
                    reading.label()
                );
            }
            for (reading, (prices, min_count)) in update.readings().zip(&expect.windows) {
                assert_eq!(
                    reading.count,
                    prices.len(),
                    "{} after {tick:?}",
                    reading.label()
                );
                match reading.stats {
                    None => assert!(
                        prices.len() < *min_count,
                        "{}: stats missing",
                        reading.label()
                    ),
                    Some(stats) => {
                        assert!(
                            prices.len() >= *min_count,
                            "{}: stats too early",
                            reading.label()
                        );
                        errors.check(reading.label(), &stats, prices);
                    }
                }
            }
        }
        (got, expect) => panic!(
            "{tick:?}: state says {:?}, model says {expect:?}",
            got.map(|u| u.jump())
        ),
    }
}

pub fn jump_bits(j: Jump) -> [u64; 4] {
    [
        j.from.to_bits(),
        j.to.to_bits(),
        j.change_pct.to_bits(),
        j.threshold_pct.to_bits(),
    ]
}

/// Everything an update reports, as bits, for bit-identity checks.
pub fn outcome_bits(state: &mut SymbolWindows, tick: Tick) -> Result<Vec<u64>, &'static str> {
    let update = state.update(tick).map_err(|r| r.code())?;
    let mut bits: Vec<u64> = update.jump().map(jump_bits).into_iter().flatten().collect();
    for r in update.readings() {
        bits.push(r.count as u64);
        bits.push(r.vwap.map_or(u64::MAX, f64::to_bits));
        bits.push(match r.bounds {
            Some(Bounds::Count { first_ts, last_ts })
            | Some(Bounds::Time {
                start: first_ts,
                end: last_ts,
            }) => (first_ts ^ last_ts.rotate_left(17)) as u64,
            None => u64::MAX,
        });
        if let Some(s) = r.stats {
            bits.extend([s.mean, s.variance, s.std_dev, s.min, s.max].map(f64::to_bits));
        }
    }
    for (spec, c) in update.candles() {
        bits.push(spec.interval_ms() as u64);
        bits.extend([c.start, c.end, c.first_ts, c.last_ts].map(|v| v as u64));
        bits.extend([c.open, c.high, c.low, c.close].map(f64::to_bits));
        bits.extend([c.volume, c.vwap].map(|v| v.map_or(u64::MAX, f64::to_bits)));
        bits.push(c.trades);
    }
    Ok(bits)
}

/// A small deterministic PRNG (xorshift64*), for long generated streams.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
