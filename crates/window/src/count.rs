//! Count windows: the last N accepted ticks of a symbol, in arrival order.
//!
//! Prices live in a ring of N slots (one buffer, no per-tick boxing), filled in laps: slot 0,
//! 1, ..., N-1, then slot 0 again. The buffer grows with the first lap, as ticks arrive, so a
//! large N costs memory only once that many ticks came (a topology can configure a window of
//! a million ticks for a symbol that ticks ten times); from the second lap on, its size is N. Min and max use the van Herk / Gil-Werman
//! scheme, which has no data-dependent branches (a monotonic deque mispredicts its pop loop
//! on about every other tick; at N = 20 that was a third of the cost of a tick):
//!
//! * when a lap completes, one backward pass stores in every slot the min and max of that
//!   slot and all later slots of the lap (its *suffix* extremes): O(N) once per N ticks;
//! * during the next lap, `lap_min`/`lap_max` track the extremes of the slots rewritten so far;
//! * the window is the old lap's slots from `next` on plus the new lap's slots before `next`,
//!   so its min is `min(slots[next].suf_min, lap_min)`, and likewise the max.
//!
//! Before the first lap completes, the suffix extremes are ±∞ and `lap_*` cover the window.

use crate::moments::{Moments, Stats};
use crate::volume::{Volume, qty_of, stored_qty};

#[derive(Debug, Clone, Copy)]
struct Slot {
    price: f64,
    /// The tick's event time; [`UNKNOWN_TS`] for a price restored from a state written before
    /// count windows kept event times.
    ts: i64,
    /// Min of this slot and every later slot, as of the end of the previous lap.
    suf_min: f64,
    /// Max of this slot and every later slot, as of the end of the previous lap.
    suf_max: f64,
}

/// The event time of a slot restored from a version-1 snapshot or change record.
pub(crate) const UNKNOWN_TS: i64 = i64::MIN;

const EMPTY: Slot = Slot {
    price: 0.0,
    ts: UNKNOWN_TS,
    suf_min: f64::INFINITY,
    suf_max: f64::NEG_INFINITY,
};

/// `min` without NaN handling (prices are never NaN): compiles to one `minsd`.
#[inline(always)]
fn lesser(a: f64, b: f64) -> f64 {
    if a < b { a } else { b }
}

#[inline(always)]
fn greater(a: f64, b: f64) -> f64 {
    if a > b { a } else { b }
}

/// Slots allocated up front: small windows never grow (one allocation, as before); larger
/// ones start here and grow by doubling, capped at their size.
const INITIAL_SLOTS: u32 = 64;

