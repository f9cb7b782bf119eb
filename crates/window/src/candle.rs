//! Candles: per symbol, tumbling event-time windows `[start, start + interval)` aligned to the
//! epoch, each reported once as OHLCV (+ VWAP) when it can no longer change.

use std::collections::VecDeque;

use crate::snapshot::{Reader, put_header, put_varint};
use crate::spec::span_label;
use crate::volume::Sum;
use crate::{ConfigError, Rejection, SnapshotError};

const MAGIC: [u8; 2] = *b"TC";
const VERSION: u8 = 1;

/// One candle interval: its length, grace period and idle-close delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandleSpec {
    interval_ms: i64,
    grace_ms: i64,
    close_idle_after_ms: i64,
    label: String,
}

impl CandleSpec {
    /// The shortest interval, 1 s.
    pub const MIN_INTERVAL_MS: i64 = 1_000;
    /// The longest interval, 1 day.
    pub const MAX_INTERVAL_MS: i64 = 86_400_000;

    /// An interval of whole seconds in `1s..=1d`, a grace period `>= 0`; idle close after
    /// `interval + grace`.
    pub fn new(interval_ms: i64, grace_ms: i64) -> Result<Self, ConfigError> {
        if !(Self::MIN_INTERVAL_MS..=Self::MAX_INTERVAL_MS).contains(&interval_ms)
            || interval_ms % 1_000 != 0
        {
            return Err(ConfigError::CandleInterval { interval_ms });
        }
        if !(0..=Self::MAX_INTERVAL_MS).contains(&grace_ms) {
            return Err(ConfigError::CandleGrace { grace_ms });
        }
        Ok(Self {
            interval_ms,
            grace_ms,
            close_idle_after_ms: interval_ms + grace_ms,
            // Exchanges say "1d" where a window span says "24h".
            label: if interval_ms == Self::MAX_INTERVAL_MS {
                "1d".to_owned()
            } else {
                span_label(interval_ms)
            },
        })
    }

    /// Closes a quiet symbol's candles after `ms` of wall clock without a tick (at least 1).
    pub fn with_close_idle_after_ms(mut self, ms: i64) -> Result<Self, ConfigError> {
        if ms < 1 {
            return Err(ConfigError::CandleIdleClose { ms });
        }
        self.close_idle_after_ms = ms;
        Ok(self)
    }

    /// The candle length.
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// How far behind the symbol's newest tick a tick may be and still count.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// Wall clock without a tick after which a symbol's open candles close.
    pub fn close_idle_after_ms(&self) -> i64 {
        self.close_idle_after_ms
    }

    /// `"1m"`, `"15s"`, `"4h"`: what the `interval` field of a candle says.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The start of the candle holding event time `ts`.
    #[inline]
    pub fn start_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.interval_ms) * self.interval_ms
    }

    pub(crate) fn fingerprint(&self) -> u64 {
        let mut h = crate::spec::Fnv::new();
        h.write(b"tickstream-window/candle/1");
        for v in [self.interval_ms, self.grace_ms, self.close_idle_after_ms] {
            h.write(&v.to_le_bytes());
        }
        h.0
    }
}

/// A closed candle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle {
    /// Epoch ms, inclusive.
    pub start: i64,
    /// Epoch ms, exclusive: `start + interval`.
    pub end: i64,
    /// The price at `first_ts`.
    pub open: f64,
    /// The highest price.
    pub high: f64,
    /// The lowest price.
    pub low: f64,
    /// The price at `last_ts`.
    pub close: f64,
    /// Ticks in the candle.
    pub trades: u64,
    /// Σ qty over the ticks that carry one; `None` if none does.
    pub volume: Option<f64>,
    /// Σ price·qty / Σ qty over those ticks; `None` without quantities or with Σ qty = 0.
    pub vwap: Option<f64>,
    /// The earliest event time in the candle.
    pub first_ts: i64,
    /// The latest event time in the candle.
    pub last_ts: i64,
}

/// A candle still open.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Building {
    start: i64,
    open: f64,
    first_ts: i64,
    high: f64,
    low: f64,
    close: f64,
    last_ts: i64,
    trades: u64,
    with_qty: u64,
    volume: Sum,
    notional: Sum,
}

impl Building {
    fn new(start: i64, ts: i64, price: f64) -> Self {
        Self {
            start,
            open: price,
            first_ts: ts,
            high: price,
            low: price,
            close: price,
            last_ts: ts,
            trades: 0,
            with_qty: 0,
            volume: Sum::default(),
            notional: Sum::default(),
        }
    }

    #[inline]
    fn add(&mut self, ts: i64, price: f64, qty: Option<f64>) {
        if ts < self.first_ts {
            (self.open, self.first_ts) = (price, ts);
        }
        if ts >= self.last_ts {
            (self.close, self.last_ts) = (price, ts);
        }
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.trades += 1;
        if let Some(q) = qty {
            self.with_qty += 1;
            self.volume.add(q);
            self.notional.add(price * q);
        }
    }

