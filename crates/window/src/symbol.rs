//! The per-symbol state: all configured windows, the jump reference price and the newest
//! event time.

use std::iter::FusedIterator;
use std::sync::Arc;

use crate::candle::{Candle, CandleSeries, CandleSpec};
use crate::count::CountWindow;
use crate::jump::Jump;
use crate::moments::Stats;
use crate::spec::{Config, WindowKind, WindowSpec};
use crate::tick::{Rejection, Tick};
use crate::time::TimeWindow;

#[derive(Debug, Clone)]
pub(crate) enum Window {
    Count(CountWindow),
    /// Boxed: a time window is larger, and count windows should not pay for its size.
    Time(Box<TimeWindow>),
}

impl Window {
    pub(crate) fn new(spec: &WindowSpec) -> Self {
        match spec.kind() {
            WindowKind::Count { size } => Self::Count(CountWindow::new(size)),
            WindowKind::Time { span_ms } => Self::Time(Box::new(TimeWindow::new(span_ms))),
        }
    }

    #[inline(always)]
    fn push(&mut self, ts: i64, price: f64, qty: Option<f64>, newest_ts: i64) {
        match self {
            Self::Count(w) => w.push(ts, price, qty),
            Self::Time(w) => w.push(ts, price, qty, newest_ts),
        }
    }

    #[inline(always)]
    fn vwap(&self) -> Option<f64> {
        match self {
            Self::Count(w) => w.vwap(),
            Self::Time(w) => w.vwap(),
        }
    }

    #[inline(always)]
    fn len(&self) -> usize {
        match self {
            Self::Count(w) => w.len(),
            Self::Time(w) => w.len(),
        }
    }

    #[inline(always)]
    fn stats(&self) -> Option<Stats> {
        match self {
            Self::Count(w) => w.stats(),
            Self::Time(w) => w.stats(),
        }
    }

    /// What the window's ticks span in event time, given the symbol's newest event time.
    #[inline(always)]
    fn bounds(&self, newest_ts: Option<i64>) -> Option<Bounds> {
        match self {
            Self::Count(w) => w
                .first_last_ts()
                .map(|(first_ts, last_ts)| Bounds::Count { first_ts, last_ts }),
            Self::Time(w) => newest_ts.map(|newest| {
                let end = newest.saturating_add(1);
                Bounds::Time {
                    start: end.saturating_sub(w.span_ms()),
                    end,
                }
            }),
        }
    }

    fn rebuilds(&self) -> u64 {
        match self {
            Self::Count(w) => w.moments.rebuilds,
            Self::Time(w) => w.moments.rebuilds,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Count(w) => w.heap_bytes(),
            Self::Time(w) => size_of::<TimeWindow>() + w.heap_bytes(),
        }
    }
}

/// The newest event time and the last price, once a tick was accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Last {
    /// Largest accepted event time.
    pub(crate) newest_ts: i64,
    /// Price of the last accepted tick in arrival order (the jump reference).
    pub(crate) price: f64,
}

/// All window state of one symbol. Feed it the symbol's ticks with [`SymbolWindows::update`];
/// persist it with [`SymbolWindows::snapshot`] and [`SymbolWindows::restore`].
///
/// # Semantics
///
/// * A tick is **rejected** (and changes nothing) if its price is not finite, not positive,
///   or outside [`crate::MIN_PRICE`]`..=`[`crate::MAX_PRICE`], or if its event time is older
///   than the symbol's newest accepted event time by more than the allowed lateness.
/// * An accepted tick enters every **count window** (arrival order, late or not), becomes
///   the jump reference for the next tick, and enters every **time window** whose range
///   `(newest_ts - span, newest_ts]` contains its event time, at its event-time place. A late
///   tick at or before a window's start is left out of that window only.
/// * Statistics of a window are reported once it holds its `min_count` ticks.
/// * A time window only moves when its symbol receives a tick: event time is per symbol.
///
/// # Candles
///
/// With [`Config::candles`], the state also builds one [`CandleSeries`] per interval (their
/// rules are on [`CandleSeries`]). A tick is taken whole or not at all: one that any candle
/// interval refuses as late ([`Rejection::CandleClosed`], code `late`) changes nothing, not
/// the windows either — so a dead-lettered tick is one no output counted. The candles a tick
/// closes are on its [`Update::candles`]; [`SymbolWindows::close_idle`] closes a quiet
/// symbol's.
#[derive(Debug, Clone)]
pub struct SymbolWindows {
    config: Arc<Config>,
    pub(crate) windows: Box<[Window]>,
    /// Boxed, and absent without candle intervals: states without candles stay as small.
    candles: Option<Box<Candles>>,
    pub(crate) last: Option<Last>,
}

