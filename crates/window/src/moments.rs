//! Running first and second moments of a sliding window: O(1) add/remove, no drift.
//!
//! # Why not plain running sums
//!
//! `Σx` and `Σx²` updated by adding the new price and subtracting the evicted one go wrong in
//! two ways: `var = Σx²/n - (Σx/n)²` cancels catastrophically when the spread is small next to
//! the level (prices around 1e6 moving by 1e-4 leave nothing of 53 bits), and every
//! subtraction leaves a rounding error behind that never goes away (drift).
//!
//! # What this does instead
//!
//! * **Shift.** Sums are of deviations `d = (x - kh) - kl` from a shift `K = kh + kl` (a
//!   double-word copy of the window mean at the last rebuild). With `K` near the mean,
//!   `q = Σd²/n` is about `var` itself, so `var = q - m²` (`m = Σd/n`) cancels little. For
//!   prices within a factor 2 of `kh`, `x - kh` is exact (Sterbenz), so a deviation carries
//!   one rounding, relative to itself rather than to the price level.
//! * **Compensation.** Each sum is a pair `(s, c)` updated with the error-free TwoSum; `c`
//!   collects the rounding error of every addition, so the pair tracks the exact sum of the
//!   terms. Adding and removing a price add the same bits with opposite sign (the shift is
//!   fixed between rebuilds), so what is removed is exactly what was added.
//! * **Rebuild.** O(n) recomputation from the window contents, which also re-centres `K`
//!   (the current mean as the sums tell it, then two passes: its double-word correction,
//!   then the compensated sums).
//!   Triggered when any of these holds after an update:
//!   1. `removed >= max(n, 1024)`: bounds the number of operations whose compensation errors
//!      can pile up (≤ ~2·max(n, 1024) since the last rebuild); paid for by those removals.
//!   2. `Σd²` fell below `2^-30` of its peak since the last rebuild: what remains is small
//!      next to the magnitudes whose rounding residue the compensation term still carries.
//!   3. `m² > 2^12 · var`: the mean walked away from `K` by more than 64 standard
//!      deviations, so `q - m²` would cancel more than 12 bits.
//!
//!   Trigger 1 is amortised O(1) by construction. Triggers 2 and 3 fire only when the
//!   window's spread collapses by a large factor relative to the last rebuild (a volatile
//!   stretch or a level shift leaving the window). Each firing consumes 30 (or 12) bits of
//!   dynamic range of the deviations present at the previous rebuild, so even adversarial
//!   streams get at most a handful per window length (bounded by the f64 range); ordinary
//!   markets get one per level shift. Flat windows (min == max) skip trigger 3: their
//!   variance is exactly 0 by definition.
//!
//! # Error bound
//!
//! With `ε = 2^-53`: each `d` has relative error ≤ 2ε, each `d²` ≤ 5ε; the compensated sums
//! add ≤ ε plus `ops²·ε²·peak`, which triggers 1 and 2 keep below ~1e-13 of the current sum
//! for windows up to ~10^5 ticks; and `q - m²` multiplies the relative error by at most
//! `1 + 3·m²/var ≤ 1 + 3·2^12` (trigger 3). So the variance is within ~2e-12 (relative) of
//! the variance of the exact window and the standard deviation within ~1e-12. The mean
//! `kh + (kl + m)` is within `ε·(2 + |m|/mean) ≤ ε·(2 + 64·σ/mean)`: a few ε, up to ~1e-12
//! for a 30,000-tick window holding one far outlier. Flat windows give exactly `var = 0` and
//! `mean = price`. The tests measure at most ~1e-12 (standard deviation, over 10 million
//! ticks of hard regimes) and ~2e-13 (mean).

/// Statistics of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Ticks in the window.
    pub count: usize,
    /// Arithmetic mean of the prices (the moving average).
    pub mean: f64,
    /// Population variance (divide by `count`). Never negative, exactly 0 for a flat window.
    pub variance: f64,
    /// Population standard deviation, `variance.sqrt()` (the volatility).
    pub std_dev: f64,
    /// Smallest price in the window.
    pub min: f64,
    /// Largest price in the window.
    pub max: f64,
}

/// Rebuild at least every this many removals, even in tiny windows (see trigger 1).
const MIN_REBUILD_PERIOD: u64 = 1024;
/// Trigger 2: rebuild when `Σd²` drops below its peak divided by this.
const COLLAPSE_LIMIT: f64 = (1u64 << 30) as f64;
/// Trigger 3: rebuild when `m²` exceeds this many variances.
const CANCEL_LIMIT: f64 = (1u64 << 12) as f64;

