//! Time windows: the accepted ticks with event time in `(newest_ts - span, newest_ts]`.
//!
//! Entries are kept sorted by event time (ties in arrival order) in a `VecDeque`. In-order
//! ticks append and evict at the ends: amortised O(1). A late tick (older than the newest,
//! within the allowed lateness) is inserted at its place, O(k) where k is the number of
//! entries newer than it, and the min/max deques are patched in O(k) as well; late ticks are
//! expected to be rare and only slightly late, so k is small.
//!
//! Deques refer to entries by absolute position: entry `i` of `buf` has position `base + i`;
//! eviction increments `base`, a late insertion shifts the positions after it by one.

use std::collections::VecDeque;

use crate::moments::{Moments, Stats};
use crate::volume::{Volume, qty_of, stored_qty};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Entry {
    pub(crate) ts: i64,
    pub(crate) price: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct TimeWindow {
    span_ms: i64,
    buf: VecDeque<Entry>,
    /// Each entry's quantity (NaN: none), beside `buf`, once `keeps_qty`: from the first tick
    /// that carries one, so windows fed prices alone pay nothing for it.
    qtys: VecDeque<f64>,
    keeps_qty: bool,
    /// Σ qty and Σ price·qty of the entries that carry a quantity.
    pub(crate) volume: Volume,
    base: u64,
    /// Positions whose price is below every later price (front: the minimum).
    mins: VecDeque<u64>,
    /// Positions whose price is above every later price (front: the maximum).
    maxs: VecDeque<u64>,
    pub(crate) moments: Moments,
    /// Since the last commit (the change log, see `changes.rs`): how many entries at the back
    /// are new, how many committed ones were evicted from the front, and whether a late tick
    /// went in among the committed entries (then only a whole snapshot says what changed).
    pub(crate) appended: usize,
    pub(crate) evicted: u64,
    pub(crate) reordered: bool,
}

/// Which extreme a deque tracks: `keeps(a, b)` says whether an earlier `a` stays in the deque
/// when a later `b` arrives.
#[derive(Clone, Copy)]
enum Extreme {
    Min,
    Max,
}

impl Extreme {
    #[inline(always)]
    fn keeps(self, earlier: f64, later: f64) -> bool {
        match self {
            Self::Min => earlier < later,
            Self::Max => earlier > later,
        }
    }
}

impl TimeWindow {
    pub(crate) fn new(span_ms: i64) -> Self {
        Self {
            span_ms,
            buf: VecDeque::new(),
            qtys: VecDeque::new(),
            keeps_qty: false,
            volume: Volume::default(),
            base: 0,
            mins: VecDeque::new(),
            maxs: VecDeque::new(),
            moments: Moments::default(),
            appended: 0,
            evicted: 0,
            reordered: false,
        }
    }

    /// A window holding `entries` (sorted by event time, as snapshotted) with their
    /// quantities (`qtys`: one per entry, NaN for none; `None` when the window keeps none),
    /// and the given moments and volume.
    pub(crate) fn restore(
        span_ms: i64,
        entries: Vec<Entry>,
        qtys: Option<Vec<f64>>,
        moments: Moments,
        volume: Volume,
    ) -> Self {
        let mut w = Self::new(span_ms);
        w.mins = suffix_extremes(&entries, Extreme::Min);
        w.maxs = suffix_extremes(&entries, Extreme::Max);
        w.buf = VecDeque::from(entries);
        w.keeps_qty = qtys.is_some();
        w.qtys = VecDeque::from(qtys.unwrap_or_default());
        w.moments = moments;
        w.volume = volume;
        w
    }

    /// Each entry's quantity, oldest first (empty when the window keeps none).
    pub(crate) fn qtys(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        self.qtys.iter().map(|q| qty_of(*q))
    }

    /// Whether the window keeps quantities (a tick carried one).
    pub(crate) fn keeps_quantities(&self) -> bool {
        self.keeps_qty
    }

    /// Σ price·qty / Σ qty over the entries that carry a quantity.
    #[inline]
    pub(crate) fn vwap(&self) -> Option<f64> {
        self.volume.vwap()
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Entries, oldest first.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.buf.iter().copied()
    }

    /// The window's span in milliseconds.
    pub(crate) fn span_ms(&self) -> i64 {
        self.span_ms
    }

    /// Folds in an accepted tick. `newest_ts` is the symbol's newest event time including
    /// this tick; the window is `(newest_ts - span, newest_ts]`, and a late tick at or before
    /// its start is not part of it.
    #[inline]
    pub(crate) fn push(&mut self, ts: i64, x: f64, qty: Option<f64>, newest_ts: i64) {
        // In i128: `newest_ts - span` may lie below i64::MIN, and the bound is strict.
        let start = i128::from(newest_ts) - i128::from(self.span_ms);
        // A local copy stays in registers (the rebuild takes and returns values).
        let mut moments = self.moments;
        while let Some(&front) = self.buf.front() {
            if i128::from(front.ts) > start {
                break;
            }
            // The oldest entry is a committed one unless every entry is new.
            if self.buf.len() > self.appended {
                self.evicted += 1;
            } else {
                self.appended -= 1;
            }
            self.buf.pop_front();
            if let Some(q) = self.qtys.pop_front().and_then(qty_of) {
                self.volume.remove(front.price, q);
            }
            moments.remove(front.price);
            if self.mins.front() == Some(&self.base) {
                self.mins.pop_front();
            }
            if self.maxs.front() == Some(&self.base) {
                self.maxs.pop_front();
            }
            self.base += 1;
        }
        if i128::from(ts) > start {
            if self.buf.is_empty() {
                moments.restart_at(x);
            }
            if !self.keeps_qty && qty.is_some() {
                // The first quantity: the entries already held had none.
                self.keeps_qty = true;
                self.qtys.resize(self.buf.len(), f64::NAN);
            }
            if self.buf.back().is_none_or(|b| b.ts <= ts) {
                let pos = self.base + self.buf.len() as u64;
                self.buf.push_back(Entry { ts, price: x });
                if self.keeps_qty {
                    self.qtys.push_back(stored_qty(qty));
                }
                push_extreme(&mut self.mins, &self.buf, self.base, pos, x, Extreme::Min);
                push_extreme(&mut self.maxs, &self.buf, self.base, pos, x, Extreme::Max);
            } else {
                self.insert_late(ts, x, qty);
            }
            self.appended += 1;
            moments.add(x);
            if let Some(q) = qty {
                self.volume.add(x, q);
            }
        }
        if self.volume.needs_rebuild(self.len()) {
            let ticks = self.buf.iter().zip(&self.qtys);
            self.volume = Volume::rebuilt(ticks.filter_map(|(e, q)| Some((e.price, qty_of(*q)?))));
        }
        // The buffer is never empty here in practice: the newest tick is always in the window.
        if !self.buf.is_empty() {
            let (min, max) = self.extremes();
            if moments.needs_rebuild(self.len(), min == max) {
                let (n, flat) = (self.len(), (min == max).then_some(min));
                let hint = moments.mean_hint(n, min, max);
                let prices = self.buf.iter().map(|e| e.price);
                moments = Moments::rebuilt(moments.rebuilds, hint, prices, n, flat);
            }
        }
        self.moments = moments;
    }

    #[cold]
    fn insert_late(&mut self, ts: i64, x: f64, qty: Option<f64>) {
        let mut i = self.buf.len();
        while i > 0 && self.buf[i - 1].ts > ts {
            i -= 1;
        }
        // Among the committed entries: the change log cannot say it (see `changes.rs`).
        if i < self.buf.len() - self.appended {
            self.reordered = true;
        }
        self.buf.insert(i, Entry { ts, price: x });
        if self.keeps_qty {
            self.qtys.insert(i, stored_qty(qty));
        }
        let pos = self.base + i as u64;
        for q in [&mut self.mins, &mut self.maxs] {
            for p in q.iter_mut().rev() {
                if *p < pos {
                    break;
                }
                *p += 1;
            }
        }
        insert_extreme(&mut self.mins, &self.buf, self.base, pos, x, Extreme::Min);
        insert_extreme(&mut self.maxs, &self.buf, self.base, pos, x, Extreme::Max);
    }

    #[inline(always)]
    fn extremes(&self) -> (f64, f64) {
        let min = self
            .mins
            .front()
            .map_or(f64::NAN, |&p| price(&self.buf, self.base, p));
        let max = self
            .maxs
            .front()
            .map_or(f64::NAN, |&p| price(&self.buf, self.base, p));
        (min, max)
    }

    /// Statistics, or `None` while empty.
    #[inline]
    pub(crate) fn stats(&self) -> Option<Stats> {
        if self.buf.is_empty() {
            return None;
        }
        let (min, max) = self.extremes();
        let n = self.len();
        Some(self.moments.stats(n, 1.0 / n as f64, min, max))
    }

    /// Heap bytes owned (by capacity: what the allocator handed out).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.capacity() * size_of::<Entry>()
            + self.qtys.capacity() * size_of::<f64>()
            + (self.mins.capacity() + self.maxs.capacity()) * size_of::<u64>()
    }
}