#[derive(Debug, Clone)]
struct Candles {
    series: Box<[CandleSeries]>,
    /// The candles the last update (or idle close) closed: scratch, not state.
    closed: Vec<Candle>,
}

impl SymbolWindows {
    /// Empty state for one symbol under `config`.
    pub fn new(config: Arc<Config>) -> Self {
        let windows = config.windows().iter().map(Window::new).collect();
        let candles = Self::new_candles(&config);
        Self::from_parts(config, windows, candles, None)
    }

    pub(crate) fn new_candles(config: &Config) -> Box<[CandleSeries]> {
        config
            .candles()
            .iter()
            .cloned()
            .map(CandleSeries::new)
            .collect()
    }

    pub(crate) fn from_parts(
        config: Arc<Config>,
        windows: Box<[Window]>,
        candles: Box<[CandleSeries]>,
        last: Option<Last>,
    ) -> Self {
        let mut state = Self {
            config,
            windows,
            candles: None,
            last,
        };
        state.set_candle_series(candles);
        state
    }

    pub(crate) fn set_candle_series(&mut self, series: Box<[CandleSeries]>) {
        self.candles = (!series.is_empty()).then(|| {
            Box::new(Candles {
                series,
                closed: Vec::new(),
            })
        });
    }

    /// [`Self::update_at`] with the tick's event time as its arrival time: for replays and
    /// tests, where idle closes are driven by event time too.
    #[inline]
    pub fn update(&mut self, tick: Tick) -> Result<Update<'_>, Rejection> {
        self.update_at(tick, tick.ts)
    }

    /// Folds in one tick that arrived at wall clock `arrived_ms` (epoch ms; what idle closes
    /// measure): O(1) amortised per window and candle interval for in-order ticks, no
    /// allocation once the windows have reached their working size. Returns the jump (if
    /// any), every window's statistics and the candles the tick closed, or why the tick was
    /// rejected (it then changed nothing).
    #[inline]
    pub fn update_at(&mut self, tick: Tick, arrived_ms: i64) -> Result<Update<'_>, Rejection> {
        if let Some(rejection) = Rejection::check_price(tick.price) {
            return Err(rejection);
        }
        if let Some(rejection) = Rejection::check_qty(tick.qty) {
            return Err(rejection);
        }
        let (newest_ts, jump) = match self.last {
            None => (tick.ts, None),
            Some(last) => {
                let lateness = self.config.allowed_lateness_ms();
                if tick.ts < last.newest_ts.saturating_sub(lateness) {
                    return Err(Rejection::LateTick {
                        ts: tick.ts,
                        newest_ts: last.newest_ts,
                        allowed_lateness_ms: lateness,
                    });
                }
                (
                    last.newest_ts.max(tick.ts),
                    Jump::detect(last.price, tick.price, self.config.jump()),
                )
            }
        };
        if let Some(candles) = &self.candles {
            for series in candles.series.iter() {
                series.admit(tick.ts)?;
            }
        }
        self.last = Some(Last {
            newest_ts,
            price: tick.price,
        });
        for w in self.windows.iter_mut() {
            w.push(tick.ts, tick.price, tick.qty, newest_ts);
        }
        if let Some(candles) = &mut self.candles {
            candles.closed.clear();
            for series in candles.series.iter_mut() {
                series.apply(
                    tick.ts,
                    tick.price,
                    tick.qty,
                    arrived_ms,
                    &mut candles.closed,
                );
            }
        }
        Ok(Update { state: self, jump })
    }

    /// Closes the open candles of every interval whose symbol has had no tick arrive for its
    /// `close_idle_after` by wall clock `now_ms`, counting from `idle_since_ms` at the
    /// earliest (when the caller resumed: `i64::MIN` for no such bound), and returns them
    /// (oldest first per interval, intervals in configuration order). Empty when nothing was
    /// due.
    pub fn close_idle(&mut self, now_ms: i64, idle_since_ms: i64) -> ClosedCandles<'_> {
        if let Some(candles) = &mut self.candles {
            candles.closed.clear();
            for series in candles.series.iter_mut() {
                series.close_idle_since(now_ms, idle_since_ms, &mut candles.closed);
            }
        }
        self.closed_candles()
    }

    fn closed_candles(&self) -> ClosedCandles<'_> {
        ClosedCandles {
            specs: self.config.candles(),
            candles: self.candles.as_ref().map_or(&[][..], |c| &c.closed).iter(),
        }
    }

    /// The earliest wall clock (ms) at which [`Self::close_idle`] with the same
    /// `idle_since_ms` has something to close, if a candle is open.
    pub fn idle_deadline_ms(&self, idle_since_ms: i64) -> Option<i64> {
        self.candle_series()
            .iter()
            .filter_map(|series| series.idle_deadline_since(idle_since_ms))
            .min()
    }

    /// The candle series, in configuration order.
    pub fn candle_series(&self) -> &[CandleSeries] {
        self.candles.as_ref().map_or(&[], |c| &c.series)
    }

    /// The current readings of every window, in configuration order (as after the last
    /// accepted tick).
    pub fn readings(&self) -> Readings<'_> {
        Readings {
            specs: self.config.windows().iter(),
            windows: self.windows.iter(),
            newest_ts: self.newest_ts(),
        }
    }

    /// The configuration this state runs under.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Largest accepted event time, if any tick was accepted.
    pub fn newest_ts(&self) -> Option<i64> {
        self.last.map(|l| l.newest_ts)
    }

    /// Price of the last accepted tick (arrival order), if any.
    pub fn last_price(&self) -> Option<f64> {
        self.last.map(|l| l.price)
    }

    /// Bytes this state occupies: the struct itself plus every heap buffer it owns, by
    /// capacity. Allocator bookkeeping and the shared `Config` are not included.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + size_of_val(&*self.windows)
            + self.windows.iter().map(Window::heap_bytes).sum::<usize>()
            + self.candles.as_ref().map_or(0, |c| {
                size_of::<Candles>()
                    + size_of_val(&*c.series)
                    + c.series.iter().map(CandleSeries::heap_bytes).sum::<usize>()
                    + c.closed.capacity() * size_of::<Candle>()
            })
    }

    /// How many O(n) re-centring passes the windows have made since creation or restore
    /// (diagnostic for the amortised-cost claim; not part of the snapshot).
    pub fn rebuilds(&self) -> u64 {
        self.windows.iter().map(Window::rebuilds).sum()
    }
}