/// Error-free transformation: `a + b == s + e` exactly, with `s = fl(a + b)`.
#[inline(always)]
pub(crate) fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// Compensated `Σd` and `Σd²` (a rebuild's partial sums).
#[derive(Clone, Copy, Default)]
struct Sums {
    s1: f64,
    c1: f64,
    s2: f64,
    c2: f64,
}

impl Sums {
    #[inline(always)]
    fn add(&mut self, d: f64) {
        let (s, e) = two_sum(self.s1, d);
        self.s1 = s;
        self.c1 += e;
        let (s, e) = two_sum(self.s2, d * d);
        self.s2 = s;
        self.c2 += e;
    }
}

/// Shifted, compensated running sums of one window. Every field is part of the snapshot
/// (except the diagnostic `rebuilds`) so that a restored window continues bit-identically.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Moments {
    /// Shift, high word.
    pub(crate) kh: f64,
    /// Shift, low word.
    pub(crate) kl: f64,
    /// `Σd` as `s1 + c1`.
    pub(crate) s1: f64,
    pub(crate) c1: f64,
    /// `Σd²` as `s2 + c2`.
    pub(crate) s2: f64,
    pub(crate) c2: f64,
    /// Peak of `s2` since the last rebuild.
    pub(crate) peak2: f64,
    /// Removals since the last rebuild.
    pub(crate) removed: u64,
    /// Rebuilds since creation or restore (diagnostic only, not snapshotted).
    pub(crate) rebuilds: u64,
}

impl Moments {
    #[inline(always)]
    fn dev(&self, x: f64) -> f64 {
        (x - self.kh) - self.kl
    }

    /// Resets for an empty window about to receive `x`: the shift becomes `x` exactly, so a
    /// window starts centred without a rebuild, and no residue survives an emptied window.
    #[inline]
    pub(crate) fn restart_at(&mut self, x: f64) {
        *self = Self {
            kh: x,
            rebuilds: self.rebuilds,
            ..Self::default()
        };
    }

    #[inline(always)]
    pub(crate) fn add(&mut self, x: f64) {
        let d = self.dev(x);
        let (s, e) = two_sum(self.s1, d);
        self.s1 = s;
        self.c1 += e;
        let (s, e) = two_sum(self.s2, d * d);
        self.s2 = s;
        self.c2 += e;
        self.peak2 = if s > self.peak2 { s } else { self.peak2 };
    }

    #[inline(always)]
    pub(crate) fn remove(&mut self, x: f64) {
        let d = self.dev(x);
        let (s, e) = two_sum(self.s1, -d);
        self.s1 = s;
        self.c1 += e;
        let (s, e) = two_sum(self.s2, -(d * d));
        self.s2 = s;
        self.c2 += e;
        self.removed += 1;
    }

    /// Whether the window of `n` ticks should be rebuilt now (see the module docs).
    #[inline(always)]
    pub(crate) fn needs_rebuild(&self, n: usize, flat: bool) -> bool {
        let n64 = n as u64;
        let sum1 = self.s1 + self.c1;
        let sum2 = self.s2 + self.c2;
        // Trigger 3 without dividing: m² > L·(q - m²)  <=>  S1²·(1 + L) > L·n·S2.
        let cancels =
            !flat && sum1 * sum1 * (1.0 + CANCEL_LIMIT) > CANCEL_LIMIT * (n as f64) * sum2;
        self.removed >= n64.max(MIN_REBUILD_PERIOD) || sum2 * COLLAPSE_LIMIT < self.peak2 || cancels
    }

    /// The mean as the sums say, clamped into `[min, max]` (so it is a sane shift even if the
    /// sums have lost precision): the starting point of a rebuild.
    #[inline(always)]
    pub(crate) fn mean_hint(&self, n: usize, min: f64, max: f64) -> f64 {
        let mean = self.kh + (self.kl + (self.s1 + self.c1) / n as f64);
        if mean >= min && mean <= max {
            mean
        } else {
            0.5 * min + 0.5 * max
        }
    }