#[inline(always)]
fn price(buf: &VecDeque<Entry>, base: u64, pos: u64) -> f64 {
    buf.get(pos.wrapping_sub(base) as usize)
        .map_or(f64::NAN, |e| e.price)
}

/// The monotonic deque of `entries` built from scratch: the entries that beat every later
/// entry, found by one backward scan (a new record is rare, so the branch predicts well,
/// unlike pushing the entries one by one).
fn suffix_extremes(entries: &[Entry], which: Extreme) -> VecDeque<u64> {
    let mut best = match which {
        Extreme::Min => f64::INFINITY,
        Extreme::Max => f64::NEG_INFINITY,
    };
    let mut picked = Vec::new();
    for (pos, e) in entries.iter().enumerate().rev() {
        if which.keeps(e.price, best) {
            picked.push(pos as u64);
            best = e.price;
        }
    }
    picked.reverse();
    VecDeque::from(picked)
}

/// Appends the entry at `pos` (the newest) with price `x` to a monotonic deque.
#[inline(always)]
fn push_extreme(
    q: &mut VecDeque<u64>,
    buf: &VecDeque<Entry>,
    base: u64,
    pos: u64,
    x: f64,
    which: Extreme,
) {
    while let Some(&b) = q.back() {
        if which.keeps(price(buf, base, b), x) {
            break;
        }
        q.pop_back();
    }
    q.push_back(pos);
}