/// The outcome of an accepted tick. Statistics are computed when asked for (O(1) each).
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    state: &'a SymbolWindows,
    jump: Option<Jump>,
}

impl<'a> Update<'a> {
    /// The jump between the previous accepted tick and this one, if beyond the threshold.
    pub fn jump(&self) -> Option<Jump> {
        self.jump
    }

    /// Every window's reading, in configuration order.
    pub fn readings(&self) -> Readings<'a> {
        self.state.readings()
    }

    /// The reading of window `index` (configuration order).
    pub fn reading(&self, index: usize) -> Option<WindowReading<'a>> {
        let spec = self.state.config.windows().get(index)?;
        let window = self.state.windows.get(index)?;
        Some(WindowReading::new(spec, window, self.state.newest_ts()))
    }

    /// The candles this tick closed: oldest first per interval, intervals in configuration
    /// order. Usually none.
    pub fn candles(&self) -> ClosedCandles<'a> {
        self.state.closed_candles()
    }
}

/// Closed candles with the interval each belongs to.
#[derive(Debug, Clone)]
pub struct ClosedCandles<'a> {
    specs: &'a [CandleSpec],
    candles: std::slice::Iter<'a, Candle>,
}

impl<'a> Iterator for ClosedCandles<'a> {
    type Item = (&'a CandleSpec, &'a Candle);

