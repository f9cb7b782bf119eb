//! Traded volume over a window: Σ qty and Σ price·qty of the ticks that carry a quantity, for
//! the window's VWAP (Σ price·qty / Σ qty).
//!
//! Both sums are compensated ([`Sum`]: each addition's exact rounding error is kept). A window
//! also *removes* what leaves it, and a long run of additions and removals of large quantities
//! would leave the compensation's own rounding behind when the window's volume is small: so,
//! as the moments do, the sums are recomputed from the window's contents once removals
//! outnumber its ticks (O(n) once per n removals: O(1) amortised).

use crate::moments::two_sum;

/// A compensated sum: the running sum and the exact rounding errors of its additions
/// ([`two_sum`], as the windows' moments keep theirs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sum {
    pub(crate) sum: f64,
    pub(crate) compensation: f64,
}

impl Sum {
    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        let (sum, error) = two_sum(self.sum, x);
        self.sum = sum;
        self.compensation += error;
    }

    pub(crate) fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// A window's volume: how many of its ticks carry a quantity, Σ qty and Σ price·qty over
/// them, and the removals since the sums were last recomputed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Volume {
    pub(crate) with_qty: u64,
    pub(crate) qty: Sum,
    pub(crate) notional: Sum,
    pub(crate) removals: u64,
}

impl Volume {
    #[inline]
    pub(crate) fn add(&mut self, price: f64, qty: f64) {
        self.with_qty += 1;
        self.qty.add(qty);
        self.notional.add(price * qty);
    }

    /// Takes out a tick [`Self::add`] put in (the same price and quantity).
    #[inline]
    pub(crate) fn remove(&mut self, price: f64, qty: f64) {
        self.with_qty = self.with_qty.saturating_sub(1);
        if self.with_qty == 0 {
            // Nothing left: exactly zero, whatever the rounding on the way.
            *self = Self::default();
            return;
        }
        self.qty.add(-qty);
        self.notional.add(-(price * qty));
        self.removals += 1;
    }

    /// Σ price·qty / Σ qty; `None` without quantities or with no volume.
    #[inline]
    pub(crate) fn vwap(&self) -> Option<f64> {
        let volume = self.qty.value();
        (self.with_qty > 0 && volume > 0.0).then(|| self.notional.value() / volume)
    }

    /// Whether the sums should be recomputed from a window of `len` ticks.
    #[inline]
    pub(crate) fn needs_rebuild(&self, len: usize) -> bool {
        self.removals >= (len as u64).max(64)
    }

    /// The volume of `ticks` (`(price, qty)` of those carrying a quantity), summed afresh.
    pub(crate) fn rebuilt(ticks: impl Iterator<Item = (f64, f64)>) -> Self {
        let mut volume = Self::default();
        for (price, qty) in ticks {
            volume.add(price, qty);
        }
        volume
    }
}

/// A tick's quantity as the windows store it: NaN for none (quantities are finite).
#[inline(always)]
pub(crate) fn stored_qty(qty: Option<f64>) -> f64 {
    qty.unwrap_or(f64::NAN)
}

/// A stored quantity back: `None` for NaN.
#[inline(always)]
pub(crate) fn qty_of(stored: f64) -> Option<f64> {
    (!stored.is_nan()).then_some(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vwap_follows_additions_and_removals_and_is_none_without_volume() {
        let mut v = Volume::default();
        assert_eq!(v.vwap(), None);
        v.add(100.0, 1.0);
        v.add(110.0, 3.0);
        assert_eq!(v.vwap(), Some(107.5));
        v.remove(100.0, 1.0);
        assert_eq!(v.vwap(), Some(110.0));
        v.remove(110.0, 3.0);
        assert_eq!(v, Volume::default(), "empty again: exactly zero");
        v.add(5.0, 0.0);
        assert_eq!(v.vwap(), None, "a tick with zero quantity: no volume");
    }

    #[test]
    fn large_quantities_leaving_do_not_spoil_a_small_volume_after_a_rebuild() {
        let mut v = Volume::default();
        let ticks: Vec<(f64, f64)> = (0..1_000)
            .map(|i| {
                (
                    30_000.0 + f64::from(i % 7),
                    if i < 500 { 1e9 } else { 1e-6 },
                )
            })
            .collect();
        for &(p, q) in &ticks {
            v.add(p, q);
        }
        for &(p, q) in &ticks[..500] {
            v.remove(p, q);
        }
        assert!(v.needs_rebuild(500));
        let rebuilt = Volume::rebuilt(ticks[500..].iter().copied());
        let exact: f64 = ticks[500..].iter().map(|(p, q)| p * q).sum::<f64>() / (500.0 * 1e-6);
        let got = rebuilt.vwap().expect("volume");
        assert!((got - exact).abs() <= 1e-9 * exact, "{got} vs {exact}");
    }
}