/// Patches a monotonic deque after a late entry with price `x` was inserted at `pos` (the
/// positions after it already shifted). The deque holds exactly the entries that beat every
/// later entry, so: entries after `pos` are unaffected; the new entry joins iff it beats the
/// best entry after it (the first deque entry past `pos`); and if it joins, earlier deque
/// entries that do not beat it leave (they form a contiguous run just before it, since the
/// deque is monotonic). If it does not join, every earlier deque entry beat the best later
/// entry and so beats it too: nothing changes.
fn insert_extreme(
    q: &mut VecDeque<u64>,
    buf: &VecDeque<Entry>,
    base: u64,
    pos: u64,
    x: f64,
    which: Extreme,
) {
    let mut j = q.len();
    while j > 0 && q[j - 1] > pos {
        j -= 1;
    }
    if let Some(&next) = q.get(j)
        && !which.keeps(x, price(buf, base, next))
    {
        return;
    }
    let mut k = j;
    while k > 0 && !which.keeps(price(buf, base, q[k - 1]), x) {
        k -= 1;
    }
    q.drain(k..j);
    q.insert(k, pos);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(w: &TimeWindow, expect: &[(i64, f64)]) {
        let got: Vec<(i64, f64)> = w.entries().map(|e| (e.ts, e.price)).collect();
        assert_eq!(got, expect);
        let min = expect.iter().map(|e| e.1).fold(f64::INFINITY, f64::min);
        let max = expect.iter().map(|e| e.1).fold(f64::NEG_INFINITY, f64::max);
        let s = w.stats().expect("non-empty");
        assert_eq!((s.min, s.max, s.count), (min, max, expect.len()));
        // The deques equal those built from scratch.
        let r = TimeWindow::restore(
            w.span_ms,
            w.buf.iter().copied().collect(),
            None,
            w.moments,
            w.volume,
        );
        let rel = |q: &VecDeque<u64>| q.iter().map(|p| p - w.base).collect::<Vec<_>>();
        assert_eq!(rel(&w.mins), r.mins.iter().copied().collect::<Vec<_>>());
        assert_eq!(rel(&w.maxs), r.maxs.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn slides_by_event_time() {
        let mut w = TimeWindow::new(1_000);
        w.push(0, 5.0, None, 0);
        w.push(500, 3.0, None, 500);
        w.push(1_000, 4.0, None, 1_000);
        check(&w, &[(500, 3.0), (1_000, 4.0)]);
        w.push(1_000, 4.0, None, 1_000);
        check(&w, &[(500, 3.0), (1_000, 4.0), (1_000, 4.0)]);
        w.push(5_000, 9.0, None, 5_000);
        check(&w, &[(5_000, 9.0)]);
    }

    #[test]
    fn late_ticks_land_in_place() {
        let mut w = TimeWindow::new(10_000);
        for (ts, p) in [(0, 5.0), (10, 7.0), (20, 6.0), (30, 8.0), (40, 6.5)] {
            w.push(ts, p, None, ts);
        }
        w.push(25, 4.0, None, 40);
        check(
            &w,
            &[
                (0, 5.0),
                (10, 7.0),
                (20, 6.0),
                (25, 4.0),
                (30, 8.0),
                (40, 6.5),
            ],
        );
        w.push(20, 9.0, None, 40);
        check(
            &w,
            &[
                (0, 5.0),
                (10, 7.0),
                (20, 6.0),
                (20, 9.0),
                (25, 4.0),
                (30, 8.0),
                (40, 6.5),
            ],
        );
        w.push(-5, 1.0, None, 40);
        check(
            &w,
            &[
                (-5, 1.0),
                (0, 5.0),
                (10, 7.0),
                (20, 6.0),
                (20, 9.0),
                (25, 4.0),
                (30, 8.0),
                (40, 6.5),
            ],
        );
        w.push(10_005, 6.0, None, 10_005);
        check(
            &w,
            &[
                (10, 7.0),
                (20, 6.0),
                (20, 9.0),
                (25, 4.0),
                (30, 8.0),
                (40, 6.5),
                (10_005, 6.0),
            ],
        );
    }

    #[test]
    fn late_tick_before_the_window_is_left_out() {
        let mut w = TimeWindow::new(100);
        w.push(1_000, 2.0, None, 1_000);
        w.push(900, 3.0, None, 1_000);
        check(&w, &[(1_000, 2.0)]);
        w.push(901, 3.0, None, 1_000);
        check(&w, &[(901, 3.0), (1_000, 2.0)]);
    }
}