    fn finish(&self, interval_ms: i64) -> Candle {
        let volume = (self.with_qty > 0).then(|| self.volume.value());
        Candle {
            start: self.start,
            end: self.start + interval_ms,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            trades: self.trades,
            volume,
            vwap: volume
                .filter(|v| *v > 0.0)
                .map(|v| self.notional.value() / v),
            first_ts: self.first_ts,
            last_ts: self.last_ts,
        }
    }
}

/// One symbol's candles of one interval.
///
/// **When a candle closes.** A symbol's *watermark* is the newest event time it has accepted.
/// A candle closes once the watermark reaches `end + grace`: a tick at most `grace` behind the
/// watermark still lands in its own candle, even one that is not the newest. A tick further
/// behind, or in a candle that has closed, is refused ([`Rejection::CandleClosed`], code
/// `late`) and changes nothing.
///
/// **Idle close.** A quiet symbol's watermark does not move, so its last candle would wait for
/// the next tick forever. [`CandleSeries::close_idle`] closes every open candle once no tick
/// has *arrived* (wall clock, as the caller tells it) for `close_idle_after` — by default
/// `interval + grace`. Wall clock since the last arrival, not event time against the wall
/// clock: a replay of last year's prices must not close each candle as it opens. A tick that
/// arrives after an idle close for an already-closed candle is refused as late; one for a later
/// candle opens it as usual.
///
/// **Fields.** `open`/`close` are the prices of the earliest/latest event time in the candle
/// (ties: the first/last to arrive); `trades` counts ticks; `volume` and `vwap` are over the
/// ticks that carry a quantity, `None` when none does (or, for `vwap`, when their volume is 0).
/// Sums are compensated (each addition's exact rounding error is kept), so they stay exact to
/// ~1e-15 relative whatever the count.
///
/// Each [`CandleSeries`] holds the open candles of one interval (at most
/// `grace / interval + 2`), so a tick costs O(1).
#[derive(Debug, Clone, PartialEq)]
pub struct CandleSeries {
    spec: CandleSpec,
    /// Open candles, by start; each has `end + grace > watermark`.
    open: VecDeque<Building>,
    /// The newest event time accepted.
    watermark: Option<i64>,
    /// Candles starting before this are closed (emitted, or closed while idle).
    closed_before: i64,
    /// Wall clock (ms) of the last accepted tick's arrival.
    last_arrival_ms: Option<i64>,
}

impl CandleSeries {
    /// No candle yet.
    pub fn new(spec: CandleSpec) -> Self {
        Self {
            spec,
            open: VecDeque::new(),
            watermark: None,
            closed_before: i64::MIN,
            last_arrival_ms: None,
        }
    }

    /// The interval this series builds.
    pub fn spec(&self) -> &CandleSpec {
        &self.spec
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.open.capacity() * size_of::<Building>()
    }

    /// Candles still open.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    /// The wall clock (ms) at which [`Self::close_idle`] will close the open candles if no
    /// tick arrives before; `None` when none is open.
    pub fn idle_deadline_ms(&self) -> Option<i64> {
        self.idle_deadline_since(i64::MIN)
    }

    /// Folds in a tick (event time `ts`, arrived at wall clock `arrived_ms`) and appends the
    /// candles it closes to `closed`, oldest first. A refused tick changes nothing.
    pub fn update(
        &mut self,
        ts: i64,
        price: f64,
        qty: Option<f64>,
        arrived_ms: i64,
        closed: &mut Vec<Candle>,
    ) -> Result<(), Rejection> {
        if let Some(rejection) = Rejection::check_price(price) {
            return Err(rejection);
        }
        if let Some(rejection) = Rejection::check_qty(qty) {
            return Err(rejection);
        }
        self.admit(ts)?;
        self.apply(ts, price, qty, arrived_ms, closed);
        Ok(())
    }

    /// Whether a tick at event time `ts` may still be counted: refused
    /// ([`Rejection::CandleClosed`]) if its candle has closed or it is more than the grace
    /// behind the watermark. Price and quantity are not looked at.
    #[inline]
    pub fn admit(&self, ts: i64) -> Result<(), Rejection> {
        let start = self.spec.start_of(ts);
        let behind = self.watermark.map_or(0, |w| i128::from(w) - i128::from(ts));
        if start < self.closed_before || behind > i128::from(self.spec.grace_ms) {
            return Err(Rejection::CandleClosed {
                ts,
                start,
                end: start.saturating_add(self.spec.interval_ms),
                watermark: self.watermark.unwrap_or(ts),
                grace_ms: self.spec.grace_ms,
            });
        }
        Ok(())
    }

    /// Folds in a tick that [`Self::admit`] accepted, with a valid price and quantity, and
    /// appends the candles it closes to `closed`, oldest first.
    #[inline]
    pub(crate) fn apply(
        &mut self,
        ts: i64,
        price: f64,
        qty: Option<f64>,
        arrived_ms: i64,
        closed: &mut Vec<Candle>,
    ) {
        let start = self.spec.start_of(ts);
        // Usually the newest candle; within grace, one of the few before it.
        match self.open.iter().rposition(|b| b.start <= start) {
            Some(i) if self.open[i].start == start => self.open[i].add(ts, price, qty),
            at => {
                let mut building = Building::new(start, ts, price);
                building.add(ts, price, qty);
                self.open.insert(at.map_or(0, |i| i + 1), building);
            }
        }
        self.last_arrival_ms = Some(arrived_ms);
        let watermark = self.watermark.map_or(ts, |w| w.max(ts));
        self.watermark = Some(watermark);
        let grace = self.spec.grace_ms;
        while let Some(oldest) = self.open.front()
            && oldest.start + self.spec.interval_ms + grace <= watermark
        {
            self.close_front(closed);
        }
    }