#[derive(Debug, Clone)]
pub(crate) struct CountWindow {
    /// One slot per tick held: grows during the first lap, `size` slots from then on.
    slots: Vec<Slot>,
    /// The window's size N.
    size: u32,
    /// Slot the next tick goes to; once full, also the oldest tick's slot.
    next: u32,
    /// Each slot's quantity (NaN: none), beside `slots`, once `keeps_qty`: from the first tick
    /// that carries one, so windows fed prices alone pay nothing for it.
    qtys: Vec<f64>,
    keeps_qty: bool,
    /// Σ qty and Σ price·qty of the ticks held that carry a quantity.
    pub(crate) volume: Volume,
    /// Extremes of the slots written in the current lap.
    lap_min: f64,
    lap_max: f64,
    /// `1.0 / len`, for the statistics.
    inv_len: f64,
    pub(crate) moments: Moments,
    /// Prices pushed since the last commit, up to `size` (the change log's share of the
    /// window: those newest prices, see `changes.rs`).
    pub(crate) pushed: u32,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: Vec::with_capacity(size.min(INITIAL_SLOTS) as usize),
            size,
            next: 0,
            qtys: Vec::new(),
            keeps_qty: false,
            volume: Volume::default(),
            lap_min: f64::INFINITY,
            lap_max: f64::NEG_INFINITY,
            inv_len: f64::INFINITY,
            moments: Moments::default(),
            pushed: 0,
        }
    }

    /// Restoring a snapshot: appends a tick (oldest first, at most `size` of them) without
    /// touching the moments, which are then set from the snapshot.
    pub(crate) fn restore_tick(&mut self, ts: i64, x: f64, qty: Option<f64>) {
        self.insert(ts, x, stored_qty(qty));
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Prices, oldest first.
    pub(crate) fn prices(&self) -> impl Iterator<Item = f64> + Clone + '_ {
        // Full: the oldest ticks are in slots `next..`, the newest in `..next`.
        let split = if self.is_full() {
            self.next as usize
        } else {
            0
        };
        let (newer, older) = self.slots.split_at(split);
        older.iter().chain(newer).map(|s| s.price)
    }

    /// `(event time, price, quantity)` of every tick, oldest first (event time
    /// [`UNKNOWN_TS`] if not known).
    pub(crate) fn ticks(&self) -> impl Iterator<Item = (i64, f64, Option<f64>)> + Clone + '_ {
        let split = if self.is_full() {
            self.next as usize
        } else {
            0
        };
        let (newer, older) = self.slots.split_at(split);
        let qty = move |i: usize| qty_of(self.qtys.get(i).copied().unwrap_or(f64::NAN));
        let order = (split..self.slots.len()).chain(0..split);
        older
            .iter()
            .chain(newer)
            .zip(order)
            .map(move |(s, i)| (s.ts, s.price, qty(i)))
    }

    /// Whether the window keeps quantities (a tick carried one).
    pub(crate) fn keeps_quantities(&self) -> bool {
        self.keeps_qty
    }

    /// Restoring a window that kept quantities: keep them from its first tick on, whatever
    /// its ticks carry (so the restored window writes what the original did).
    pub(crate) fn keep_quantities(&mut self) {
        if !self.keeps_qty {
            self.keeps_qty = true;
            self.qtys.reserve_exact(self.slots.capacity().max(1));
            self.qtys.resize(self.slots.len(), f64::NAN);
        }
    }

    /// Σ price·qty / Σ qty over the ticks held that carry a quantity.
    #[inline]
    pub(crate) fn vwap(&self) -> Option<f64> {
        self.volume.vwap()
    }

    /// Event times of the oldest and the newest tick (arrival order), once both are known.
    #[inline]
    pub(crate) fn first_last_ts(&self) -> Option<(i64, i64)> {
        let len = self.slots.len();
        if len == 0 {
            return None;
        }
        let (oldest, newest) = if self.is_full() {
            let next = self.next as usize;
            (next, if next == 0 { len - 1 } else { next - 1 })
        } else {
            (0, len - 1)
        };
        let (first, last) = (self.slots[oldest].ts, self.slots[newest].ts);
        (first != UNKNOWN_TS && last != UNKNOWN_TS).then_some((first, last))
    }

    /// The window's size N.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    #[inline(always)]
    fn is_full(&self) -> bool {
        self.slots.len() == self.size as usize
    }

    /// Writes `x` into the ring, evicting the oldest tick if full; returns the evicted price.
    /// Does not touch the moments.
    #[inline(always)]
    fn insert(&mut self, ts: i64, x: f64, qty: f64) -> Option<(f64, f64)> {
        let cap = self.size;
        let i = self.next;
        if !qty.is_nan() {
            // The first quantity: the ticks already held had none.
            self.keep_quantities();
        }
        let evicted = if self.is_full() {
            let slot = &mut self.slots[i as usize];
            let old = slot.price;
            slot.price = x;
            slot.ts = ts;
            let old_qty = match self.qtys.get_mut(i as usize) {
                Some(q) => std::mem::replace(q, qty),
                None => f64::NAN,
            };
            Some((old, old_qty))
        } else {
            self.append(ts, x);
            if self.keeps_qty {
                self.qtys.push(qty);
            }
            None
        };
        self.lap_min = lesser(self.lap_min, x);
        self.lap_max = greater(self.lap_max, x);
        self.next = i + 1;
        if self.next == cap {
            self.close_lap();
        }
        evicted
    }

    /// First lap: `x` goes into a new slot at the end (`next == slots.len()`). The
    /// buffer doubles when full, never beyond the window's size.
    #[inline]
    fn append(&mut self, ts: i64, x: f64) {
        if self.slots.len() == self.slots.capacity() {
            let have = self.slots.len() as u32;
            let more = have.max(INITIAL_SLOTS).min(self.size - have);
            self.slots.reserve_exact(more as usize);
        }
        self.slots.push(Slot {
            price: x,
            ts,
            ..EMPTY
        });
        self.inv_len = 1.0 / self.slots.len() as f64;
    }

    /// The lap is complete (the ring is full): store suffix extremes, start a new lap.
    #[cold]
    fn close_lap(&mut self) {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for s in self.slots.iter_mut().rev() {
            lo = lesser(lo, s.price);
            hi = greater(hi, s.price);
            s.suf_min = lo;
            s.suf_max = hi;
        }
        self.next = 0;
        self.lap_min = f64::INFINITY;
        self.lap_max = f64::NEG_INFINITY;
    }

    #[inline(always)]
    fn extremes(&self) -> (f64, f64) {
        // During the first lap `next` is one past the last slot (no suffix extremes yet:
        // ±∞); afterwards it is always below the size (`insert` wraps it at once).
        let s = self.slots.get(self.next as usize).unwrap_or(&EMPTY);
        (
            lesser(s.suf_min, self.lap_min),
            greater(s.suf_max, self.lap_max),
        )
    }

    /// Folds in an accepted tick.
    #[inline]
    pub(crate) fn push(&mut self, ts: i64, x: f64, qty: Option<f64>) {
        let mut moments = self.moments;
        if self.slots.is_empty() {
            moments.restart_at(x);
        }
        if let Some((old, old_qty)) = self.insert(ts, x, stored_qty(qty)) {
            moments.remove(old);
            if let Some(q) = qty_of(old_qty) {
                self.volume.remove(old, q);
            }
        }
        if let Some(q) = qty {
            self.volume.add(x, q);
            if self.volume.needs_rebuild(self.len()) {
                self.volume = Volume::rebuilt(self.ticks().filter_map(|(_, p, q)| Some((p, q?))));
            }
        }
        moments.add(x);
        self.pushed = (self.pushed + 1).min(self.size);
        let (min, max) = self.extremes();
        if moments.needs_rebuild(self.len(), min == max) {
            let (n, flat) = (self.len(), (min == max).then_some(min));
            let hint = moments.mean_hint(n, min, max);
            moments = Moments::rebuilt(moments.rebuilds, hint, self.prices(), n, flat);
        }
        self.moments = moments;
    }

    /// Statistics, or `None` while empty.
    #[inline]
    pub(crate) fn stats(&self) -> Option<Stats> {
        if self.slots.is_empty() {
            return None;
        }
        let (min, max) = self.extremes();
        Some(self.moments.stats(self.len(), self.inv_len, min, max))
    }

    /// Heap bytes owned (the buffer's capacity).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>() + self.qtys.capacity() * size_of::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(xs: &[f64]) -> (f64, f64) {
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }

    #[test]
    fn extremes_follow_the_window() {
        let prices = [
            5.0, 3.0, 3.0, 8.0, 1.0, 9.0, 9.0, 2.0, 7.0, 7.0, 4.0, 6.0, 6.0, 6.0, 1.0, 0.5,
        ];
        for size in 1..7u32 {
            let mut w = CountWindow::new(size);
            for (i, &p) in prices.iter().enumerate() {
                w.push(i as i64 * 10, p, None);
                let lo = (i + 1).saturating_sub(size as usize);
                let expect = naive(&prices[lo..=i]);
                let s = w.stats().expect("non-empty");
                assert_eq!((s.min, s.max), expect, "size {size} after {i}");
                assert_eq!(s.count, i + 1 - lo);
                assert_eq!(w.first_last_ts(), Some((lo as i64 * 10, i as i64 * 10)));
                let window: Vec<f64> = w.prices().collect();
                assert_eq!(window, prices[lo..=i]);
                // A window restored from its contents reports the same extremes.
                let mut r = CountWindow::new(size);
                w.ticks().for_each(|(ts, p, q)| r.restore_tick(ts, p, q));
                r.moments = w.moments;
                assert_eq!(r.stats(), w.stats());
                assert_eq!(r.first_last_ts(), w.first_last_ts());
            }
        }
    }

    #[test]
    fn empty_window_has_no_stats() {
        assert_eq!(CountWindow::new(3).stats(), None);
        assert_eq!(CountWindow::new(3).prices().count(), 0);
        assert_eq!(CountWindow::new(3).first_last_ts(), None);
    }

    #[test]
    fn memory_is_one_buffer() {
        let mut w = CountWindow::new(20);
        assert_eq!(w.heap_bytes(), 20 * 32);
        (0..100).for_each(|i| w.push(i64::from(i), f64::from(i), None));
        assert_eq!(w.heap_bytes(), 20 * 32);
    }

    #[test]
    fn a_large_window_grows_with_its_ticks_up_to_its_size() {
        let size = 1_000_000;
        let mut w = CountWindow::new(size);
        assert_eq!(w.heap_bytes(), 64 * 32);
        (0..1_000).for_each(|i| w.push(i64::from(i), f64::from(i), None));
        assert!(w.heap_bytes() <= 2 * 1_000 * 32, "{}", w.heap_bytes());
        (0..2 * size).for_each(|i| w.push(i64::from(i), f64::from(i % 1_000), None));
        assert_eq!(w.heap_bytes(), size as usize * 32);
        let s = w.stats().expect("full");
        assert_eq!((s.count, s.min, s.max), (size as usize, 0.0, 999.0));
    }

    #[test]
    fn extremes_stay_exact_across_growth_and_laps() {
        let size = 300;
        let mut w = CountWindow::new(size);
        let prices: Vec<f64> = (0..1_000u32)
            .map(|i| f64::from((i * 7919) % 1009))
            .collect();
        for (i, &p) in prices.iter().enumerate() {
            w.push(i as i64, p, None);
            let lo = (i + 1).saturating_sub(size as usize);
            let s = w.stats().expect("non-empty");
            assert_eq!((s.min, s.max), naive(&prices[lo..=i]), "after {i}");
            assert!(w.prices().eq(prices[lo..=i].iter().copied()));
        }
    }
}