    fn next(&mut self) -> Option<Self::Item> {
        let candle = self.candles.next()?;
        // Intervals are distinct (the configuration refuses duplicates): the length says which.
        let spec = self
            .specs
            .iter()
            .find(|s| s.interval_ms() == candle.end - candle.start)
            .expect("a closed candle comes from one of the configured intervals");
        Some((spec, candle))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.candles.size_hint()
    }
}

impl ExactSizeIterator for ClosedCandles<'_> {}

/// One window's state after a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowReading<'a> {
    /// The window's configuration (its [`WindowSpec::label`] names it downstream).
    pub spec: &'a WindowSpec,
    /// Ticks currently in the window.
    pub count: usize,
    /// Statistics, once the window holds at least `spec.min_count()` ticks.
    pub stats: Option<Stats>,
    /// The event times the window covers, when known ([`Bounds`]).
    pub bounds: Option<Bounds>,
    /// Σ price·qty / Σ qty over the window's ticks that carry a quantity; `None` when none
    /// does (or their volume is 0).
    pub vwap: Option<f64>,
}

/// The event times a window's statistics cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// A time window: the span `[start, end)` of event time it holds ticks of, `end` one past
    /// the symbol's newest event time and `end - start` the window's span.
    Time {
        /// Epoch ms, inclusive.
        start: i64,
        /// Epoch ms, exclusive.
        end: i64,
    },
    /// A count window: the event times of its oldest and newest tick in arrival order (with
    /// late ticks, not necessarily its earliest and latest). Unknown (`None` bounds) while the
    /// window still holds ticks restored from a state written before count windows kept event
    /// times.
    Count {
        /// Event time of the oldest tick held.
        first_ts: i64,
        /// Event time of the newest tick held.
        last_ts: i64,
    },
}

impl<'a> WindowReading<'a> {
    #[inline(always)]
    fn new(spec: &'a WindowSpec, window: &Window, newest_ts: Option<i64>) -> Self {
        let count = window.len();
        let stats = if count >= spec.min_count() as usize {
            window.stats()
        } else {
            None
        };
        Self {
            spec,
            count,
            stats,
            bounds: window.bounds(newest_ts),
            vwap: window.vwap(),
        }
    }

    /// The window's stable label (`"count:20"`, `"time:5m"`).
    pub fn label(&self) -> &'a str {
        self.spec.label()
    }
}

/// Iterator over the readings of a symbol's windows.
#[derive(Debug, Clone)]
pub struct Readings<'a> {
    specs: std::slice::Iter<'a, WindowSpec>,
    windows: std::slice::Iter<'a, Window>,
    newest_ts: Option<i64>,
}

impl<'a> Iterator for Readings<'a> {
    type Item = WindowReading<'a>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        Some(WindowReading::new(
            self.specs.next()?,
            self.windows.next()?,
            self.newest_ts,
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.windows.size_hint()
    }
}

impl ExactSizeIterator for Readings<'_> {}
impl FusedIterator for Readings<'_> {}