    /// Recomputed from the window's prices, in window order, so that the result is a function
    /// of the window contents (and `mean_hint`, itself a function of the stored sums) alone.
    /// `mean_hint` is [`Self::mean_hint`]; `flat` is `Some(price)` when every price in the
    /// window is the same, and the shift is then that price and all sums are exactly 0.
    /// Two passes: the correction `kl` of the shift, then the sums; each with two independent
    /// accumulators, which halves the dependency chains. A free function returning by value,
    /// so that callers can keep their copy in registers.
    #[cold]
    #[must_use]
    pub(crate) fn rebuilt<I>(
        rebuilds: u64,
        mean_hint: f64,
        prices: I,
        n: usize,
        flat: Option<f64>,
    ) -> Self
    where
        I: Iterator<Item = f64> + Clone,
    {
        let mut m = Self {
            rebuilds: rebuilds + 1,
            ..Self::default()
        };
        if n == 0 {
            return m;
        }
        if let Some(p) = flat {
            m.kh = p;
        } else {
            // x - kh is exact for prices near kh, so kh + kl is the mean to about ε² relative.
            m.kh = mean_hint;
            let (mut a, mut b) = (0.0, 0.0);
            let mut it = prices.clone();
            while let Some(x) = it.next() {
                a += x - m.kh;
                let Some(y) = it.next() else { break };
                b += y - m.kh;
            }
            m.kl = (a + b) / n as f64;
        }
        let (mut a, mut b) = (Sums::default(), Sums::default());
        let mut it = prices;
        while let Some(x) = it.next() {
            a.add(m.dev(x));
            let Some(y) = it.next() else { break };
            b.add(m.dev(y));
        }
        let (s, e) = two_sum(a.s1, b.s1);
        (m.s1, m.c1) = (s, a.c1 + b.c1 + e);
        let (s, e) = two_sum(a.s2, b.s2);
        (m.s2, m.c2) = (s, a.c2 + b.c2 + e);
        m.peak2 = m.s2;
        m
    }

    /// Statistics of the window of `n >= 1` ticks whose extremes are `min` and `max`.
    #[inline(always)]
    /// `inv_n` is `1.0 / n as f64`, which count windows keep at hand: a division is the
    /// longest latency on the path from a tick to its statistics.
    pub(crate) fn stats(&self, n: usize, inv_n: f64, min: f64, max: f64) -> Stats {
        if min == max {
            return Stats {
                count: n,
                mean: min,
                variance: 0.0,
                std_dev: 0.0,
                min,
                max,
            };
        }
        // The reciprocal's rounding adds ε to m and q, well inside the error budget.
        let m = (self.s1 + self.c1) * inv_n;
        let q = (self.s2 + self.c2) * inv_n;
        let v = q - m * m;
        let variance = if v > 0.0 { v } else { 0.0 };
        // Rounding could nudge the mean a hair outside [min, max]; it cannot be there.
        let mean = self.kh + (self.kl + m);
        let mean = if mean < min {
            min
        } else if mean > max {
            max
        } else {
            mean
        };
        Stats {
            count: n,
            mean,
            variance,
            std_dev: variance.sqrt(),
            min,
            max,
        }
    }

    /// Whether every field is a finite number (snapshot validation).
    pub(crate) fn is_finite(&self) -> bool {
        [
            self.kh, self.kl, self.s1, self.c1, self.s2, self.c2, self.peak2,
        ]
        .iter()
        .all(|v| v.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebuilt(xs: &[f64]) -> Moments {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        Moments::rebuilt(0, mean, xs.iter().copied(), xs.len(), None)
    }

    #[test]
    fn two_sum_is_error_free() {
        let (s, e) = two_sum(1e16, 1.0);
        assert_eq!(s, 1e16);
        assert_eq!(e, 1.0);
        let (s, e) = two_sum(0.1, 0.2);
        assert_eq!(s, 0.30000000000000004);
        assert_eq!(e, -2.7755575615628914e-17);
    }

    #[test]
    fn add_then_remove_returns_exactly() {
        let mut m = rebuilt(&[1.0, 2.0, 3.0]);
        let before = m;
        for x in [1e6, 1e-8, 3.3, 7.7e3] {
            m.add(x);
        }
        for x in [7.7e3, 1e-8, 1e6, 3.3] {
            m.remove(x);
        }
        assert_eq!(m.s1 + m.c1, before.s1 + before.c1);
        assert_eq!(m.s2 + m.c2, before.s2 + before.c2);
    }

    #[test]
    fn tiny_spread_at_a_high_level() {
        let xs: Vec<f64> = (0..100).map(|i| 1e6 + f64::from(i % 7) * 1e-4).collect();
        let m = rebuilt(&xs);
        let s = m.stats(xs.len(), 1.0 / xs.len() as f64, 1e6, 1e6 + 6e-4);
        let mean = xs.iter().sum::<f64>() / 100.0;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 100.0;
        assert!(
            (s.variance - var).abs() <= 1e-9 * var,
            "{} vs {var}",
            s.variance
        );
        assert!(!m.needs_rebuild(xs.len(), false));
    }

    #[test]
    fn level_shift_triggers_a_rebuild() {
        let mut m = rebuilt(&[1.0, 1.5, 2.0]);
        for x in [1.0, 1.5, 2.0] {
            m.remove(x);
        }
        for x in [1e6, 1e6 + 1e-4, 1e6 + 2e-4] {
            m.add(x);
        }
        assert!(m.needs_rebuild(3, false));
    }
}