    /// Closes every open candle if no tick has arrived for `close_idle_after` by wall clock
    /// `now_ms`; appends them to `closed`, oldest first. Returns how many it closed.
    pub fn close_idle(&mut self, now_ms: i64, closed: &mut Vec<Candle>) -> usize {
        self.close_idle_since(now_ms, i64::MIN, closed)
    }

    /// [`Self::close_idle`] with the idle clock started no earlier than `since_ms`: a task
    /// that resumed at `since_ms` waits a whole `close_idle_after` from then.
    pub(crate) fn close_idle_since(
        &mut self,
        now_ms: i64,
        since_ms: i64,
        closed: &mut Vec<Candle>,
    ) -> usize {
        if self
            .idle_deadline_since(since_ms)
            .is_none_or(|due| now_ms < due)
        {
            return 0;
        }
        let n = self.open.len();
        for _ in 0..n {
            self.close_front(closed);
        }
        n
    }

    /// [`Self::idle_deadline_ms`] with the idle clock started no earlier than `since_ms`.
    pub(crate) fn idle_deadline_since(&self, since_ms: i64) -> Option<i64> {
        let arrived = self.last_arrival_ms.filter(|_| !self.open.is_empty())?;
        Some(
            arrived
                .max(since_ms)
                .saturating_add(self.spec.close_idle_after_ms),
        )
    }

    fn close_front(&mut self, closed: &mut Vec<Candle>) {
        if let Some(oldest) = self.open.pop_front() {
            let candle = oldest.finish(self.spec.interval_ms);
            self.closed_before = candle.end;
            closed.push(candle);
        }
    }

    /// Versioned bytes carrying the spec's fingerprint; [`Self::restore`] continues
    /// bit-identically.
    pub fn snapshot_into(&self, out: &mut Vec<u8>) {
        put_header(out, MAGIC, VERSION, self.spec.fingerprint());
        let flags =
            u8::from(self.watermark.is_some()) | u8::from(self.last_arrival_ms.is_some()) << 1;
        out.push(flags);
        for v in [
            self.watermark.unwrap_or(0),
            self.closed_before,
            self.last_arrival_ms.unwrap_or(0),
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_varint(out, self.open.len() as u64);
        for b in &self.open {
            for v in [b.start, b.first_ts, b.last_ts] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume.sum,
                b.volume.compensation,
                b.notional.sum,
                b.notional.compensation,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            put_varint(out, b.trades);
            put_varint(out, b.with_qty);
        }
    }

    /// [`Self::snapshot_into`] a new vector.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.snapshot_into(&mut out);
        out
    }

    /// The series a snapshot of [`Self::snapshot`] holds, under `spec` (the one it was taken
    /// under: another interval, grace or idle close is refused).
    pub fn restore(spec: CandleSpec, bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut r = Reader { bytes, pos: 0 };
        r.header(MAGIC, &[VERSION], spec.fingerprint())?;
        let flags = r.u8()?;
        let watermark = r.i64()?;
        let closed_before = r.i64()?;
        let last_arrival = r.i64()?;
        let at = r.pos;
        let n = usize::try_from(r.varint()?).map_err(|_| r.corrupt("open", at, "too many"))?;
        // Each open candle takes at least 90 bytes: a corrupt count fails here, not in alloc.
        r.need(n.saturating_mul(90))?;
        let mut open = VecDeque::with_capacity(n);
        for _ in 0..n {
            let at = r.pos;
            let (start, first_ts, last_ts) = (r.i64()?, r.i64()?, r.i64()?);
            let (o, h, l, c) = (r.price()?, r.price()?, r.price()?, r.price()?);
            let volume = Sum {
                sum: r.f64()?,
                compensation: r.f64()?,
            };
            let notional = Sum {
                sum: r.f64()?,
                compensation: r.f64()?,
            };
            let (trades, with_qty) = (r.varint()?, r.varint()?);
            if spec.start_of(start) != start || trades == 0 || with_qty > trades {
                return Err(r.corrupt("open candle", at, "inconsistent"));
            }
            open.push_back(Building {
                start,
                open: o,
                first_ts,
                high: h,
                low: l,
                close: c,
                last_ts,
                trades,
                with_qty,
                volume,
                notional,
            });
        }
        r.finish()?;
        Ok(Self {
            spec,
            open,
            watermark: (flags & 1 != 0).then_some(watermark),
            closed_before,
            last_arrival_ms: (flags & 2 != 0).then_some(last_arrival),
        })
    }
}

#[cfg(test)]
#[path = "candle_tests.rs"]
mod tests;
